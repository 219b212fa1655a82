"""Reference policies: decisions on hand-made observations and the ordering of their returns."""

from __future__ import annotations

import numpy as np
import pytest

from uavrl.envs.baselines import (
    ConstantPolicy,
    GreedyOracle,
    LocalElseOffload,
    ThresholdPolicy,
    cell_returns,
    reference_policies,
    tune_theta,
)
from uavrl.envs.paper import DISCARD, LOCAL, OFFLOAD, Obs
from uavrl.envs.scenarios import CELL_SETS, Cell
from uavrl.envs.worlds import World, cell_worlds


def _obs(free_local: int, task_units: int, task_time: int, slots_full: bool = False) -> np.ndarray:
    obs = np.zeros((1, Obs.DIM), dtype=np.float32)
    obs[0, Obs.FREE_LOCAL] = free_local / 200
    obs[0, Obs.TASK_UNITS] = task_units / 200
    obs[0, Obs.TASK_TIME] = task_time / 50
    if slots_full:
        obs[0, Obs.LOCAL_UNITS] = 1 / 200
    return obs


def test_local_else_offload_checks_units_and_slots() -> None:
    policy = LocalElseOffload()
    assert policy(_obs(150, 150, 5), None)[0] == LOCAL
    assert policy(_obs(149, 150, 5), None)[0] == OFFLOAD
    assert policy(_obs(200, 10, 5, slots_full=True), None)[0] == OFFLOAD


def test_threshold_discards_long_tasks() -> None:
    policy = ThresholdPolicy(theta=20)
    assert policy(_obs(200, 10, 20), None)[0] == LOCAL
    assert policy(_obs(200, 10, 21), None)[0] == DISCARD


def test_oracle_offloads_only_when_it_would_succeed() -> None:
    oracle = GreedyOracle(theta=50)
    obs = _obs(200, 100, 10)
    good = {
        "channel": np.array([1]),
        "pool_level": np.array([100]),
        "free_cloud_slots": np.array([3]),
    }
    assert oracle(obs, good)[0] == OFFLOAD
    assert oracle(obs, {**good, "channel": np.array([0])})[0] == LOCAL
    assert oracle(obs, {**good, "pool_level": np.array([99])})[0] == LOCAL
    assert oracle(obs, {**good, "free_cloud_slots": np.array([0])})[0] == LOCAL
    with pytest.raises(ValueError, match="privileged"):
        oracle(obs, None)


def test_vectorised_tuning_scores_equal_scalar_evaluations() -> None:
    cells = [Cell(10), Cell(50)]
    worlds = [World(c.name, ({"preset": "paper", **c.env_params()},), shared=False) for c in cells]
    best, scores = tune_theta(ThresholdPolicy, worlds, episodes=20, seed=4, grid=(10, 30))
    for theta in (10, 30):
        direct = np.mean(
            [
                cell_returns(ThresholdPolicy(theta), "paper", c, 20, 4, first_copy=1_000_000).mean()
                for c in cells
            ]
        )
        assert scores[theta] == pytest.approx(direct)
    assert best == max(scores, key=lambda t: scores[t])


def test_policies_share_the_exogenous_streams() -> None:
    """Common random numbers: the return of always-LOCAL does not depend on the velocity."""
    local = ConstantPolicy(LOCAL, "always_local")
    a = cell_returns(local, "paper", Cell(5), 30, seed=8)
    b = cell_returns(local, "paper", Cell(120), 30, seed=8)
    np.testing.assert_array_equal(a, b)


def test_reference_ordering_holds_on_the_training_cells() -> None:
    """The ordering environment.md reports for the original design, on the fixed env."""
    seen = CELL_SETS["seen"]
    worlds = cell_worlds([(c.name, {"preset": "paper", **c.env_params()}) for c in seen], "private", 1)
    policies = reference_policies(worlds, tuning_episodes=40, seed=0)
    means = {
        p.name: np.mean([cell_returns(p, "paper", c, 100, seed=1).mean() for c in seen]) for p in policies
    }
    placing = ("random", "always_offload", "local_else_offload", "threshold")
    assert means["always_local"] < min(means[name] for name in placing)
    assert means["random"] > means["always_local"]
    assert means["threshold"] >= max(
        means[n] for n in ("random", "always_local", "always_offload", "local_else_offload")
    )
    assert means["oracle"] >= max(v for k, v in means.items() if k != "oracle")
