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
