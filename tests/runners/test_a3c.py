"""A3C and individual learning: sharing, isolation, equal budgets, parallel = shared state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from uavrl.runners.a3c import run_a3c, updates_per_worker
from uavrl.runners.learner import Learner
from uavrl.runners.session import TrainingSession, make_pool
from uavrl.runners.worker import (
    BatchedWorkers,
    Worker,
    make_all_worker_envs,
    make_worker_env,
)


def _workers(config, tmp_path: Path) -> tuple[TrainingSession, list[Worker]]:
    r = config.runner
    session = TrainingSession(config, tmp_path, 1 if r.share else r.n_workers, r.n_workers, resume=False)
    pool = make_pool(config, cross_process=False)
    workers = []
    for i in range(r.n_workers):
        k = 0 if r.share else i
        lock = session.ctx.Lock()
        workers.append(
            Worker.build(config, i, session.models[k], session.optimizers[k], lock, pool, config.seed)
        )
    return session, workers


def _optimizer_steps(run_dir: Path) -> dict[int, int]:
    """Adam step counter of every learner in the last checkpoint (all its parameters agree)."""
    from safetensors.torch import load_file

    tensors = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
    steps: dict[int, set[int]] = {}
    for key, value in tensors.items():
        if key.startswith("optim") and key.endswith(".step"):
            steps.setdefault(int(key[5 : key.index(".")]), set()).add(int(value.item()))
    assert all(len(s) == 1 for s in steps.values()), steps
    return {k: s.pop() for k, s in steps.items()}


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_individual_update_touches_only_its_own_model(make_config, tmp_path: Path) -> None:
    config = make_config(runner={"share": False})
    session, workers = _workers(config, tmp_path)
    assert workers[0].learner is not workers[1].learner
    before = [_flat(m) for m in session.models]
    workers[0].update()
    assert not torch.equal(_flat(session.models[0]), before[0])
    assert torch.equal(_flat(session.models[1]), before[1])
    assert session.optimizers[0].steps == 1 and session.optimizers[1].steps == 0


def test_shared_workers_read_the_same_global_parameters(make_config, tmp_path: Path) -> None:
    config = make_config(runner={"share": True})
    session, workers = _workers(config, tmp_path)
    assert workers[0].learner is workers[1].learner is session.models[0]
    workers[0].update()
    after_first = _flat(session.models[0])
    workers[1].update()  # syncs its local copy from the global model first
    assert session.optimizers[0].steps == 2
    workers[1].local.load_state_dict(session.models[0].state_dict())
    assert torch.equal(_flat(workers[1].local), _flat(session.models[0]))
    assert not torch.equal(after_first, _flat(session.models[0]))


def test_arms_get_equal_env_steps_per_worker(make_config, tmp_path: Path) -> None:
    for share in (True, False):
        config = make_config(runner={"share": share})
        result = run_a3c(config, tmp_path / str(share))
        # 600 steps / (2 workers x 3 envs x 5 steps) = 20 updates per worker, 300 env steps each
        assert updates_per_worker(config) == 20
        assert result.counters["worker_updates"] == [20, 20]
        assert result.counters["env_steps"] == 600
        log = pd.read_csv(tmp_path / str(share) / "training_log.csv")
        # episodes of 30 steps end after updates 6, 12 and 18: 3 copies x 3 episodes per worker
        assert log.groupby("worker_id")["episode"].max().tolist() == [9, 9]
        # an update's losses fill the first of the 3 rows of the episodes it ends, once
        filled = log.dropna(subset=["policy_loss"])
        assert len(filled) == 6 and filled.groupby(["worker_id", "updates"]).size().eq(1).all()
        assert log[["value_loss", "entropy", "lr", "entropy_coef"]].notna().sum().eq(6).all()
        assert np.isfinite(filled[["policy_loss", "value_loss", "entropy", "grad_norm"]]).all().all()


def test_parallel_workers_update_one_shared_optimizer(make_config, tmp_path: Path) -> None:
    config = make_config(runner={"serial": False, "total_env_steps": 1200}, env={"shared_pool": True})
    result = run_a3c(config, tmp_path)
    assert result.counters["worker_updates"] == [40, 40]
    assert result.counters["updates"] == 80
    from uavrl.runners.checkpoint import read_meta

    meta = read_meta(tmp_path / "checkpoints", "last")
    assert meta["n_models"] == 1 and meta["counters"]["updates"] == 80
    # both processes stepped the one shared optimizer: its shared step counter saw all 80
    assert _optimizer_steps(tmp_path) == {0: 80}
    log = pd.read_csv(tmp_path / "training_log.csv")
    assert list(log.columns)[:5] == ["step", "worker_id", "episode", "return", "length"]
    assert log["step"].max() <= result.counters["env_steps"] == 80 * 15


def test_parallel_individual_learners_each_count_their_own_updates(make_config, tmp_path: Path) -> None:
    config = make_config(runner={"serial": False, "share": False, "total_env_steps": 600})
    run_a3c(config, tmp_path)
    from uavrl.runners.checkpoint import load_models, read_meta

    meta = read_meta(tmp_path / "checkpoints", "last")
    assert meta["n_models"] == 2
    models, _ = load_models(tmp_path / "checkpoints", "last")
    assert not torch.equal(_flat(models[0]), _flat(models[1]))
    assert _optimizer_steps(tmp_path) == {0: 20, 1: 20}  # each learner stepped by its own worker only


def test_batched_serial_a3c_with_one_worker_equals_the_worker(make_config, tmp_path: Path) -> None:
    """One forward for all workers' envs is the same computation as the worker when N = 1."""
    env_section = {**make_config().env.model_dump(), "worker_cells": ["v5-l200-c1000"]}
    config = make_config(runner={"n_workers": 1, "share": True}, env=env_section)
    results = []
    for name, batched in (("worker", False), ("batched", True)):
        session = TrainingSession(config, tmp_path / name, 1, 1, resume=False)
        torch.manual_seed(7)
        env = make_all_worker_envs(config, None) if batched else make_worker_env(config, 0, None)
        model, optimizer, lock = session.models[0], session.optimizers[0], session.ctx.Lock()
        if batched:
            group = BatchedWorkers(config, [model], [optimizer], [lock], env, config.seed)
            stats = [group.update(0)[0][0] for _ in range(4)]
        else:
            worker = Worker(config, 0, model, optimizer, lock, env, config.seed)
            stats = [worker.update(0)[0] for _ in range(4)]
        results.append((_flat(model), [s.policy_loss for s in stats]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    assert results[0][1] == results[1][1]


def test_batched_serial_a3c_updates_once_per_worker_with_the_collecting_weights(
    make_config, tmp_path: Path
) -> None:
    """Each round: one update per worker on its own copies, every gradient computed with the
    weights that collected the rollout (so the 2nd worker's gradient is one update stale)."""
    config = make_config(runner={"share": True})
    session = TrainingSession(config, tmp_path, 1, 2, resume=False)
    env = make_all_worker_envs(config, make_pool(config, cross_process=False))
    group = BatchedWorkers(config, session.models, session.optimizers, [session.ctx.Lock()], env, 0)
    before = _flat(session.models[0])
    seen: list[torch.Tensor] = []
    learn = Learner.learn

    def spy(self: Learner, local, batch, env_steps):  # records the weights each update uses
        seen.append(_flat(local))
        assert batch.obs.shape[1] == config.runner.envs_per_worker
        return learn(self, local, batch, env_steps)

    Learner.learn = spy  # type: ignore[method-assign]
    try:
        results = group.update(0)
    finally:
        Learner.learn = learn  # type: ignore[method-assign]
    assert len(results) == 2 and all(stats.applied for stats, _ in results)
    torch.testing.assert_close(seen[0], before)
    torch.testing.assert_close(seen[1], before)  # not the weights after worker 0's update
    assert not torch.equal(_flat(session.models[0]), before)
    assert session.optimizers[0].steps == 2


def test_serial_individual_learners_act_in_one_batch_and_update_only_their_own_model(
    make_config, tmp_path: Path
) -> None:
    """Serial individual learning: worker i's copies are acted for by model i, and each round
    updates every learner once, from its own worker only."""
    config = make_config(runner={"share": False})
    session = TrainingSession(config, tmp_path, 2, 2, resume=False)
    locks = [session.ctx.Lock() for _ in session.models]
    env = make_all_worker_envs(config, None)
    group = BatchedWorkers(config, session.models, session.optimizers, locks, env, 0)
    assert [role.model for role in group.learner_roles] == session.models
    before = [_flat(m) for m in session.models]
    results = group.update(0)
    assert len(results) == 2 and all(stats.applied for stats, _ in results)
    assert all(not torch.equal(_flat(m), b) for m, b in zip(session.models, before, strict=True))
    assert [o.steps for o in session.optimizers] == [1, 1]
    # model 1 alone, on worker 1's copies, computes what the team computed for them
    obs = torch.from_numpy(group.collector.obs)
    group.locals[1].load_state_dict(session.models[1].state_dict())
    group.locals[0].load_state_dict(session.models[0].state_dict())
    team_params, _, _ = group.actor.step(obs, group.actor.initial_state(env.n))
    k = config.runner.envs_per_worker
    alone, _, _ = group.locals[1].step(obs[k:], group.locals[1].initial_state(k))
    torch.testing.assert_close(team_params[k:], alone, rtol=0, atol=0)


@pytest.mark.parametrize("share", [True, False])
def test_team_reward_gives_pool_mates_one_return(make_config, tmp_path: Path, share: bool) -> None:
    """With env.team_reward, copy j of every worker logs the same episode returns: the mean
    over the agents on pool j."""
    config = make_config(
        runner={"share": share, "total_env_steps": 1200}, env={"shared_pool": True, "team_reward": True}
    )
    run_a3c(config, tmp_path)
    log = pd.read_csv(tmp_path / "training_log.csv")
    by_worker = [g.sort_values("episode")["return"].to_numpy() for _, g in log.groupby("worker_id")]
    assert len(by_worker) == 2 and len(by_worker[0]) == len(by_worker[1]) > 0
    np.testing.assert_allclose(by_worker[0], by_worker[1], rtol=1e-5)


def test_team_reward_needs_a_shared_pool_and_workers_stepped_together(make_config) -> None:
    from uavrl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"team_reward needs env\.shared_pool"):
        make_config(env={"team_reward": True})
    with pytest.raises(ConfigError, match=r"runner\.serial: false"):
        make_config(env={"shared_pool": True, "team_reward": True}, runner={"serial": False})
    assert make_config(env={"shared_pool": True, "team_reward": True}, runner={"kind": "a2c"}).env.team_reward


def test_central_critic_trains_checkpoints_and_acts_on_own_observations(make_config, tmp_path: Path) -> None:
    """A run with a centralised critic stores the critic's state columns in its architecture,
    learns finite values, and its checkpoint reloads into a policy that acts on the agent's
    own observation."""
    from uavrl.runners.checkpoint import load_models

    config = make_config(
        runner={"total_env_steps": 1200},
        env={"shared_pool": True, "team_reward": True},
        model={"central_critic": True},
    )
    run_a3c(config, tmp_path)
    value_losses = pd.read_csv(tmp_path / "training_log.csv")["value_loss"].dropna()
    assert np.isfinite(value_losses).all() and len(value_losses) > 0
    models, _ = load_models(tmp_path / "checkpoints", "last")
    spec = models[0].spec
    assert spec.critic_state_dim == 2 * spec.actor_obs_dim + 2 + 1  # 2 workers' obs, channels, pool
    params, _, _ = models[0].step(torch.zeros(3, spec.actor_obs_dim), models[0].initial_state(3))
    assert params.shape[0] == 3 and torch.isfinite(params).all()


def test_central_critic_needs_a_shared_pool_and_workers_stepped_together(make_config) -> None:
    from uavrl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"central_critic needs env\.shared_pool"):
        make_config(model={"central_critic": True})
    with pytest.raises(
        ConfigError,
        match=r"central_critic needs the workers stepped together.*a3c with runner\.serial: false",
    ):
        make_config(env={"shared_pool": True}, model={"central_critic": True}, runner={"serial": False})


