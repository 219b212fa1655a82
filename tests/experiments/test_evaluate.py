"""Evaluation tables: confidence intervals and the % of oracle score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uavrl.config import load_config
from uavrl.envs.baselines import ConstantPolicy, LocalElseOffload
from uavrl.envs.scenarios import Cell, resolve_cells
from uavrl.envs.worlds import cell_worlds
from uavrl.experiments.evaluate import (
    RESULT_COLUMNS,
    evaluate_policies,
    mean_ci,
    percent_of_oracle,
    regime_worlds,
    tuning_worlds,
)


def test_mean_ci_matches_scipy() -> None:
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    mean, std, low, high = mean_ci(x)
    expected = stats.t.interval(0.95, 4, loc=4.0, scale=stats.sem(x))
    assert mean == 4.0
    assert std == pytest.approx(np.sqrt(7.5))
    assert (low, high) == pytest.approx(expected)


def test_percent_of_oracle_uses_the_best_floor_policy() -> None:
    rows = [
        ("random", "a", 10, 20.0),
        ("always_local", "a", 10, 10.0),
        ("always_offload", "a", 10, 40.0),
        ("threshold", "a", 10, 70.0),
        ("oracle", "a", 10, 100.0),
    ]
    frame = pd.DataFrame(rows, columns=["policy", "cell", "episodes", "mean"])
    pct = percent_of_oracle(frame)
    assert pct["threshold"] == pytest.approx(50.0)
    assert pct["oracle"] == pytest.approx(100.0)
    assert pct["always_offload"] == pytest.approx(0.0)


def test_evaluate_policies_rows_and_columns() -> None:
    policies = [ConstantPolicy(0, "always_local"), LocalElseOffload()]
    worlds = cell_worlds(
        [(c.name, {"preset": "paper", **c.env_params()}) for c in (Cell(5), Cell(90))], "private", 1
    )
    frame = evaluate_policies(policies, worlds, episodes=6, seed=0)
    assert list(frame.columns) == RESULT_COLUMNS
    assert len(frame) == 4
    assert (frame["ci_low"] <= frame["mean"]).all() and (frame["mean"] <= frame["ci_high"]).all()
    assert set(frame["cell"]) == {"v5-l200-c1000", "v90-l200-c1000"}
    assert set(frame["regime"]) == {"private"}


@pytest.mark.parametrize("regime", ["shared", "private"])
def test_evaluation_params_keep_what_the_run_observes(regime: str) -> None:
    """A study evaluates with its own env params (here the preset's reward scale), but a model
    built for the feasibility column still gets it: its observation parameters come from the run."""
    overrides = ["env.params.observe_feasibility=true", "env.params.reward_scale=0.01"]
    config = load_config(Path(__file__).parents[2] / "configs" / "paper_a3c.yaml", overrides)
    evaluation = {"preset": "paper"}
    worlds = regime_worlds(config, regime, resolve_cells("held_out_velocity"), evaluation)  # type: ignore[arg-type]
    worlds += tuning_worlds(config, regime, evaluation)  # type: ignore[arg-type]
    for world in worlds:
        assert all(p["observe_feasibility"] is True for p in world.agent_params)
        assert all("reward_scale" not in p for p in world.agent_params)  # the evaluation's own
        assert world.make_env(2).obs_dim == 49
