"""Checkpoints: safetensors + JSON, identical actions after a round trip, resume continues."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from uavrl.errors import CheckpointError
from uavrl.experiments.train import resume, train
from uavrl.nn.models import ModelSpec
from uavrl.runners.checkpoint import load_models


def test_round_trip_gives_identical_actions(make_config, tmp_path: Path) -> None:
    config = make_config()
    summary = train(config, tmp_path)
    models, meta = load_models(tmp_path / "checkpoints", "last")
    assert meta["config"] == config.to_dict()
    assert ModelSpec(**meta["architecture"]).hidden_size == 16
    assert summary["env_steps"] == meta["counters"]["env_steps"] == 600
    tensors = load_file(str(tmp_path / "checkpoints" / "last.safetensors"))
    assert any(k.startswith("optim0.") and k.endswith(".step") for k in tensors)

    from uavrl.runners.session import TrainingSession

    session = TrainingSession(config, tmp_path, 1, 2, resume=True)  # the live model, restored
    obs = torch.rand(64, 48)
    h = models[0].initial_state(64)
    with torch.no_grad():
        a = models[0].policy.distribution(models[0].step(obs, h)[0]).mode()
        b = session.models[0].policy.distribution(session.models[0].step(obs, h)[0]).mode()
        torch.manual_seed(0)
        sa = models[0].policy.distribution(models[0].step(obs, h)[0]).sample()
        torch.manual_seed(0)
        sb = session.models[0].policy.distribution(session.models[0].step(obs, h)[0]).sample()
    assert torch.equal(a, b) and torch.equal(sa, sb)


def test_resume_continues_the_counters(make_config, tmp_path: Path) -> None:
    config = make_config()
    first = train(config, tmp_path)
    assert first["env_steps"] == 600
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["meta"]["config_hash"] == config.hash()
    saved["runner"]["total_env_steps"] = 1200
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    rows_before = (tmp_path / "training_log.csv").read_text().count("\n")
    second = resume(tmp_path)
    assert second["env_steps"] == 1200
    assert second["wall_time_s"] > first["wall_time_s"]  # both sessions counted
    assert second["updates"] == 80
    meta = json.loads((tmp_path / "checkpoints" / "last.json").read_text())
    assert meta["counters"]["worker_updates"] == [40, 40]
    assert meta["counters"]["resumes"] == 1
    assert (tmp_path / "training_log.csv").read_text().count("\n") > rows_before


def test_a_run_directory_is_never_overwritten(make_config, tmp_path: Path) -> None:
    from uavrl.errors import ConfigError

    train(make_config(), tmp_path)
    with pytest.raises(
        ConfigError, match=rf"already holds a run with checkpoints; continue it with --resume {tmp_path}"
    ):
        train(make_config(), tmp_path)


def test_a_run_that_stopped_before_its_first_checkpoint_leaves_no_dead_end(
    make_config, tmp_path: Path
) -> None:
    """What a parent killed before its first checkpoint leaves (its config, some log rows, event
    files, perhaps a failed summary): --resume names the way out instead of failing on a
    missing checkpoint, and training into the directory again starts over, clearing them."""
    from uavrl.errors import ConfigError
    from uavrl.experiments.rundir import RunDir
    from uavrl.experiments.train import write_config

    config = make_config()
    run = RunDir(tmp_path)
    write_config(config, tmp_path)
    run.training_log.write_text("step,worker_id,episode,return\n30,0,1,2.5\n")
    stale = run.tensorboard / "events.out.tfevents.stale"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    run.write_summary({"status": "failed", "config_hash": config.hash(), "error": "killed"})
    with pytest.raises(
        ConfigError, match=rf"no checkpoint to resume from .* uavrl train --config {run.config_file}"
    ):
        resume(tmp_path)
    assert run.summary()["error"] == "killed"  # the refusal wrote nothing
    summary = train(config, tmp_path)
    assert summary["status"] == "finished" and not stale.exists()
    log = pd.read_csv(run.training_log)
    assert not ((log["step"] == 30) & (log["return"] == 2.5)).any()  # the old row went with the old run


def test_spaces_no_model_takes_are_refused_before_anything_is_written(make_config, tmp_path: Path) -> None:
    from uavrl.errors import ConfigError

    config = make_config(
        env={"id": "tests.runners.helper_envs:Switches-v0", "params": {}, "worker_cells": None}
    )
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"action space must be Discrete, MultiDiscrete, .*got Sequence"):
        train(config, run_dir)
    assert not run_dir.exists()


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    else:  # garbled: the header's length field no longer fits the file
        path.write_bytes(b"\xff" * 8 + data[8:])


@pytest.mark.parametrize(
    ("file", "how", "message"),
    [
        ("last.safetensors", "truncated", "not a readable safetensors file"),
        ("last.safetensors", "empty", "not a readable safetensors file"),
        ("last.safetensors", "garbled", "not a readable safetensors file"),
        ("last.json", "truncated", "truncated or not JSON"),
    ],
)
def test_a_corrupted_checkpoint_is_refused_naming_the_file(
    make_config, tmp_path: Path, file: str, how: str, message: str
) -> None:
    train(make_config(), tmp_path)
    _damage(tmp_path / "checkpoints" / file, how)
    with pytest.raises(CheckpointError, match=message) as err:
        load_models(tmp_path / "checkpoints", "last")
    assert str(tmp_path / "checkpoints" / file) in str(err.value)
    assert "\n" not in str(err.value)


def test_nan_and_misshapen_weights_are_refused_by_tensor_name(make_config, tmp_path: Path) -> None:
    train(make_config(), tmp_path)
    path = tmp_path / "checkpoints" / "last.safetensors"
    tensors = load_file(str(path))
    name = next(k for k in tensors if k.startswith("model0.") and k.endswith("weight"))
    poisoned = {**tensors, name: torch.full_like(tensors[name], float("nan"))}
    save_file(poisoned, str(path))
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} holds NaN or infinite values"):
        load_models(tmp_path / "checkpoints", "last")
    save_file({**tensors, name: tensors[name][:1]}, str(path))
    with pytest.raises(CheckpointError, match=rf"{re.escape(name)} does not match the architecture"):
        load_models(tmp_path / "checkpoints", "last")


def test_resume_falls_back_to_the_previous_checkpoint_saying_so(
    make_config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = make_config(runner={"checkpoint_every": 10})
    train(config, tmp_path)
    previous = json.loads((tmp_path / "checkpoints" / "last.previous.json").read_text())["counters"]
    last = json.loads((tmp_path / "checkpoints" / "last.json").read_text())["counters"]
    assert previous["env_steps"] < last["env_steps"]
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    saved["runner"]["total_env_steps"] = 1200  # extend, so that the resume trains
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    _damage(tmp_path / "checkpoints" / "last.safetensors", "truncated")
    summary = resume(tmp_path)
    err = capsys.readouterr().err
    assert "last.safetensors: not a readable safetensors file" in err and "resuming from the previous" in err
    assert summary["env_steps"] == 1200
    log = pd.read_csv(tmp_path / "training_log.csv")
    assert not log.duplicated(["worker_id", "episode"]).any()
    kept_old = log[log["step"] <= previous["env_steps"]]
    assert len(log) - len(kept_old) == summary["episodes"] - previous["episodes"]


# renames of one save over an existing checkpoint: 2 to keep the old pair as <tag>.previous,
# then the new weights, then its JSON (the uninterrupted case checks the count)
SAVE_RENAMES = 4


@pytest.mark.parametrize("crash_before", range(SAVE_RENAMES + 1))
def test_a_save_stopped_at_any_rename_leaves_a_complete_checkpoint_to_resume(
    make_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_before: int
) -> None:
    """Kill -9 can land between any two renames of a save: whatever it leaves, a resume gets
    the weights and counters of one complete save (the new one, or the one it replaces), never
    new weights with old counters."""
    from uavrl.algo.optim import SharedAdam
    from uavrl.nn.models import build_model
    from uavrl.runners import checkpoint
    from uavrl.runners.session import model_spec

    config = make_config()
    model = build_model(model_spec(config))
    optimizer = SharedAdam(model.parameters(), lr=1e-3)

    def save(version: int) -> None:
        with torch.no_grad():
            for param in model.parameters():
                param.fill_(float(version))
        checkpoint.save_checkpoint(
            tmp_path, "last", [model], [optimizer], config.to_dict(), {"env_steps": version}
        )

    save(1)
    save(2)
    renames = 0
    real_replace = os.replace

    def replace_until_the_crash(src: str | Path, dst: str | Path) -> None:
        nonlocal renames
        if renames == crash_before:
            raise InterruptedError("killed")
        renames += 1
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace_until_the_crash)
    if crash_before < SAVE_RENAMES:
        with pytest.raises(InterruptedError):
            save(3)
    else:
        save(3)
        assert renames == SAVE_RENAMES  # the count above is the save's
    monkeypatch.undo()
    if crash_before == SAVE_RENAMES - 1:  # new weights beside the old JSON: refused, by name
        with pytest.raises(
            CheckpointError, match=r"last\.safetensors: written by another save than its last\.json"
        ):
            checkpoint.load_models(tmp_path, "last")

    restored = build_model(model_spec(config))
    meta = checkpoint.restore_training_state(
        tmp_path, "last", [restored], [SharedAdam(restored.parameters())]
    )
    version = meta["counters"]["env_steps"]
    assert version == (3 if crash_before == SAVE_RENAMES else 2)
    assert all(bool((p == float(version)).all()) for p in restored.parameters())