@pytest.mark.parametrize("serial", [True, False])
def test_a_privileged_critic_reads_the_hidden_state_in_training_only(
    make_config, tmp_path: Path, serial: bool
) -> None:
    """Workers stepped together or apart (private pools) train a critic over the observation and
    the agent's 42 hidden-state columns: their finite values come from those columns (a change
    in the hidden part moves the value, never the policy), and the reloaded model acts on the
    agent's own observation."""
    from uavrl.runners.checkpoint import load_models
    from uavrl.runners.worker import make_worker_env

    config = make_config(
        runner={"total_env_steps": 1200, "serial": serial}, model={"privileged_critic": True}
    )
    env = make_worker_env(config, 0, None)
    obs = env.reset(0, np.arange(3))
    assert obs.shape == (3, 48 + 42)
    run_a3c(config, tmp_path)
    value_losses = pd.read_csv(tmp_path / "training_log.csv")["value_loss"].dropna()
    assert np.isfinite(value_losses).all() and len(value_losses) > 0
    models, _ = load_models(tmp_path / "checkpoints", "last")
    model = models[0]
    assert (model.spec.critic_state_dim, model.spec.actor_obs_dim) == (42, 48)
    full = torch.tensor(obs)
    moved = full.clone()
    moved[:, 48:] = 1.0 - moved[:, 48:]
    h = model.initial_state(3)
    params, value, _ = model.step(full, h)
    params_moved, value_moved, _ = model.step(moved, h)
    assert torch.isfinite(value).all() and not torch.allclose(value, value_moved)
    torch.testing.assert_close(params, params_moved)
    own, _, _ = model.step(full[:, :48], h)
    torch.testing.assert_close(own, params)


