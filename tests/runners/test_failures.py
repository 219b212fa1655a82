"""Failures: a raising or dying worker stops the run cleanly; NaN updates are skipped, then stop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from uavrl.experiments.train import train
from uavrl.runners.checkpoint import load_models
from uavrl.runners.learner import NonFiniteError
from uavrl.runners.session import WorkerFailed

FAULTY = "tests.runners.helper_envs:Faulty-v0"


def _faulty(make_config, fault: str, at_step: int, serial: bool):
    return make_config(
        env={"id": FAULTY, "params": {"fault": fault, "at_step": at_step}, "worker_cells": None},
        runner={"serial": serial, "total_env_steps": 6000, "envs_per_worker": 1, "checkpoint_every": 1},
        model={"hidden_size": 8, "recurrent": False},
    )


@pytest.mark.parametrize(("fault", "expected"), [("raise", "injected env failure"), ("exit", "code 3")])
def test_failing_worker_is_reported_and_the_run_stops_cleanly(
    make_config, tmp_path: Path, fault, expected
) -> None:
    with pytest.raises(WorkerFailed, match=expected) as err:
        train(_faulty(make_config, fault, at_step=120, serial=False), tmp_path)
    if fault == "raise":
        assert "Traceback" in str(err.value) and "helper_envs.py" in str(err.value)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and expected in summary["error"]
    match = re.search(r"worker (\d+) failed", str(err.value))
    assert match is not None
    failed = int(match.group(1))
    log = pd.read_csv(tmp_path / "training_log.csv")
    episodes = sorted(log.loc[log["worker_id"] == failed, "episode"])
    if fault == "raise":
        # its env failed at step 120 of 10-step episodes: all 11 finished episodes were flushed
        assert episodes == list(range(1, 12))
    else:
        # a killed process may take rows still in its queue buffer with it, never more than 11
        assert 1 <= len(episodes) <= 11
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()


def test_nan_updates_are_skipped_then_the_run_stops(make_config, tmp_path: Path) -> None:
    config = _faulty(make_config, "nan", at_step=60, serial=True)
    config = config.model_copy(update={"runner": config.runner.model_copy(update={"max_nonfinite": 4})})
    with pytest.raises(NonFiniteError, match="4 updates in a row had a non-finite loss"):
        train(config, tmp_path)
    meta = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    # serial round robin: both workers skipped 3, then worker 0's 4th in a row raised
    assert meta["counters"]["skipped_updates"] == 6
    assert meta["counters"]["updates"] > 0
    models, _ = load_models(tmp_path / "checkpoints", "last")
    assert all(torch.isfinite(p).all() for p in models[0].parameters())  # nothing propagated
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and "max_nonfinite=4" in summary["error"]


@pytest.mark.parametrize("kind", ["a3c_data", "impala"])
def test_a_failing_actor_stops_an_actor_learner_run_with_its_traceback(
    make_config, tmp_path: Path, kind: str
) -> None:
    config = _faulty(make_config, "raise", at_step=120, serial=False)
    config = config.model_copy(update={"runner": config.runner.model_copy(update={"kind": kind})})
    with pytest.raises(WorkerFailed, match=r"actor \d failed") as err:
        train(config, tmp_path)
    assert "injected env failure" in str(err.value) and "helper_envs.py" in str(err.value)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()
