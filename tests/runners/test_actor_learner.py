"""Actors and one learner: a3c_data and impala, serial and with actor processes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from uavrl.algo.batch import concat_batches
from uavrl.algo.optim import SharedAdam
from uavrl.algo.replay import TrajectoryReplay
from uavrl.errors import ConfigError
from uavrl.experiments.train import train
from uavrl.nn.models import ModelSpec, build_model
from uavrl.runners.learner import Learner
from uavrl.runners.session import make_pool
from uavrl.runners.transport import RolloutSlots, WeightBroadcast, empty_rollout
from uavrl.runners.worker import make_collector, make_worker_env


def _rollout(config, worker_id: int = 0):
    spec = ModelSpec(obs_dim=48, hidden_size=16, recurrent=True)
    torch.manual_seed(0)
    model = build_model(spec)
    env = make_worker_env(config, worker_id, make_pool(config, cross_process=False))
    collector = make_collector(config, model, env, 7, worker_id * config.runner.envs_per_worker)
    batch, _ = collector.collect(model, config.algo.rollout_length)
    return model, batch


def test_concat_batches_puts_rollouts_side_by_side(make_config) -> None:
    config = make_config()
    _, first = _rollout(config, 0)
    _, second = _rollout(config, 1)
    second.policy_version = 4
    both = concat_batches([first, second])
    k = config.runner.envs_per_worker
    assert both.obs.shape == (5, 2 * k, 48) and both.h0.shape == (2 * k, 16)
    for name in ("obs", "actions", "behaviour_params", "rewards", "starts", "final_values"):
        torch.testing.assert_close(getattr(both.columns(k, 2 * k), name), getattr(second, name))
    torch.testing.assert_close(both.columns(0, k).next_obs, first.next_obs)
    assert both.policy_version == 0
    with pytest.raises(ValueError, match="different lengths"):
        concat_batches([first, dataclasses.replace(first, rewards=first.rewards[:2])])


def test_rollout_slots_carry_a_rollout_through_shared_memory(make_config) -> None:
    config = make_config()
    model, batch = _rollout(config)
    batch.policy_version = 3
    template = empty_rollout(model, config.algo.rollout_length, config.runner.envs_per_worker)
    slots = RolloutSlots(template, n_actors=2, per_actor=2, ctx=torch.multiprocessing.get_context("spawn"))
    assert all(t.is_shared() for t in slots.buffers[3].values())
    free = slots.free_slots_of(1, 0, held=set())
    assert free.poll(5)
    slot = free.recv()
    assert slot in (2, 3)
    slots.write(slot, batch)
    copy = slots.read(slot)
    assert copy.policy_version == 3
    for name in ("obs", "actions", "behaviour_params", "h0", "last_value", "next_obs"):
        torch.testing.assert_close(getattr(copy, name), getattr(batch, name))
    slots.write(slot, empty_rollout(model, config.algo.rollout_length, config.runner.envs_per_worker))
    assert not torch.equal(copy.obs, slots.buffers[slot]["obs"])  # read gave a copy
    # a restarted actor's pipe holds all its slots but those the learner holds
    renewed = slots.free_slots_of(1, 1, held={slot})
    assert renewed.poll(5) and renewed.recv() == 5 - slot and not renewed.poll(0.1)
    slots.release(slot)
    assert renewed.recv() == slot


def test_weight_broadcast_hands_newer_weights_only(make_config) -> None:
    config = make_config()
    model, _ = _rollout(config)
    broadcast = WeightBroadcast(model, torch.multiprocessing.get_context("spawn"))
    local = build_model(model.spec)
    assert broadcast.fetch(local, -1) == 0
    torch.testing.assert_close(local.state_dict(), model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert broadcast.fetch(local, 0) == 0  # nothing newer published: the copy is kept
    assert not torch.equal(next(local.parameters()), next(model.parameters()))
    broadcast.publish(model, 1)
    assert broadcast.fetch(local, 0) == 1
    torch.testing.assert_close(local.state_dict(), model.state_dict())


def test_learner_with_vtrace_on_its_own_rollout_steps_like_the_on_policy_learner(make_config) -> None:
    """With pi = mu (no lag) V-trace targets are the n-step returns: one impala update equals
    one a3c_data update from the same weights and rollout."""
    on_policy = make_config(runner={"kind": "a3c_data"})
    off_policy = make_config(runner={"kind": "impala"})
    model, batch = _rollout(on_policy)
    after = []
    for config in (on_policy, off_policy):
        copy = build_model(model.spec)
        copy.load_state_dict(model.state_dict())
        learner = Learner(config, copy, SharedAdam(copy.parameters(), lr=1e-2))
        stats = learner.learn(copy, batch, 0)
        assert stats.applied and stats.env_steps == batch.env_steps
        after.append(torch.nn.utils.parameters_to_vector(copy.parameters()).detach())
    assert not torch.equal(after[0], torch.nn.utils.parameters_to_vector(model.parameters()))
    torch.testing.assert_close(after[0], after[1], rtol=1e-5, atol=1e-6)


def _one_update(config, model, batch) -> torch.Tensor:
    copy = build_model(model.spec)
    copy.load_state_dict(model.state_dict())
    learner = Learner(config, copy, SharedAdam(copy.parameters(), lr=1e-2))
    assert learner.learn(copy, batch, 0).applied
    return torch.nn.utils.parameters_to_vector(copy.parameters()).detach()


@pytest.mark.parametrize(
    ("runner", "algo", "twin"),
    [
        # V-trace on A3C's own rollout: its ratios are 1, so it steps like n-step A3C
        ({"kind": "a3c"}, {"targets": "vtrace"}, ({"kind": "a3c"}, {})),
        # GAE on an IMPALA learner: the same loss as data-parallel A3C with GAE
        (
            {"kind": "impala"},
            {"targets": "gae", "gae_lambda": 0.9},
            ({"kind": "a3c_data"}, {"gae_lambda": 0.9}),
        ),
    ],
)
def test_the_loss_is_chosen_by_its_targets_whatever_the_runner(make_config, runner, algo, twin) -> None:
    """algo.targets names the loss apart from the topology: a V-trace A3C and a GAE IMPALA can
    be expressed, and each updates as the runner whose default loss it borrows."""
    config = make_config(runner=runner, algo=algo)
    other = make_config(runner=twin[0], algo=twin[1])
    assert config.targets == algo["targets"] and other.targets == algo["targets"].replace("vtrace", "nstep")
    model, batch = _rollout(config)
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach()
    after, twin_after = _one_update(config, model, batch), _one_update(other, model, batch)
    assert not torch.equal(after, before)
    torch.testing.assert_close(after, twin_after, rtol=1e-5, atol=1e-6)


def test_targets_default_by_runner_and_refuse_a_lambda_they_do_not_use(make_config) -> None:
    assert make_config(runner={"kind": "impala"}).targets == "vtrace"
    assert make_config(algo={"gae_lambda": 0.95}).targets == "gae"
    assert make_config(algo={"gae_lambda": None}).targets == "nstep"
    with pytest.raises(ConfigError, match=r"algo\.targets: gae needs algo\.gae_lambda"):
        make_config(algo={"targets": "gae", "gae_lambda": None})
    with pytest.raises(
        ConfigError, match=r"gae_lambda=0\.9 applies to algo\.targets: gae only, not 'vtrace'"
    ):
        make_config(algo={"targets": "vtrace", "gae_lambda": 0.9})
    with pytest.raises(ConfigError, match=r"or algo\.targets: gae"):
        make_config(runner={"kind": "impala"}, algo={"gae_lambda": 0.9})


def test_a_learner_with_replay_updates_on_the_fresh_and_replayed_rollouts_side_by_side(make_config) -> None:
    """Its update equals a plain update, from the same weights, on the batch its replay mixes
    (same seed, same draws); its stats count the fresh rollout's env steps only."""
    config = make_config(runner={"kind": "impala", "replay_size": 4})
    model, first = _rollout(config, 0)
    _, second = _rollout(config, 1)
    after = []
    for replay in (TrajectoryReplay(4, 1.0, seed=11), None):
        copy = build_model(model.spec)
        copy.load_state_dict(model.state_dict())
        learner = Learner(config, copy, SharedAdam(copy.parameters(), lr=1e-2), replay=replay)
        if replay is not None:
            replay.mix([first])  # stored by an earlier update
            stats = learner.learn_rollouts([second], 0)
            assert stats.applied and stats.env_steps == second.env_steps
        else:
            learner.learn(copy, concat_batches([second, first]), 0)
        after.append(torch.nn.utils.parameters_to_vector(copy.parameters()).detach())
    assert not torch.equal(after[0], torch.nn.utils.parameters_to_vector(model.parameters()))
    torch.testing.assert_close(after[0], after[1])
    fresh_only = build_model(model.spec)
    fresh_only.load_state_dict(model.state_dict())
    Learner(config, fresh_only, SharedAdam(fresh_only.parameters(), lr=1e-2)).learn_rollouts([second], 0)
    assert not torch.allclose(after[0], torch.nn.utils.parameters_to_vector(fresh_only.parameters()))


