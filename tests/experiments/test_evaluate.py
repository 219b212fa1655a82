"""Evaluation tables: confidence intervals and the normalised score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uavrl.config import load_config
from uavrl.envs.paper.baselines import ConstantPolicy, LocalElseOffload
from uavrl.envs.scenarios import Cell, resolve_cells
from uavrl.envs.worlds import cell_worlds
from uavrl.experiments.evaluate import (
    RESULT_COLUMNS,
    evaluate_policies,
    mean_ci,
    regime_worlds,
    tuning_worlds,
)
from uavrl.experiments.normalise import normalised_percent


def test_mean_ci_matches_scipy() -> None:
    x = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    mean, std, low, high = mean_ci(x)
    expected = stats.t.interval(0.95, 4, loc=4.0, scale=stats.sem(x))
    assert mean == 4.0
    assert std == pytest.approx(np.sqrt(7.5))
    assert (low, high) == pytest.approx(expected)


def test_normalised_percent_by_hand() -> None:
    """Per cell: 0 at the best constant policy, 1 at the bound; then the mean over cells.
    Cell a: floor 40 (always_offload), bound 100; cell b: floor 30 (always_local), bound 50."""
    means = {
        "a": {"random": 60.0, "always_local": 10.0, "always_offload": 40.0, "threshold": 70.0},
        "b": {"random": 20.0, "always_local": 30.0, "always_offload": 25.0, "threshold": 40.0},
    }
    privileged = {"a": 90.0, "b": 45.0}
    bound = {"a": 100.0, "b": 50.0}
    rows = [(p, c, 10, v) for c, values in means.items() for p, v in values.items()]
    rows += [("privileged_rule", c, 10, v) for c, v in privileged.items()]
    frame = pd.DataFrame(rows, columns=["policy", "cell", "episodes", "mean"])
    pct, scale = normalised_percent(frame)
    # no bound: the privileged rule is the top
    assert scale.top_name == "privileged_rule"
    assert pct["threshold"] == pytest.approx(100 * ((70 - 40) / 50 + (40 - 30) / 15) / 2)
    assert pct["privileged_rule"] == pytest.approx(100.0)
    # random beats both constants in cell a but is no floor: it scores above 0 there
    assert pct["random"] == pytest.approx(100 * ((60 - 40) / 50 + (20 - 30) / 15) / 2)
    bounded = pd.concat(
        [
            frame,
            pd.DataFrame([("hindsight_bound", c, 10, v) for c, v in bound.items()], columns=frame.columns),
        ]
    )
    pct, scale = normalised_percent(bounded)
    assert scale.top_name == "hindsight_bound" and "hindsight bound" in scale.label
    assert pct["threshold"] == pytest.approx(100 * ((70 - 40) / 60 + (40 - 30) / 20) / 2)
    assert pct["privileged_rule"] == pytest.approx(100 * ((90 - 40) / 60 + (45 - 30) / 20) / 2)
    assert pct["hindsight_bound"] == pytest.approx(100.0)
    assert pct["always_offload"] == pytest.approx(100 * (0 + (25 - 30) / 20) / 2)
    # without a constant policy or a top there is no scale
    assert normalised_percent(frame[frame["policy"] != "privileged_rule"]) is None


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
    built for the feasibility and payable columns still gets them: its observation parameters
    come from the run."""
    overrides = ["env.params.observe_feasibility=true", "env.params.reward_scale=0.01"]
    config = load_config(Path(__file__).parents[2] / "configs" / "paper_a3c.yaml", overrides)
    evaluation = {"preset": "paper"}
    worlds = regime_worlds(config, regime, resolve_cells("held_out_velocity"), evaluation)  # type: ignore[arg-type]
    worlds += tuning_worlds(config, regime, evaluation)  # type: ignore[arg-type]
    for world in worlds:
        assert all(p["observe_feasibility"] is p["observe_payable"] is True for p in world.agent_params)
        assert all("reward_scale" not in p for p in world.agent_params)  # the evaluation's own
        assert world.make_env(2).obs_dim == 50
