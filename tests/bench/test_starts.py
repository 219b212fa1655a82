"""bench starts: one run per (starting config, task, seed) in a fresh process, and its table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from uavrl.bench.starts import STARTS, run_one, summarize

ROOT = Path(__file__).parents[2]


@pytest.mark.timeout(200)
def test_a_run_of_the_discrete_gru_start_trains_the_task_and_is_judged_by_its_final_greedy_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)  # the checks name their configs from the repository root
    result = run_one(
        "discrete_gru", "Acrobot-v1", 3, tmp_path, 150.0, ("runner.total_env_steps=3200", "eval.episodes=2")
    )
    assert result["error"] == "" and np.isfinite(result["final_return"])
    assert result["target"] == -100.0 and result["passed"] == (result["final_return"] >= -100.0)
    config = (tmp_path / "discrete_gru-Acrobot-v1-3" / "config.yaml").read_text()
    assert "id: Acrobot-v1" in config and "recurrent: true" in config and "seed: 3" in config


def test_a_run_that_fails_is_reported_with_its_last_line_and_does_not_pass(tmp_path: Path) -> None:
    result = run_one("continuous", "Pendulum-v1", 0, tmp_path, 60.0, ("algo.lr=-1",))
    assert not result["passed"] and math.isnan(result["final_return"])
    assert "algo.lr" in result["error"]


def test_the_summary_counts_passed_seeds_per_config_and_task() -> None:
    runs = pd.DataFrame(
        {
            "config": ["start_discrete"] * 3,
            "env": ["CartPole-v1"] * 3,
            "seed": [0, 1, 2],
            "final_return": [500.0, 480.0, math.nan],
            "target": [475.0] * 3,
            "passed": [True, True, False],
            "wall_s": [10.0, 20.0, 30.0],
        }
    )
    row = summarize(runs).iloc[0]
    assert row["passed"] == "2/3" and row["median"] == 490.0 and row["worst"] == 480.0
    assert row["median_wall_s"] == 20.0


def test_every_starting_config_loads_with_each_of_its_tasks_and_names_its_model() -> None:
    from uavrl.config import load_config

    for kind, check in STARTS.items():
        for env_id in check.tasks:
            config = load_config(ROOT / check.config, [f"env.id={env_id}"])
            assert config.env.id == env_id and config.model.recurrent == kind.endswith("_gru")