@pytest.mark.parametrize("serial", [True, False], ids=["serial", "processes"])
def test_impala_with_replay_books_fresh_steps_and_records_what_it_replayed(
    make_config, tmp_path: Path, serial: bool
) -> None:
    total = 3000
    replay = {"replay_size": 8, "replay_ratio": 0.5}
    config = make_config(runner={"kind": "impala", "serial": serial, "total_env_steps": total, **replay})
    summary = train(config, tmp_path / "run")
    assert summary["status"] == "finished" and summary["env_steps"] >= total
    k, t = config.runner.envs_per_worker, config.algo.rollout_length
    assert summary["env_steps"] == summary["updates"] * 2 * k * t  # replayed steps are not booked again
    replay = summary["replay"]
    assert replay["capacity"] == 8 and replay["ratio"] == 0.5
    # one replayed rollout per update (2 fresh x 0.5), from the second update on
    assert replay["replayed_rollouts"] == summary["updates"] - 1
    ages = {int(a): n for a, n in replay["age"]["histogram"].items()}
    assert sum(ages.values()) == replay["replayed_rollouts"] and min(ages) >= 1 and max(ages) <= 4
    assert sum(summary["policy_lag"]["histogram"].values()) == 2 * summary["updates"]  # fresh only


@pytest.mark.parametrize("serial", [True, False], ids=["serial", "processes"])
@pytest.mark.parametrize("kind", ["a3c_data", "impala"])
def test_actor_learner_runs_finish_their_budget_and_log_the_policy_lag(
    make_config, tmp_path: Path, kind: str, serial: bool
) -> None:
    total = 3000
    runner = {"kind": kind, "serial": serial, "total_env_steps": total}
    if kind == "impala":
        runner["learner_batch"] = 1  # one rollout per update: the other actor's lags
    config = make_config(runner=runner)
    summary = train(config, tmp_path / "run")
    assert summary["status"] == "finished" and summary["env_steps"] >= total
    k, t = config.runner.envs_per_worker, config.algo.rollout_length
    per_update = 2 * k * t if kind == "a3c_data" else k * t
    assert summary["env_steps"] == summary["updates"] * per_update
    lag = summary["policy_lag"]["histogram"]
    assert sum(lag.values()) == summary["updates"] * (2 if kind == "a3c_data" else 1)
    if kind == "a3c_data":
        assert set(lag) == {"0"}  # actors wait for the update they fed: always on-policy
    else:
        assert any(int(v) > 0 for v in lag)  # the second actor's rollout is one update behind
    log = pd.read_csv(tmp_path / "run" / "training_log.csv")
    assert set(log["worker_id"]) == {0, 1}
    for _, rows in log.groupby("worker_id"):
        assert list(rows["episode"]) == list(range(1, len(rows) + 1))
    saved = json.loads((tmp_path / "run" / "checkpoints" / "last.json").read_text())
    assert saved["counters"]["env_steps"] == summary["env_steps"]
    loop = summary["learner_loop"]  # where the learner's time went
    assert set(loop) == {"waiting", "updating", "publishing", "round"}
    assert loop["updating"] > 0 and all(s >= 0 for s in loop.values())
    assert sum(loop.values()) <= summary["wall_time_s"]


