"""RunDir: a run directory read back by what its files say."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.runners.conftest import small_config
from uavrl.errors import CheckpointError, ConfigError
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.train import resume, train, write_config


def test_a_trained_run_reads_back_its_config_summary_models_and_logs(tmp_path: Path) -> None:
    config = small_config(runner={"total_env_steps": 300})
    summary = train(config, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    assert run.holds_run() and run.training_log.exists() and run.checkpoints.is_dir()
    assert run.config().hash() == config.hash()
    assert run.summary() == summary == run.finished_summary()
    assert run.is_trained(config.hash()) and not run.is_trained("another hash")
    models, meta = run.load_models()
    assert len(models) == 1 and meta["counters"]["env_steps"] == summary["env_steps"]
    stored = load_file(str(run.checkpoints / "last.safetensors"))
    for name, value in models[0].state_dict().items():  # the checkpoint's weights, every one
        assert torch.equal(value, stored[f"model0.{name}"])
    assert run.checkpointed_wall_time() == pytest.approx(meta["counters"]["wall_time_s"])


def test_an_empty_or_started_directory_holds_no_finished_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert not run.holds_run() and run.summary() is None and not run.is_trained("x")
    assert run.checkpointed_wall_time() == 0.0
    with pytest.raises(ConfigError, match=r"no config\.yaml there"):
        run.config()
    with pytest.raises(ConfigError, match=r"is not a run directory: no config\.yaml there"):
        resume(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint 'last'"):
        run.load_models()
    write_config(small_config(runner={"total_env_steps": 600}), tmp_path)
    assert run.finished_summary() is None


@pytest.mark.parametrize(
    ("summary", "finished"),
    [
        ({"status": "finished", "env_steps": 600}, True),
        ({"status": "finished", "env_steps": 300}, False),  # its budget was raised since
        ({"status": "finished", "env_steps": 300, "stopped_at_target": True}, True),
        ({"status": "failed", "env_steps": 600}, False),
        ({"status": "interrupted", "env_steps": 120}, False),
    ],
)
def test_a_run_is_finished_when_it_used_its_budget_or_hit_its_target(
    tmp_path: Path, summary: dict[str, object], finished: bool
) -> None:
    write_config(small_config(runner={"total_env_steps": 600}), tmp_path)
    run = RunDir(tmp_path)
    run.summary_file.write_text(json.dumps(summary))
    assert run.holds_run()
    assert (run.finished_summary() == summary) if finished else run.finished_summary() is None


def test_an_unreadable_summary_is_refused_by_name_and_counts_as_not_trained(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    run.summary_file.write_text("[1, 2")
    with pytest.raises(ConfigError, match=r"summary.json: not a valid summary"):
        run.summary()
    assert not run.is_trained("x")  # a study trains it again
