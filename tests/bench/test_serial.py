"""`uavrl bench serial`: one study run's throughput, per-worker and batched acting."""

from __future__ import annotations

from bench import serial
from tests.runners.conftest import small_config


def test_a_config_whose_workers_step_together_is_timed_batched_only() -> None:
    """The default's centralised critic reads the whole world: its workers cannot act alone
    (the per-worker row trained on NaN values and stopped the bench)."""
    alone = small_config()
    together = small_config(env={"shared_pool": True}, model={"central_critic": True})
    for config, rows in ((alone, ["per_worker", "batched"]), (together, ["batched"])):
        table = serial.run(config, seconds=0.3, rounds=1)
        assert table["acting"].tolist() == rows
        assert (table["steps_per_s"] > 0).all()
        assert (table["s_per_2M_steps"] == (2_000_000 / table["steps_per_s"]).round(1)).all()