def test_actor_learner_configs_refuse_what_does_not_apply(make_config) -> None:
    with pytest.raises(ConfigError, match=r"algo\.gae_lambda=0\.95 does not apply to runner\.kind: impala"):
        make_config(runner={"kind": "impala"}, algo={"gae_lambda": 0.95})
    with pytest.raises(ConfigError, match=r"runner\.share=False .* applies to runner\.kind a3c"):
        make_config(runner={"kind": "a3c_data", "share": False})
    with pytest.raises(ConfigError, match=r"runner\.replay_size=8 replays .* runner\.kind is a3c_data"):
        make_config(runner={"kind": "a3c_data", "replay_size": 8})
    with pytest.raises(ConfigError, match=r"runner\.replay_ratio"):
        make_config(runner={"kind": "impala", "replay_size": 8, "replay_ratio": 0})
    with pytest.raises(ConfigError, match=r"runner\.learner_batch=3 must be at most runner\.n_workers=2"):
        make_config(runner={"kind": "impala", "learner_batch": 3})
    with pytest.raises(ConfigError, match=r"env\.team_reward needs the workers stepped together"):
        make_config(
            env={"shared_pool": True, "team_reward": True}, runner={"kind": "impala", "serial": False}
        )
    with pytest.raises(ConfigError, match=r"env\.team_spirit=0\.5 only applies with env\.team_reward"):
        make_config(env={"team_spirit": 0.5})
    serial = make_config(env={"shared_pool": True, "team_reward": True}, runner={"kind": "impala"})
    assert serial.runner.serial and serial.env.team_reward


