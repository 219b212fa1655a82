"""Observations of any Gymnasium space reach the model as one float vector: the batched encoder
against Gymnasium's own `flatten`, its reports, and envs with Dict, Tuple and Discrete
observations stepped and trained."""

from __future__ import annotations

import copy
import itertools
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from uavrl.envs.spaces import observation_encoder
from uavrl.envs.vector import make_vec_env
from uavrl.errors import ConfigError

SPACES = {
    "box": gym.spaces.Box(-1.0, 2.0, (2, 3), np.float32),
    "discrete": gym.spaces.Discrete(4, start=1),
    "multi_discrete": gym.spaces.MultiDiscrete([2, 3, 4]),
    "multi_binary": gym.spaces.MultiBinary(5),
    "dict": gym.spaces.Dict({"task": gym.spaces.Box(0.0, 1.0, (3,)), "server": gym.spaces.Discrete(3)}),
    "nested": gym.spaces.Tuple(
        (
            gym.spaces.Discrete(2),
            gym.spaces.Dict({"queue": gym.spaces.MultiBinary(4), "load": gym.spaces.MultiDiscrete([3, 2])}),
        )
    ),
}


@pytest.mark.parametrize("name", list(SPACES))
def test_a_batch_encodes_as_gymnasium_flattens_each_observation(name: str) -> None:
    """The batched encoder of a (possibly nested) space gives, row by row, what
    `gymnasium.spaces.flatten` gives for each observation: one-hot Discrete and MultiDiscrete,
    bits, Boxes flattened, Dict and Tuple parts concatenated in the space's order."""
    space = SPACES[name]
    space.seed(3)
    samples = [space.sample() for _ in range(6)]
    vector_space = gym.vector.utils.batch_space(space, 6)
    batch = gym.vector.utils.concatenate(space, samples, gym.vector.utils.create_empty_array(space, 6))
    assert vector_space.contains(batch)
    encode = observation_encoder(space, "Test-v0")
    expected = np.stack([gym.spaces.flatten(space, s) for s in samples]).astype(np.float32)
    assert encode.dim == gym.spaces.flatdim(space) == expected.shape[1]
    np.testing.assert_array_equal(encode(batch), expected)
    np.testing.assert_array_equal(encode(samples[0]), expected[:1])  # one unbatched observation
    columns = [(first, last) for _, _, first, last in encode.layout]
    assert columns[0][0] == 0 and columns[-1][1] == encode.dim
    assert all(a[1] == b[0] for a, b in itertools.pairwise(columns))


def test_the_layout_names_every_part_by_its_key() -> None:
    encode = observation_encoder(SPACES["nested"], "Test-v0")
    assert encode.layout == [
        ("observation[0]", "Discrete (one-hot)", 0, 2),
        ("observation[1]['load']", "MultiDiscrete (one-hot per entry)", 2, 7),
        ("observation[1]['queue']", "MultiBinary", 7, 11),
    ]


def test_an_observation_outside_its_space_is_reported_once_with_env_and_key() -> None:
    encode = observation_encoder(SPACES["dict"], "Offload-Mine-v0")
    bad = {"task": np.array([[0.5, 1.5, 0.2]], np.float32), "server": np.array([1])}
    with pytest.warns(UserWarning, match=r"Offload-Mine-v0.*observation\['task'\] left its Box bounds"):
        out = encode(bad)
    assert out[0, 1] == 1.0  # clipped into [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode(bad)  # reported once
    with pytest.warns(UserWarning, match=r"observation\['server'\] left Discrete\(3"):
        encode({"task": np.zeros((1, 3), np.float32), "server": np.array([7])})
    with pytest.raises(FloatingPointError, match=r"observation\['task'\] holds NaN"):
        encode({"task": np.array([[np.nan, 0.0, 0.0]], np.float32), "server": np.array([0])})


def test_a_space_that_cannot_be_encoded_is_refused_with_its_key() -> None:
    space = gym.spaces.Dict({"name": gym.spaces.Text(8), "x": gym.spaces.Box(0, 1, (1,))})
    with pytest.raises(ConfigError, match=r"Test-v0.*observation\['name'\] is a Text; observations may be"):
        observation_encoder(space, "Test-v0")


@pytest.mark.parametrize(
    ("env_id", "params", "dim"),
    [("FrozenLake-v1", {"is_slippery": False}, 16), ("Blackjack-v1", {}, 32 + 11 + 2)],
)
def test_gymnasium_envs_with_discrete_and_tuple_observations_step(
    env_id: str, params: dict, dim: int
) -> None:
    """FrozenLake (Discrete observations) and Blackjack (a Tuple of Discretes) through the vector
    env: one-hot rows, final observations of finished episodes encoded as the others."""
    env = make_vec_env(env_id, 4, params)
    try:
        obs = env.reset(0, np.arange(4))
        assert obs.shape == (4, dim) and obs.dtype == np.float32
        assert np.all(obs.sum(axis=1) == (1 if env_id == "FrozenLake-v1" else 3))
        finals = 0
        for _ in range(60):
            step = env.step(np.random.default_rng(0).integers(0, env.action_space.n, 4))
            if step.final_obs is not None:
                finals += 1
                assert step.final_obs.shape == (4, dim)
        assert finals > 0
    finally:
        env.close()


