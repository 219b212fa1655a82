"""Interrupted runs, with real processes and signals: Ctrl-C, kill -9 of the parent, resume.

Each test starts ``uavrl train`` as a subprocess in its own process group, waits until it has
checkpointed and logged, then signals it as a terminal or an operator would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.runners.conftest import small_config


def _config_file(tmp_path: Path, total_env_steps: int) -> Path:
    config = small_config(
        runner={"serial": False, "total_env_steps": total_env_steps, "checkpoint_every": 10},
        model={"hidden_size": 16, "recurrent": False},
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def _uavrl(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from uavrl.cli import main; sys.exit(main())", *args]


def _start(tmp_path: Path, run_dir: Path, total_env_steps: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        _uavrl("train", "--config", str(_config_file(tmp_path, total_env_steps)), "--run-dir", str(run_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # ... with Ctrl-C at its default: a test run launched in the background (nohup, `&` in a
        # script) has SIGINT ignored, the child would inherit that, and Python then never turns
        # SIGINT into KeyboardInterrupt
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_until_logging(run_dir: Path, proc: subprocess.Popen[str], rows: int = 40) -> None:
    deadline = time.monotonic() + 120
    log = run_dir / "training_log.csv"
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended early: {proc.communicate()[0]}"
        checkpointed = (run_dir / "checkpoints" / "last.json").exists()
        if checkpointed and log.exists() and sum(1 for _ in log.open()) > rows:
            return
        time.sleep(0.2)
    raise AssertionError("the run did not checkpoint and log in time")


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


def _wait_for_no_members(pgid: int, seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := _group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def _communicate_or_dump(proc: subprocess.Popen[str], timeout: float) -> str:
    """The run's output once it exits; if it hangs, fail with the stack of each of its threads
    (``uavrl`` prints them on SIGUSR1) and kill its group."""
    try:
        return proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        raise AssertionError(f"the run did not exit within {timeout} s; its threads:\n{out}") from None


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads process groups from /proc")
def test_ctrl_c_checkpoints_prints_one_line_and_exits_130(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = _start(tmp_path, run_dir, total_env_steps=10_000_000)
    _wait_until_logging(run_dir, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    out = _communicate_or_dump(proc, timeout=60)
    assert proc.returncode == 130, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert lines[-1].startswith("interrupted at ") and f"uavrl train --resume {run_dir}" in lines[-1]
    assert len(lines) == 2, out  # the run directory line, then the one interruption line
    summary = json.loads((run_dir / "summary.json").read_text())
    meta = json.loads((run_dir / "checkpoints" / "last.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["env_steps"] == meta["counters"]["env_steps"] > 0
    assert _wait_for_no_members(proc.pid, 10) == []


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads process groups from /proc")
def test_kill_9_leaves_no_orphan_and_resume_continues_the_log(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    total = 30_000
    proc = _start(tmp_path, run_dir, total_env_steps=total)
    _wait_until_logging(run_dir, proc, rows=80)
    children = [pid for pid in _group_members(proc.pid) if pid != proc.pid]
    assert len(children) >= 3  # two workers and the writer (and multiprocessing's tracker)
    time.sleep(1.0)  # let rows past the checkpoint reach the log
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert _wait_for_no_members(proc.pid, 15) == [], "a child outlived its killed parent"
    checkpointed = json.loads((run_dir / "checkpoints" / "last.json").read_text())["counters"]

    resumed = subprocess.run(
        _uavrl("train", "--resume", str(run_dir)), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    said = " ".join(resumed.stdout.split())
    assert f"from its last checkpoint, at {checkpointed['env_steps']:,} of" in said, said
    log = pd.read_csv(run_dir / "training_log.csv")
    assert not log.duplicated(["worker_id", "episode"]).any()
    for _, rows in log.groupby("worker_id"):
        assert rows["episode"].is_monotonic_increasing and rows["step"].is_monotonic_increasing
        assert rows["wall_time"].is_monotonic_increasing  # the clock continues across the resume
    # (across workers, rows reach the writer in no fixed order: a worker descheduled between
    # booking its steps and its queue's feeder thread writing them lands several updates late)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["env_steps"] >= total
    # every episode of the resumed session is logged once, after the checkpoint's rows
    new_rows = log[log["step"] > checkpointed["env_steps"]]
    assert len(new_rows) == summary["episodes"] - checkpointed["episodes"] > 0
    assert (log.loc[: len(log) - len(new_rows) - 1, "step"] <= checkpointed["env_steps"]).all()


def test_resume_refuses_new_values_and_leaves_a_finished_run_alone(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    config = _config_file(tmp_path, total_env_steps=600)
    done = subprocess.run(
        _uavrl("train", "--config", str(config), "--run-dir", str(run_dir)), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    refused = subprocess.run(
        _uavrl("train", "--resume", str(run_dir), "--set", "runner.total_env_steps=900"),
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--set cannot change it" in refused.stderr
    before = (run_dir / "summary.json").read_bytes()
    again = subprocess.run(_uavrl("train", "--resume", str(run_dir)), capture_output=True, text=True)
    assert again.returncode == 0 and "has finished; nothing to resume" in again.stdout
    assert (run_dir / "summary.json").read_bytes() == before
