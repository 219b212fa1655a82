"""The writer's TensorBoard scalars: read back with TensorBoard's own event reader."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from uavrl.runners.metrics import ScalarWriter


def test_scalars_read_back_with_their_steps_and_values(tmp_path: Path) -> None:
    writer = ScalarWriter(tmp_path)
    for step, value in [(10, 1.5), (20, -2.25), (30, 7.0)]:
        writer.add_scalar("all/return", value, step)
    writer.add_scalar("eval/mean_return", 3.0, 20)
    writer.close()

    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["all/return", "eval/mean_return"]
    assert [(e.step, e.value) for e in events.Scalars("all/return")] == [(10, 1.5), (20, -2.25), (30, 7.0)]
    assert [(e.step, e.value) for e in events.Scalars("eval/mean_return")] == [(20, 3.0)]


def test_the_writer_logs_learning_rate_entropy_coefficient_and_throughput(tmp_path: Path) -> None:
    """Every training row's lr and entropy coefficient per worker, and the run's env steps per
    second over windows of at least THROUGHPUT_WINDOW_S of run time."""
    from uavrl.runners.metrics import THROUGHPUT_WINDOW_S, MetricsWriter

    writer = MetricsWriter(tmp_path, total_env_steps=10_000, start_steps=0, tensorboard=True, progress=False)
    rows = [
        {
            "step": 1000 * i,
            "worker_id": 0,
            "episode": i,
            "return": 1.0,
            "length": 10,
            "policy_loss": 0.1,
            "value_loss": 0.2,
            "entropy": 1.0,
            "grad_norm": 0.5,
            "lr": 1e-3 * (1 - i / 10),
            "entropy_coef": 0.01,
            "updates": i,
            "wall_time": THROUGHPUT_WINDOW_S * i / 2,  # 1000 steps per half window
        }
        for i in range(1, 6)
    ]
    writer.put(rows)
    writer.stop()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert {"worker_0/lr", "worker_0/entropy_coef", "all/env_steps_per_s"} <= set(events.Tags()["scalars"])
    assert [round(e.value, 6) for e in events.Scalars("worker_0/lr")] == [round(r["lr"], 6) for r in rows]
    rates = [(e.step, e.value) for e in events.Scalars("all/env_steps_per_s")]
    assert rates == [(3000, 1000 / (THROUGHPUT_WINDOW_S / 2)), (5000, 1000 / (THROUGHPUT_WINDOW_S / 2))]