class CueEnv(gym.Env[dict[str, Any], np.int64]):
    """One-step episodes: the answer is ``cue`` when ``flip`` is 0, else ``1 - cue``; reward 1
    for the answer. Neither key alone does better than 0.5."""

    observation_space = gym.spaces.Dict({"cue": gym.spaces.Discrete(2), "flip": gym.spaces.MultiBinary(1)})
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._obs = {
            "cue": int(self.np_random.integers(2)),
            "flip": self.np_random.integers(0, 2, 1, dtype=np.int8),
        }
        return copy.deepcopy(self._obs), {}

    def step(self, action: np.int64) -> tuple[Any, float, bool, bool, dict]:
        answer = self._obs["cue"] ^ int(self._obs["flip"][0])
        return copy.deepcopy(self._obs), float(action == answer), True, False, {}


gym.register("UavrlTest/Cue-v0", entry_point=CueEnv)


@pytest.mark.timeout(300)
def test_a3c_learns_a_dict_observation_task_that_needs_both_keys(tmp_path: Path) -> None:
    from uavrl.config import load_config
    from uavrl.experiments.train import train

    config = load_config(
        Path(__file__).parents[2] / "configs" / "cartpole_a3c.yaml",
        [
            "env.id=tests.envs.test_spaces:UavrlTest/Cue-v0",
            "runner.serial=true",
            "runner.total_env_steps=30000",
            "eval.episodes=200",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    summary = train(config, tmp_path)
    assert summary["eval"]["mean_return"] >= 0.95  # a single key scores 0.5


def test_the_task_graph_example_knows_its_best_action_exactly() -> None:
    """README's third-party example: the brute-force best over the 64 assignments is never
    beaten by any bits, and the constants and random bits are worse on average."""
    from uavrl.envs.task_graph import ASSIGNMENTS, N_TASKS, best_latency, latency

    rng = np.random.default_rng(0)
    tasks = rng.uniform(0.05, 1.0, (500, N_TASKS, 2))
    channel, load = rng.integers(3, size=500), rng.uniform(0.0, 1.0, 500)
    best = best_latency(tasks, channel, load)
    for bits in ASSIGNMENTS[rng.integers(64, size=10)]:
        assert (latency(tasks, channel, load, np.broadcast_to(bits, (500, N_TASKS))) >= best - 1e-12).all()
    random_bits = latency(tasks, channel, load, rng.integers(0, 2, (500, N_TASKS)).astype(float))
    assert best.mean() < 0.7 * random_bits.mean()
    env = gym.make("uavrl.envs.task_graph:TaskGraph-v0")
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs) and isinstance(env.action_space, gym.spaces.MultiBinary)
    _, reward, _, _, info = env.step(np.ones(N_TASKS, np.int8))
    assert reward == -info["latency"] <= -info["best_latency"]


@pytest.mark.timeout(300)
def test_a3c_learns_the_task_graph_example_from_its_dict_observations(tmp_path: Path) -> None:
    """The example config trained 100k env steps (a tenth of its budget) cuts the job latency of
    random offload bits (-54.3 per 20 jobs) by more than half of the way to the exact best (-30.3)."""
    from uavrl.config import load_config
    from uavrl.experiments.train import train

    config = load_config(
        Path(__file__).parents[2] / "configs" / "task_graph_a3c.yaml",
        ["runner.total_env_steps=100000", "log.progress=false", "log.tensorboard=false"],
    )
    summary = train(config, tmp_path)
    assert summary["eval"]["mean_return"] > -42.0


def _trained_return(tmp_path: Path, env_id: str, params: str, steps: int, episodes: int) -> float:
    from uavrl.config import load_config
    from uavrl.experiments.train import train

    config = load_config(
        Path(__file__).parents[2] / "configs" / "cartpole_a3c.yaml",
        [
            f"env.id={env_id}",
            f"env.params={params}",
            "runner.serial=true",
            f"runner.total_env_steps={steps}",
            f"eval.episodes={episodes}",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    return float(train(config, tmp_path)["eval"]["mean_return"])


@pytest.mark.timeout(300)
def test_frozen_lake_with_discrete_observations_reaches_its_goal(tmp_path: Path) -> None:
    """FrozenLake-v1 (not slippery), one-hot states: the greedy policy always reaches the goal
    (return 1, the optimum; a random walk reaches it about 1.5% of the time)."""
    assert _trained_return(tmp_path, "FrozenLake-v1", "{is_slippery: false}", 50_000, 100) == 1.0


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_blackjack_with_tuple_observations_plays_near_basic_strategy(tmp_path: Path) -> None:
    """Blackjack-v1, a Tuple of three Discretes: after 300k env steps the greedy policy's mean
    return over 2000 hands (standard error about 0.02) is within 0.06 of basic strategy's
    known -0.04; random play loses about 0.4 a hand."""
    assert _trained_return(tmp_path, "Blackjack-v1", "{}", 300_000, 2000) > -0.10
