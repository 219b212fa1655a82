"""A2C: synchronous, bitwise reproducible for a fixed seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from uavrl.runners.a2c import run_a2c


def test_a2c_is_bitwise_reproducible(make_config, tmp_path: Path) -> None:
    config = make_config(runner={"kind": "a2c", "total_env_steps": 900})
    first = run_a2c(config, tmp_path / "a")
    second = run_a2c(config, tmp_path / "b")
    for p, q in zip(first.models[0].parameters(), second.models[0].parameters(), strict=True):
        assert torch.equal(p, q)
    log_a = pd.read_csv(tmp_path / "a" / "training_log.csv")
    log_b = pd.read_csv(tmp_path / "b" / "training_log.csv")
    pd.testing.assert_frame_equal(log_a.drop(columns="wall_time"), log_b.drop(columns="wall_time"))
    other = run_a2c(config.model_copy(update={"seed": 4}), tmp_path / "c")
    assert not torch.equal(next(other.models[0].parameters()), next(first.models[0].parameters()))


def test_a2c_steps_every_worker_cell_in_one_batch(make_config, tmp_path: Path) -> None:
    config = make_config(runner={"kind": "a2c", "total_env_steps": 900})
    result = run_a2c(config, tmp_path)
    # one update = 2 workers x 3 envs x 5 steps = 30 env steps
    assert result.counters["updates"] == 30 and result.counters["env_steps"] == 900
    log = pd.read_csv(tmp_path / "training_log.csv")
    assert set(log["worker_id"]) == {0, 1}