def test_a_privileged_critic_with_a_central_one_sees_every_mates_hidden_state(make_config) -> None:
    """Both critics: the team state is built from every pool mate's observation with its hidden
    state, after the agent's own hidden columns."""
    from uavrl.runners.session import model_spec
    from uavrl.runners.worker import make_all_worker_envs

    config = make_config(env={"shared_pool": True}, model={"central_critic": True, "privileged_critic": True})
    spec = model_spec(config)
    own = 48 + 42
    assert spec.critic_state_dim == 42 + (2 * own + 2 + 1) and spec.actor_obs_dim == 48
    env = make_all_worker_envs(config, make_pool(config, cross_process=False))
    assert env.reset(0, np.arange(6)).shape == (6, spec.obs_dim)


def test_a_hidden_state_head_trains_beside_the_privileged_critic_and_reloads(
    make_config, tmp_path: Path
) -> None:
    """``model.predict_hidden``: the head predicts exactly the agent's hidden columns (with a
    central critic too, not the team state after them); a run trains with it, its checkpoint
    reloads with the head, and it acts on the agent's own observation. Without the privileged
    critic there is nothing to predict: refused, naming both fields."""
    from uavrl.runners.checkpoint import load_models
    from uavrl.runners.session import model_spec

    both = make_config(
        env={"shared_pool": True},
        model={"central_critic": True, "privileged_critic": True, "predict_hidden": True},
    )
    spec = model_spec(both)
    assert spec.hidden_target_dim == 42 and spec.critic_state_dim > 42 and spec.actor_obs_dim == 48
    config = make_config(
        runner={"total_env_steps": 1200, "serial": True},
        model={"privileged_critic": True, "predict_hidden": True},
        algo={"hidden_coef": 1.0},
    )
    run_a3c(config, tmp_path)
    models, _ = load_models(tmp_path / "checkpoints", "last")
    assert models[0].spec.hidden_target_dim == 42 and models[0].hidden_head is not None
    own, _, _ = models[0].step(torch.zeros(2, 48), models[0].initial_state(2))
    assert torch.isfinite(own).all()
    with pytest.raises(ValueError, match=r"model\.predict_hidden.*model\.privileged_critic: true"):
        make_config(model={"predict_hidden": True})


