"""write_atomically: the old file or the new one, never a part."""

from __future__ import annotations

from pathlib import Path

import pytest

from uavrl import fileio
from uavrl.experiments.rundir import RunDir


def test_the_new_text_replaces_the_old_whole(tmp_path: Path) -> None:
    path = tmp_path / "summary.json"
    fileio.write_atomically(path, "old")
    fileio.write_atomically(path, "new" * 1000)
    assert path.read_text() == "new" * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # nothing staged is left


def test_a_write_stopped_before_its_rename_leaves_the_old_summary_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunDir(tmp_path)
    run.write_summary({"status": "interrupted", "env_steps": 120})

    def killed(src: object, dst: object) -> None:
        raise InterruptedError("killed")

    monkeypatch.setattr(fileio.os, "replace", killed)
    with pytest.raises(InterruptedError):
        run.write_summary({"status": "finished", "env_steps": 600, "eval": {"mean_return": 1.0}})
    monkeypatch.undo()
    assert run.summary() == {"status": "interrupted", "env_steps": 120}
