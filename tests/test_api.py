"""The Python API: ``uavrl.train`` on a user's env (an id or a callable with constructor
arguments and wrappers), ``uavrl.load`` and its policy's ``act`` on one observation or a batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import uavrl
from uavrl.errors import ConfigError

CONFIGS = Path(__file__).parents[1] / "configs"
QUIET = ["log.progress=false", "log.tensorboard=false"]


class DictCueEnv(gym.Env[dict[str, Any], np.int64]):
    """One-step episodes: observes {"cue": Discrete(n_cues), "noise": Box(2)}; reward 1 for the
    action equal to the cue, else 0 (random: 1 / n_cues)."""

    def __init__(self, n_cues: int) -> None:
        self.observation_space = gym.spaces.Dict(
            {"cue": gym.spaces.Discrete(n_cues), "noise": gym.spaces.Box(-1.0, 1.0, (2,), np.float32)}
        )
        self.action_space = gym.spaces.Discrete(n_cues)

    def _obs(self) -> dict[str, Any]:
        return {"cue": self.cue, "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self.cue = int(self.np_random.integers(self.action_space.n))
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[Any, float, bool, bool, dict]:
        return self._obs(), float(action == self.cue), False, False, {}


def make_cue_env(n_cues: int = 2) -> gym.Env[Any, Any]:
    """What a user passes as ``env=``: constructor arguments and a wrapper (one step per episode)."""
    return gym.wrappers.TimeLimit(DictCueEnv(n_cues), max_episode_steps=1)


@pytest.mark.timeout(300)
def test_train_takes_a_callable_that_makes_the_env_and_load_acts_on_one_observation_or_a_batch(
    tmp_path: Path,
) -> None:
    """Two A3C worker processes make the env from the callable's import path with env.params as
    its arguments, learn the cue, and the loaded policy answers every cue, alone or batched."""
    run = uavrl.train(
        CONFIGS / "cartpole_a3c.yaml",
        env=make_cue_env,
        run_dir=tmp_path / "run",
        overrides=["env.params={n_cues: 3}", "runner.total_env_steps=20000", "eval.episodes=60", *QUIET],
    )
    assert run.config.env.id == "tests.test_api:make_cue_env"
    saved = yaml.safe_load((run.directory / "config.yaml").read_text())
    assert saved["env"] == {**saved["env"], "id": "tests.test_api:make_cue_env", "params": {"n_cues": 3}}
    assert run.summary["status"] == "finished" and run.summary["eval"]["mean_return"] >= 0.95

    policy = uavrl.load(run.directory)
    assert policy.observation_space == DictCueEnv(3).observation_space and not policy.recurrent
    noise = np.zeros(2, np.float32)
    for cue in range(3):
        action, state = policy.act({"cue": cue, "noise": noise})
        assert int(action) == cue and np.ndim(action) == 0 and state is None
    batch = {"cue": np.array([2, 0, 1, 2]), "noise": np.zeros((4, 2), np.float32)}
    actions, _ = policy.act(batch)
    assert actions.shape == (4,) and actions.tolist() == [2, 0, 1, 2]
    env = make_cue_env(3)
    obs, _ = env.reset(seed=5)
    action, _ = policy.act(obs, deterministic=False)  # a sample is an action of the env too
    assert env.action_space.contains(action)


@pytest.mark.timeout(120)
def test_train_takes_a_config_object_or_a_dict_and_a_gymnasium_id(tmp_path: Path) -> None:
    """The defaults' uavrl preset parameters are not handed to another env's constructor."""
    from uavrl.config import Config

    small = {
        "name": "api_dict",
        "runner": {"kind": "a2c", "n_workers": 1, "envs_per_worker": 4, "total_env_steps": 640},
        "model": {"hidden_size": 8},
        "eval": {"episodes": 2},
        "log": {"progress": False, "tensorboard": False},
    }
    run = uavrl.train(small, env="CartPole-v1", run_dir=tmp_path / "a")
    assert run.config.env.id == "CartPole-v1" and run.config.env.params == {}
    assert run.summary["env_steps"] >= 640
    again = uavrl.train(Config.model_validate(small), env="CartPole-v1", run_dir=tmp_path / "b")
    assert again.config.hash() == run.config.hash()
    policy = again.policy
    state = None
    obs, _ = gym.make("CartPole-v1").reset(seed=0)
    for _ in range(3):  # a GRU's state goes round; CartPole takes the action
        action, state = policy.act(obs, state)
        assert state is not None and state.shape == (8,) and action in (0, 1)


def test_a_recurrent_policy_carries_its_state_as_the_model_does_and_clears_it_at_episode_starts() -> None:
    """Step by step through ``act`` equals one pass of the model over the sequence, with the
    state of the copies that start an episode cleared, as in training."""
    from uavrl.api import Policy
    from uavrl.config import Config
    from uavrl.nn.models import build_model
    from uavrl.runners.session import model_spec

    config = Config.model_validate({"env": {"id": "CartPole-v1"}, "model": {"hidden_size": 16}})
    torch.manual_seed(0)
    model = build_model(model_spec(config))
    policy = Policy(model, config)
    obs = 0.1 * np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)  # (T, B, D), in bounds
    starts = np.zeros((5, 3), dtype=bool)
    starts[3, 1] = True  # copy 1 starts a new episode at step 3
    state, actions = None, []
    for t in range(5):
        action, state = policy.act(obs[t], state, episode_start=starts[t])
        actions.append(action)
    with torch.no_grad():
        params, _, h_final = model.rollout(
            torch.from_numpy(obs), torch.zeros(3, 16), torch.from_numpy(starts.astype(np.float32))
        )
    np.testing.assert_allclose(state, h_final.numpy(), atol=1e-5)
    np.testing.assert_array_equal(np.stack(actions), params.argmax(-1).numpy())


def test_an_env_callable_that_workers_cannot_import_is_refused_before_anything_runs(tmp_path: Path) -> None:
    def inner() -> gym.Env[Any, Any]:
        return gym.make("CartPole-v1")

    for bad in (lambda: gym.make("CartPole-v1"), inner):
        with pytest.raises(ConfigError, match="importable by name"):
            uavrl.train(CONFIGS / "cartpole_a3c.yaml", env=bad, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_env_id_naming_neither_a_registered_id_nor_a_callable_is_refused_with_both_ways(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="neither registers a Gymnasium id 'NoSuchEnv' nor defines"):
        uavrl.train(CONFIGS / "cartpole_a3c.yaml", env="tests.test_api:NoSuchEnv", run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_an_observation_of_another_space_is_refused_naming_the_runs_space() -> None:
    from uavrl.api import Policy
    from uavrl.config import Config
    from uavrl.nn.models import build_model
    from uavrl.runners.session import model_spec

    config = Config.model_validate({"env": {"id": "CartPole-v1"}, "model": {"hidden_size": 8}})
    policy = Policy(build_model(model_spec(config)), config)
    with pytest.raises(ConfigError, match=r"observation space Box\(.*\(4,\).*env.id 'CartPole-v1'"):
        policy.act(np.zeros(3, np.float32))
