"""The batched core as a Gymnasium vector env (OffloadVectorEnv)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from uavrl.envs import ENV_ID, make_core
from uavrl.envs.gym_env import OffloadVectorEnv
from uavrl.envs.paper.core import Obs


def _make_vec(n: int, **params: object) -> OffloadVectorEnv:
    env = gym.make_vec(ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", **params)
    assert isinstance(env, OffloadVectorEnv)
    return env


def test_make_vec_builds_the_batched_core_with_gymnasiums_spaces() -> None:
    env = _make_vec(5, preset="paper", observe_feasibility=True)
    assert env.num_envs == 5 and env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    assert env.single_observation_space == gym.spaces.Box(0.0, 1.0, (49,), np.float32)
    assert env.single_action_space == gym.spaces.Discrete(3)
    assert env.observation_space.shape == (5, 49) and env.action_space == gym.spaces.MultiDiscrete([3] * 5)
    obs, infos = env.reset(seed=0)
    assert infos == {} and obs in env.observation_space
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs in env.observation_space and reward.shape == terminated.shape == truncated.shape == (5,)


def test_copies_follow_the_core_and_reset_in_the_same_step() -> None:
    """Copy for copy the trajectories of a core reset with the same seed; at the episode's end
    every copy reports its last observation in ``final_obs`` and returns its next episode's
    first one."""
    n, rng = 4, np.random.default_rng(0)
    env, core = _make_vec(n, preset="paper", episode_length=30), make_core("paper", n, episode_length=30)
    obs, _ = env.reset(seed=7)
    np.testing.assert_array_equal(obs, core.reset(seed=7))
    for t in range(30):
        actions = rng.integers(0, 3, n)
        obs, reward, terminated, truncated, infos = env.step(actions)
        expected = core.step(actions)
        np.testing.assert_array_equal(obs, expected[0])
        np.testing.assert_array_equal(reward, expected[1])
        assert terminated.all() == (t == 29) and not truncated.any()
    assert infos["_final_obs"].all() and infos["final_obs"].shape == (n, Obs.DIM)
    np.testing.assert_allclose(infos["final_obs"][:, Obs.STEPS_LEFT], 0.0)
    np.testing.assert_allclose(obs[:, Obs.STEPS_LEFT], 1.0)  # the next episode has begun


def test_gymnasiums_vector_wrappers_take_it() -> None:
    """RecordEpisodeStatistics (Gymnasium's own vector wrapper) books each copy's return."""
    n, rng = 3, np.random.default_rng(1)
    env = RecordEpisodeStatistics(_make_vec(n, preset="paper", episode_length=20))
    env.reset(seed=2)
    total = np.zeros(n)
    for _ in range(20):
        _, reward, _, _, infos = env.step(rng.integers(0, 3, n))
        total += reward
    assert infos["_episode"].all()
    np.testing.assert_allclose(infos["episode"]["r"], total, rtol=1e-5)
    np.testing.assert_array_equal(infos["episode"]["l"], 20)


def test_hybrid_mec_actions_are_a_tuple_of_batched_spaces() -> None:
    env = _make_vec(3, preset="mec", action_mode="hybrid")
    assert isinstance(env.action_space, gym.spaces.Tuple)
    env.reset(seed=0)
    choices, values = env.action_space.sample()
    assert choices.shape == (3,) and values.shape == (3, 1)
    obs, reward, *_ = env.step((choices, values))
    assert obs in env.observation_space and np.isfinite(reward).all()
    with pytest.raises(ValueError, match="takes no options"):
        env.reset(options={"copy_index": 1})