def test_a_belief_network_trains_reloads_and_acts_on_the_agents_own_observation(
    make_config, tmp_path: Path
) -> None:
    """``model.belief``: a run trains with the belief network, its checkpoint reloads it (the
    state both GRUs'), and the policy acts on the agent's own columns. It needs the prediction
    and a GRU: refused otherwise, naming the fields."""
    from uavrl.runners.checkpoint import load_models

    config = make_config(
        runner={"total_env_steps": 1200, "serial": True},
        model={"privileged_critic": True, "predict_hidden": True, "belief": True, "hidden_size": 16},
    )
    run_a3c(config, tmp_path)
    models, _ = load_models(tmp_path / "checkpoints", "last")
    assert models[0].spec.belief and models[0].state_size == 32 and models[0].belief_gru is not None
    params, h = models[0].act(torch.zeros(2, 48), models[0].initial_state(2))
    assert torch.isfinite(params).all() and h.shape == (2, 32)
    for model in (
        {"privileged_critic": True, "belief": True},
        {"privileged_critic": True, "predict_hidden": True, "belief": True, "recurrent": False},
    ):
        with pytest.raises(
            ValueError,
            match=r"model\.belief: true .* set model\.predict_hidden: true and model\.recurrent: true",
        ):
            make_config(model=model)


