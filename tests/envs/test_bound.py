"""The hindsight bound of `paper`: exact on a hand case, replayable, above every reference."""

from __future__ import annotations

import numpy as np
import pytest

from uavrl.envs.paper.baselines import reference_policies
from uavrl.envs.paper.bound import (
    EpisodeDraws,
    SchedulePolicy,
    episode_draws,
    hindsight_bounds,
    solve_episode,
    world_schedules,
)
from uavrl.envs.paper.core import DISCARD, LOCAL, OFFLOAD
from uavrl.envs.worlds import World, cell_worlds
from uavrl.errors import ConfigError

PARAMS = {"preset": "paper", "velocity": 30.0, "episode_length": 20}


def _draws(units: list[int], times: list[int], channel: list[int]) -> EpisodeDraws:
    return EpisodeDraws(np.array([units]), np.array([times]), np.array([channel], dtype=np.int8))


def test_a_tiny_episode_solved_by_hand() -> None:
    """Local capacity 100, pool 100, 4 steps. Tasks (units, steps): (80, 2), (60, 1), (50, 1),
    (90, 2); the channel is good at steps 1 and 3 only. Task 0 holds 80 local units through
    step 1, so task 1 (60) goes to the cloud there (good channel); task 2 (50) goes local at step
    2; task 3 (90, 2 steps) would finish after the 4th step: it cannot pay. Best: 80 + 60 + 50."""
    draws = _draws([80, 60, 50, 90], [2, 1, 1, 2], [0, 1, 0, 1])
    result = solve_episode(draws, [100], cloud_capacity=100, shared=False, reward_scale=1.0)
    assert result.optimal
    assert result.bound == pytest.approx(190.0)
    assert result.objective == pytest.approx(190.0)
    np.testing.assert_array_equal(result.schedule[0], [LOCAL, OFFLOAD, LOCAL, DISCARD])


def test_slots_bind_as_well_as_units() -> None:
    """Local capacity 200 but 20 slots: of 25 one-unit tasks that all last the whole episode,
    only 20 fit locally and the bad channel rules the cloud out."""
    n = 25
    draws = _draws([1] * n, list(range(n, 0, -1)), [0] * n)
    result = solve_episode(draws, [200], cloud_capacity=1000, shared=False, reward_scale=1.0)
    assert result.bound == pytest.approx(20.0)


def test_a_shared_pool_binds_the_agents_jointly() -> None:
    """Two agents, one good step each at step 0, tasks of 70 units on a pool of 100: only one of
    them can offload (their own local capacity is 10)."""
    draws = EpisodeDraws(
        np.array([[70, 1], [70, 1]]), np.array([[2, 1], [2, 1]]), np.array([[1, 0], [1, 0]], dtype=np.int8)
    )
    shared = solve_episode(draws, [10, 10], cloud_capacity=100, shared=True, reward_scale=1.0)
    private = solve_episode(draws, [10, 10], cloud_capacity=100, shared=False, reward_scale=1.0)
    assert shared.bound == pytest.approx((70 + 1 + 1) / 2)  # mean over the two agents
    assert private.bound == pytest.approx((70 + 1 + 70 + 1) / 2)


@pytest.mark.parametrize("n_agents", [1, 3])
def test_the_schedule_replayed_in_the_env_scores_its_objective(n_agents: int) -> None:
    world = World("w", (PARAMS,) * n_agents, shared=n_agents > 1)
    base = np.arange(4)
    bounds = hindsight_bounds(world, seed=5, base=base, time_limit=20.0)
    replayed = world.episode_returns(SchedulePolicy(world_schedules(bounds)), 5, base)
    np.testing.assert_allclose(replayed, [b.objective for b in bounds], atol=1e-4)
    assert all(b.bound >= b.objective - 1e-9 for b in bounds)


def test_the_draws_are_those_every_policy_sees() -> None:
    world = World("w", (PARAMS, {**PARAMS, "velocity": 90.0}), shared=True)
    first = episode_draws(world, 3, np.arange(2))
    again = episode_draws(world, 3, np.arange(2))
    np.testing.assert_array_equal(first[1].task_units, again[1].task_units)
    assert first[0].task_units.shape == (2, 20)
    # two agents draw on different streams
    assert not np.array_equal(first[0].task_units[0], first[0].task_units[1])


@pytest.mark.parametrize("regime", ["private", "shared"])
def test_no_reference_policy_scores_above_the_bound(regime: str) -> None:
    cells = [("a", {**PARAMS, "velocity": 10.0}), ("b", {**PARAMS, "velocity": 50.0})]
    worlds = cell_worlds(cells, regime, n_agents=2)
    policies = reference_policies(worlds, tuning_episodes=10, seed=1)
    base = np.arange(6)
    for world in worlds:
        bound = np.array([b.bound for b in hindsight_bounds(world, 9, base, time_limit=20.0)])
        for policy in policies:
            returns = world.episode_returns(policy, 9, base, policy.needs_privileged)
            assert (returns <= bound + 1e-6).all(), (world.name, policy.name)


def test_the_bound_refuses_another_preset() -> None:
    world = World("m", ({"preset": "mec"},), shared=False)
    with pytest.raises(ConfigError, match="preset 'paper'"):
        episode_draws(world, 0, np.arange(1))


def test_a_programme_cut_before_any_schedule_falls_back_to_its_relaxation_which_still_bounds() -> None:
    """5 agents on one pool, 200 steps, 0.1 ms: no schedule is found in time (as on a busy
    machine with a short limit). The empty schedule (every task discarded) and the linear
    relaxation's value stand in; that value is above what a 20 s solve proves."""
    worlds = cell_worlds([("a", {**PARAMS, "episode_length": 200})], "shared", n_agents=5)
    cut = hindsight_bounds(worlds[0], 0, np.arange(1), time_limit=1e-4)[0]
    assert cut.objective == 0.0 and (cut.schedule == DISCARD).all() and not cut.optimal
    solved = hindsight_bounds(worlds[0], 0, np.arange(1), time_limit=20.0)[0]
    assert solved.objective <= solved.bound <= cut.bound
