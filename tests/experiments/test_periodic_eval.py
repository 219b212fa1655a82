"""Evaluation during training: eval_log.csv, common random numbers, early stop at a target."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.runners.conftest import small_config
from uavrl.errors import ConfigError
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.train import PeriodicEvaluation, train
from uavrl.nn.models import build_model
from uavrl.runners.session import model_spec


@pytest.mark.parametrize("serial", [True, False])
def test_periodic_evaluations_are_logged_at_every_interval(tmp_path: Path, serial: bool) -> None:
    config = small_config(
        runner={"serial": serial, "total_env_steps": 1200},
        eval={"episodes": 2, "every_env_steps": 300, "periodic_episodes": 2},
    )
    summary = train(config, tmp_path)
    log = pd.read_csv(tmp_path / "eval_log.csv")
    assert list(log.columns) == ["step", "wall_time", "mean_return", "episodes"]
    # one evaluation at the first round past each multiple of 300 (the parallel parent may see
    # several multiples pass between two of its looks, and evaluates once for them)
    assert log["step"].is_monotonic_increasing and (log["step"] >= 300).all()
    assert len(log) == 4 if serial else 1 <= len(log) <= 4
    assert log["wall_time"].is_monotonic_increasing and log["mean_return"].notna().all()
    assert summary["eval_during_training"] == {"stop_at_return": None, "first_hit": None}


def test_the_same_weights_score_the_same_at_every_evaluation() -> None:
    """Common random numbers: every evaluation uses the same seeded streams."""
    config = small_config(eval={"every_env_steps": 100, "periodic_episodes": 3})
    model = build_model(model_spec(config))
    hook = PeriodicEvaluation(config)
    assert hook(30, [model]) is None  # the first round: next evaluation at 100
    first, second = hook(100, [model]), hook(250, [model])
    assert first is not None and second is not None and first.eval_row and second.eval_row
    assert first.eval_row["mean_return"] == second.eval_row["mean_return"]
    assert hook(260, [model]) is None  # next at 300


def test_stop_at_return_ends_the_run_and_records_the_first_hit(tmp_path: Path) -> None:
    config = small_config(
        runner={"total_env_steps": 6000},
        eval={"episodes": 2, "every_env_steps": 300, "periodic_episodes": 2, "stop_at_return": -1.0e9},
    )
    summary = train(config, tmp_path)
    hit = summary["eval_during_training"]["first_hit"]
    assert summary["stopped_at_target"] and hit["env_steps"] == summary["env_steps"] < 6000
    assert 300 <= hit["env_steps"] < 300 + 30  # the first round past 300 (2 workers x 3 envs x 5 steps)
    assert RunDir(tmp_path).finished_summary() == json.loads((tmp_path / "summary.json").read_text())
    with pytest.raises(ConfigError, match=r"stop_at_return needs eval\.every_env_steps"):
        small_config(eval={"stop_at_return": 1.0})


def test_periodic_evaluation_leaves_a_serial_run_s_training_unchanged(tmp_path: Path) -> None:
    """A serial run samples its actions from torch's generator; the evaluation's snapshot of the
    model must not draw from it (its weights were once drawn there, shifting every later action)."""
    logs = []
    for name, every in (("plain", None), ("evaluated", 300)):
        evaluation = {"episodes": 2, "every_env_steps": every}
        config = small_config(runner={"total_env_steps": 1200}, eval=evaluation)
        train(config, tmp_path / name)
        logs.append(pd.read_csv(tmp_path / name / "training_log.csv").drop(columns="wall_time"))
    assert (tmp_path / "evaluated" / "eval_log.csv").exists()
    pd.testing.assert_frame_equal(logs[0], logs[1])