def test_a_privileged_critic_needs_an_env_with_a_hidden_state(make_config) -> None:
    from uavrl.errors import ConfigError
    from uavrl.runners.session import model_spec

    config = make_config(
        env={"id": "CartPole-v1", "params": {}, "worker_cells": None}, model={"privileged_critic": True}
    )
    with pytest.raises(ConfigError, match=r"GymVecEnv exposes no hidden state.*model\.privileged_critic"):
        model_spec(config)


@pytest.mark.parametrize("serial", [True, False])
def test_a_pool_price_shapes_the_training_reward_only(make_config, tmp_path: Path, serial: bool) -> None:
    """Serial and parallel workers train on priced rewards; the final evaluation scores the
    environment's own returns (the same weights score the same with or without the price)."""
    from uavrl.experiments.train import evaluate_final
    from uavrl.runners.checkpoint import load_models
    from uavrl.runners.worker import make_all_worker_envs, make_worker_env

    env = {"shared_pool": True, "pool_price": 0.04}
    config = make_config(runner={"serial": serial, "total_env_steps": 1200}, env=env)
    assert type(make_worker_env(config, 0, make_pool(config, cross_process=False))).__name__ == "PoolPrice"
    assert type(make_all_worker_envs(config, make_pool(config, cross_process=False))).__name__ == "PoolPrice"
    run_a3c(config, tmp_path)
    models, _ = load_models(tmp_path / "checkpoints", "last")
    unpriced = make_config(runner={"serial": serial, "total_env_steps": 1200}, env={"shared_pool": True})
    assert evaluate_final(config, models) == evaluate_final(unpriced, models)


def test_a_pool_price_needs_a_shared_pool_and_no_team_reward(make_config) -> None:
    from uavrl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pool_price=0\.04 prices a shared cloud pool"):
        make_config(env={"pool_price": 0.04})
    with pytest.raises(ConfigError, match=r"choose one"):
        make_config(env={"shared_pool": True, "team_reward": True, "pool_price": 0.04})


