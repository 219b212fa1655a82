"""bench solve: runs timed from their launch to their first hit, and the table built from them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from uavrl.bench.solve import SB3_ROWS, TASKS, SolveRow, summarize, time_one

CONFIGS = Path(__file__).parent.parent.parent / "configs"
# An easy target (a random CartPole policy scores about 22), reached within seconds of training.
EASY = {"target": 40.0, "every": 2000, "episodes": 3, "budget": 60_000, "max_seconds": 150.0}


def test_a_uavrl_run_is_timed_from_launch_to_its_first_hit(tmp_path: Path) -> None:
    row = SolveRow("uavrl a2c", config=str(CONFIGS / "cartpole_a2c.yaml"))
    result = time_one(row, seed=0, workdir=tmp_path, **EASY)  # type: ignore[arg-type]
    assert result["exit_code"] == 0 and result["error"] == ""
    assert 0 < result["startup_s"] < result["solve_s"] < result["total_s"]


def test_a_run_that_fails_reports_why(tmp_path: Path) -> None:
    row = SolveRow("uavrl a2c", config=str(tmp_path / "missing.yaml"))
    result = time_one(row, seed=0, workdir=tmp_path, **EASY)  # type: ignore[arg-type]
    assert result["exit_code"] != 0 and result["solve_s"] is None
    assert "missing.yaml" in result["error"]


def test_an_sb3_run_is_timed_alike(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    result = time_one(SB3_ROWS[0], seed=0, workdir=tmp_path, **EASY)  # type: ignore[arg-type]
    assert result["exit_code"] == 0 and result["error"] == ""
    assert 0 < result["startup_s"] < result["solve_s"] < result["total_s"]


def test_unsolved_seeds_count_as_infinitely_slow_in_the_median() -> None:
    runs = pd.DataFrame(
        {
            "row": ["a", "a", "a", "b", "b"],
            "seed": [0, 1, 2, 0, 1],
            "startup_s": [1.0, 1.5, 2.0, 3.0, None],
            "solve_s": [3.0, None, 5.0, None, None],
        }
    )
    table = summarize(runs).set_index("row")
    assert table.loc["a", "solved"] == "2/3"
    assert table.loc["a", "median_s"] == 5.0  # median of (3, inf, 5)
    assert table.loc["a", "min_s"] == 3.0 and math.isinf(table.loc["a", "max_s"])
    assert table.loc["a", "startup_median_s"] == 1.5
    assert table.loc["b", "solved"] == "0/2" and math.isinf(table.loc["b", "median_s"])
    assert table.loc["b", "startup_median_s"] == 3.0


def test_a_run_stopped_at_its_time_limit_says_so(tmp_path: Path) -> None:
    row = SolveRow("uavrl a2c", config=str(CONFIGS / "cartpole_a2c.yaml"))
    hard = {**EASY, "target": 10_000.0, "budget": 10_000_000, "max_seconds": 8.0}  # unreachable
    result = time_one(row, seed=0, workdir=tmp_path, **hard)  # type: ignore[arg-type]
    assert result["exit_code"] is None and result["solve_s"] is None
    assert result["error"] == "no hit within max_seconds=8, stopped"


# Random bits score about -54 per 20 jobs: an easy target for the Dict-observation,
# MultiBinary-action task.
EASY_TASK_GRAPH = {**EASY, "target": -52.0, "every": 2000}


@pytest.mark.timeout(240)
def test_the_dict_observation_multibinary_task_times_a_uavrl_row_with_its_overrides(tmp_path: Path) -> None:
    task = TASKS["TaskGraph-v0"]
    row = next(r for r in task.rows if r.overrides)
    row = SolveRow(row.label, config=str(CONFIGS / "task_graph_a3c.yaml"), overrides=row.overrides)
    result = time_one(row, seed=0, workdir=tmp_path, task=task, **EASY_TASK_GRAPH)  # type: ignore[arg-type]
    assert result["exit_code"] == 0 and result["error"] == ""
    assert 0 < result["startup_s"] < result["solve_s"] < result["total_s"]
    config = (tmp_path / "uavrl-a2c0" / "config.yaml").read_text()
    assert "kind: a2c" in config and "lr: 0.003" in config  # the row's own overrides


@pytest.mark.timeout(240)
def test_sb3_takes_the_dict_observation_multibinary_task_with_its_multi_input_policy(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    task = TASKS["TaskGraph-v0"]
    result = time_one(SB3_ROWS[1], seed=0, workdir=tmp_path, task=task, **EASY_TASK_GRAPH)  # type: ignore[arg-type]
    assert result["exit_code"] == 0 and result["error"] == ""
    assert 0 < result["startup_s"] < result["solve_s"] < result["total_s"]
