"""Checkpoints: safetensors + JSON, identical actions after a round trip, resume continues."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

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
    import pytest

    from uavrl.errors import ConfigError

    train(make_config(), tmp_path)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(make_config(), tmp_path)