def test_cells_by_copy_puts_every_cell_in_every_worker_and_on_every_pool(make_config) -> None:
    """``env.cells_by: copy``: copy ``j`` of worker ``i`` steps cell ``(i + j) mod n``, so each
    worker (an individual learner) sees every training cell, and pool ``j`` holds one agent of
    each cell, as with one cell per worker."""
    cells = ["v5-l200-c1000", "v20-l100-c1000", "v50-l200-c1000"]
    config = make_config(
        env={"worker_cells": cells, "cells_by": "copy", "shared_pool": True},
        runner={"n_workers": 3, "envs_per_worker": 4, "share": False},
    )
    pool = make_pool(config, cross_process=False)
    velocity = {0: [5, 20, 50, 5], 1: [20, 50, 5, 20], 2: [50, 5, 20, 50]}
    for i in range(3):
        core = make_worker_env(config, i, pool).core
        np.testing.assert_array_equal(core.velocity, velocity[i])
        np.testing.assert_array_equal(core.local_capacity, [100 if v == 20 else 200 for v in velocity[i]])
    private = make_config(
        env={"worker_cells": cells, "cells_by": "copy"}, runner={"n_workers": 3, "envs_per_worker": 4}
    )
    merged = make_all_worker_envs(private, None)  # the serial workers' copies in one core
    np.testing.assert_array_equal(merged.core.velocity, np.concatenate(list(velocity.values())))
    for j in range(4):  # every pool holds one copy of each cell
        assert sorted(velocity[i][j] for i in range(3)) == [5, 20, 50]


def test_cells_by_copy_is_refused_without_cells_or_with_two_cloud_capacities(make_config) -> None:
    from uavrl.errors import ConfigError

    with pytest.raises(ConfigError, match=r"env\.cells_by='copy' needs env\.worker_cells"):
        make_config(env={"worker_cells": None, "cells_by": "copy"})
    with pytest.raises(ConfigError, match=r"one cloud capacity; env.worker_cells has \[500, 1000\]"):
        make_config(env={"worker_cells": ["v5-l200-c500", "v50-l200-c1000"], "cells_by": "copy"})
    with pytest.raises(ConfigError, match=r"env\.cells_by"):
        make_config(env={"cells_by": "cell"})


def test_mec_workers_train_in_their_cells_and_the_run_is_scored_in_each(make_config, tmp_path: Path) -> None:
    """``env.worker_cells`` names `mec` cells too: worker ``i`` steps cell ``i`` (velocity, cloud,
    distance), and the run's own evaluation scores it in each training cell, on its own cloud."""
    from uavrl.errors import ConfigError
    from uavrl.experiments.train import evaluate_final
    from uavrl.runners.checkpoint import load_models
    from uavrl.runners.worker import make_worker_env

    mec = {"id": "uavrl/Offload-v0", "params": {"preset": "mec", "horizon": 20}}
    cells = ["v5-f15-d150", "v90-f60-d250"]
    config = make_config(env={**mec, "worker_cells": cells}, runner={"total_env_steps": 800})
    for i, (v, f, d) in enumerate([(5.0, 15.0, 150.0), (90.0, 60.0, 250.0)]):
        params = config.env.worker_params(i)
        assert (params["velocity"], params["cloud_ghz"], params["distance"]) == (v, f, d)
        core = make_worker_env(config, i, None).core  # type: ignore[attr-defined]
        assert (core.params.velocity, core.params.cloud_ghz, core.params.distance) == (v, f, d)
    run_a3c(config, tmp_path)
    models, _ = load_models(tmp_path / "checkpoints", "last")
    summary = evaluate_final(config, models)
    assert summary["cells"] == cells and np.isfinite(summary["mean_return"])
    with pytest.raises(ConfigError, match=r"env\.worker_cells: mec cell name must look like 'v30-f30-d200'"):
        make_config(env={**mec, "worker_cells": ["v5-l200-c1000"]})
    with pytest.raises(ConfigError, match=r"env\.params\.cloud_ghz=20 would be overridden.*cloud_ghz"):
        make_config(env={**mec, "params": {"preset": "mec", "cloud_ghz": 20}, "worker_cells": cells})
    with pytest.raises(ConfigError, match=r"cells_by=copy is only for the paper preset"):
        make_config(env={**mec, "worker_cells": cells, "cells_by": "copy"})