HYBRID = {"id": "tests.runners.helper_envs:HybridTarget-v0", "params": {}, "worker_cells": None}


@pytest.mark.parametrize(
    "runner",
    [
        {"kind": "a3c", "serial": True},
        {"kind": "a3c", "serial": False},
        {"kind": "a2c"},
        {"kind": "a3c_data", "serial": False},
        {"kind": "impala", "serial": True, "learner_batch": 1},
        {"kind": "impala", "serial": False},
    ],
    ids=["a3c-serial", "a3c-processes", "a2c", "a3c_data", "impala-serial", "impala-processes"],
)
def test_a_hybrid_action_head_learns_in_every_runner(make_config, tmp_path: Path, runner: dict) -> None:
    """Choice and level are both learned; for impala the ratio of the factorised policy is the
    product of its parts (their log-probabilities add up)."""
    config = make_config(
        env=HYBRID,
        model={"hidden_size": 32, "recurrent": False, "layer_norm": False},
        algo={
            "rollout_length": 10,
            "lr": 3e-3,
            "gamma": 0.9,
            "entropy_coef": 0.0,
            "normalize_advantages": True,
        },
        runner={**runner, "envs_per_worker": 8, "total_env_steps": 30_000},
        eval={"episodes": 40},
    )
    summary = train(config, tmp_path / "run")
    assert summary["status"] == "finished"
    # a choice at chance scores at most 5 over 10 steps, the initial greedy policy about 2.5;
    # these runs reach 7.8-8.1 (both parts learned: choice right, level error about 0.2)
    assert summary["eval"]["mean_return"] > 6.5


def test_in_process_actors_hand_out_one_batch_n_rollouts_at_a_time(make_config, tmp_path: Path) -> None:
    """The serial transport: 3 actors acted as one batch with the weights published when it
    started, taken 2 then 1 (each with its own episodes); a new batch, with the newer weights,
    only once every rollout of the last one is taken."""
    from uavrl.runners.actor_learner import InProcessActors
    from uavrl.runners.session import TrainingSession

    config = make_config(
        env={"params": {"preset": "paper", "episode_length": 5}, "worker_cells": ["v5-l200-c1000"]},
        runner={"kind": "impala", "n_workers": 3, "learner_batch": 2},
    )
    session = TrainingSession(config, tmp_path, 1, 1, resume=False)
    model = session.models[0]
    actors = InProcessActors(session, model, session.open_pool(cross_process=False))
    actors.start()
    actors.publish(model, 5)
    k, t = config.runner.envs_per_worker, config.algo.rollout_length
    first, first_episodes = actors.take(2)
    assert [r.policy_version for r in first] == [5, 5] and first[0].obs.shape == (t, k, 48)
    assert not torch.equal(first[0].obs, first[1].obs)  # two actors' own copies
    assert len(first_episodes) == 2 * k and {e.owner for e in first_episodes} == {0, 1}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    actors.publish(model, 6)
    rest, rest_episodes = actors.take(2)  # the batch's last rollout, acted with version 5
    assert [r.policy_version for r in rest] == [5] and {e.owner for e in rest_episodes} == {2}
    again, _ = actors.take(2)
    assert [r.policy_version for r in again] == [6, 6]
    actors.close()
