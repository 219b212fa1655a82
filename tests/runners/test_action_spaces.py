"""Learning checks on one-step tasks with known optima for MultiBinary and MultiDiscrete
actions: every bit (entry) has its own best value, which depends on a cue in the observation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

CONFIGS = Path(__file__).parents[2] / "configs"
BITS = np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=np.int8)  # the best bits per cue


class CueTask(gym.Env[np.int64, Any]):
    """One-step episodes whose observation is a cue drawn uniformly from the observation space."""

    observation_space: gym.spaces.Discrete

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._cue = int(self.np_random.integers(self.observation_space.n))
        return self._cue, {}


class BitsEnv(CueTask):
    """Cue c in {0, 1}; reward: the fraction of the 5 bits equal to ``BITS[c]`` (random: 0.5)."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.MultiBinary(5)

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        assert self.action_space.contains(action)
        return self._cue, float(np.mean(action == BITS[self._cue])), True, False, {}


class ServersEnv(CueTask):
    """Cue c in {0, 1, 2}; action (server in 0..2, power level in 1..4): reward is the mean of
    [server == c] and [level == c + 2] (random: (1/3 + 1/4) / 2)."""

    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.MultiDiscrete([3, 4], start=[0, 1])

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict]:
        assert self.action_space.contains(action)
        reward = 0.5 * float(action[0] == self._cue) + 0.5 * float(action[1] == self._cue + 2)
        return self._cue, reward, True, False, {}


class OffloadChoiceEnv(CueTask):
    """Cue c in {0, 1, 2}; action {"server": 0..2, "bits": 2 bits, "power": [0, 1]}: reward is
    the mean of [server == c], the fraction of bits equal to ``BITS[c % 2][:2]`` and
    ``1 - |power - c / 2|`` (random: about 0.47)."""

    observation_space = gym.spaces.Discrete(3)
    action_space = gym.spaces.Dict(
        {
            "server": gym.spaces.Discrete(3),
            "bits": gym.spaces.MultiBinary(2),
            "power": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
        }
    )

    def step(self, action: dict[str, Any]) -> tuple[Any, float, bool, bool, dict]:
        assert self.action_space.contains(action)
        c = self._cue
        parts = (
            float(action["server"] == c),
            float(np.mean(action["bits"] == BITS[c % 2][:2])),
            1.0 - abs(float(action["power"][0]) - c / 2),
        )
        return c, float(np.mean(parts)), True, False, {}


gym.register("UavrlTest/Bits-v0", entry_point=BitsEnv)
gym.register("UavrlTest/OffloadChoice-v0", entry_point=OffloadChoiceEnv)
gym.register("UavrlTest/Servers-v0", entry_point=ServersEnv)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("env", "kind"),
    [("Bits-v0", "a3c"), ("Bits-v0", "impala"), ("Servers-v0", "a3c")],
)
def test_multi_binary_and_multi_discrete_actions_reach_their_optimum(
    tmp_path: Path, env: str, kind: str
) -> None:
    """A3C and IMPALA (V-trace on the joint log-probability of the entries) learn the best value
    of every entry for each cue: greedy return 1, where a random policy scores 0.5 or 0.29."""
    from uavrl.config import load_config
    from uavrl.experiments.train import train

    config = load_config(
        CONFIGS / ("cartpole_impala.yaml" if kind == "impala" else "cartpole_a3c.yaml"),
        [
            f"env.id=tests.runners.test_action_spaces:UavrlTest/{env}",
            "runner.serial=true",
            "runner.total_env_steps=30000",
            "eval.episodes=100",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    summary = train(config, tmp_path)
    assert summary["eval"]["mean_return"] >= 0.98


@pytest.mark.timeout(300)
def test_a_dict_action_of_discrete_bits_and_a_box_is_learned(tmp_path: Path) -> None:
    """One composite action (a Dict of Discrete, MultiBinary and Box): the discrete parts reach
    their best values and the Gaussian mean its target, each depending on the cue."""
    from uavrl.config import load_config
    from uavrl.experiments.train import train

    config = load_config(
        CONFIGS / "cartpole_a3c.yaml",
        [
            "env.id=tests.runners.test_action_spaces:UavrlTest/OffloadChoice-v0",
            "runner.serial=true",
            "runner.total_env_steps=60000",
            "eval.episodes=100",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    summary = train(config, tmp_path)
    assert summary["eval"]["mean_return"] >= 0.9  # random about 0.47, optimum 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("kind", "share"),
    [("a3c", True), ("a3c", False), ("a2c", True), ("a3c_data", True), ("impala", True)],
    ids=["a3c", "individual", "a2c", "a3c_data", "impala"],
)
def test_every_learner_trains_a_composite_action_in_worker_processes(
    tmp_path: Path, kind: str, share: bool
) -> None:
    """A Dict of Discrete, MultiBinary and Box actions through every runner kind in its own
    processes (not the serial path): the run finishes with finite losses and a greedy return
    between the task's bounds."""
    import pandas as pd

    from uavrl.config import load_config
    from uavrl.experiments.train import train

    config = load_config(
        CONFIGS / "cartpole_a3c.yaml",
        [
            "env.id=tests.runners.test_action_spaces:UavrlTest/OffloadChoice-v0",
            f"runner.kind={kind}",
            f"runner.share={str(share).lower()}",
            *(["algo.gae_lambda=null"] if kind == "impala" else []),  # V-trace targets
            "runner.serial=false",
            "runner.envs_per_worker=4",
            "runner.total_env_steps=3200",
            "eval.episodes=20",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    summary = train(config, tmp_path)
    assert summary["status"] == "finished" and summary["skipped_updates"] == 0
    losses = pd.read_csv(tmp_path / "training_log.csv")["policy_loss"].dropna()
    assert len(losses) > 0 and losses.map(np.isfinite).all()
    assert 0.0 <= summary["eval"]["mean_return"] <= 1.0
