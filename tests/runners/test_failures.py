"""Failures: a raising or dying worker stops the run cleanly; NaN updates are skipped, then stop."""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from tests.polling import wait_until
from uavrl.experiments.train import train
from uavrl.locking import ProcessLock
from uavrl.runners.checkpoint import load_models
from uavrl.runners.learner import NonFiniteError
from uavrl.runners.supervise import WorkerFailed, start_without_ctrl_c

FAULTY = "tests.runners.helper_envs:Faulty-v0"


def _faulty(make_config, fault: str, at_step: int, serial: bool, **runner: Any):
    return make_config(
        env={"id": FAULTY, "params": {"fault": fault, "at_step": at_step}, "worker_cells": None},
        runner={
            "serial": serial,
            "total_env_steps": 6000,
            "envs_per_worker": 1,
            "checkpoint_every": 1,
            **runner,
        },
        model={"hidden_size": 8, "recurrent": False},
    )


@pytest.mark.parametrize(("fault", "expected"), [("raise", "injected env failure"), ("exit", "code 3")])
def test_failing_worker_is_reported_and_the_run_stops_cleanly(
    make_config, tmp_path: Path, fault, expected
) -> None:
    # "exit" dies at step 120 of every incarnation: restarted once, then the run stops
    config = _faulty(make_config, fault, at_step=120, serial=False, max_restarts=1)
    with pytest.raises(WorkerFailed, match=expected) as err:
        train(config, tmp_path)
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
        # two incarnations of 11 episodes, numbered on across the restart; a killed process may
        # take the last rows still in its queue buffer with it, so the numbers may skip once,
        # where the first incarnation died, and never repeat
        assert 1 <= len(episodes) <= 22 and len(set(episodes)) == len(episodes)
        skips = [(a, b) for a, b in itertools.pairwise(episodes) if b != a + 1]
        assert episodes[0] == 1 and len(skips) <= 1 and episodes[-1] <= 22, episodes
        events = (tmp_path / "events.log").read_text()
        assert f"worker {failed} died (exit code 3); its rollout in flight is dropped; restart 1 of 1" in (
            events
        )
        assert "after 1 restarts (runner.max_restarts=1); stopping the run" in events
        assert "after 1 restarts" in str(err.value)
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()


def _kill_once(name: str, at_env_steps: int, signal_number: int = signal.SIGKILL) -> Any:
    """A progress hook (run by the runner's own process) that sends child ``name`` a signal
    (kill -9) once the run has ``at_env_steps`` env steps; records the pid it signalled."""
    killed: list[int] = []

    def hook(env_steps: int, models: Any) -> None:
        if killed or env_steps < at_env_steps:
            return
        (child,) = [p for p in mp.active_children() if p.name == name]
        os.kill(child.pid, signal_number)
        killed.append(child.pid)

    hook.killed = killed  # type: ignore[attr-defined]
    return hook


@pytest.mark.parametrize(("kind", "role"), [("a3c", "worker"), ("a3c_data", "actor"), ("impala", "actor")])
def test_a_killed_worker_is_restarted_and_the_run_trains_its_full_budget(
    make_config, tmp_path: Path, kind: str, role: str
) -> None:
    config = _faulty(make_config, "raise", at_step=10**9, serial=False, kind=kind)
    hook = _kill_once(f"uavrl-{role}-1", at_env_steps=1500)
    summary = train(config, tmp_path, hook=hook)
    assert len(hook.killed) == 1
    assert summary["status"] == "finished"
    assert summary["env_steps"] >= config.runner.total_env_steps
    assert summary["faults"]["restarts"] == [0, 1]
    events = (tmp_path / "events.log").read_text().splitlines()
    assert len(events) == 1 and f"{role} 1 died (exit code -9)" in events[0] and "restart 1 of 3" in events[0]
    log = pd.read_csv(tmp_path / "training_log.csv")
    for _, rows in log.groupby("worker_id"):
        # numbers go on across the restart; rows the killed process had not yet flushed from
        # its queue buffer are lost with it (a few at most), none written twice
        episodes = sorted(rows["episode"])
        assert len(set(episodes)) == len(episodes) and episodes[-1] - len(episodes) <= 3
    assert set(log["worker_id"]) == {0, 1}
    late = log[log["step"] > 1500 + 1000]
    assert 1 in set(late["worker_id"])  # the restarted worker acts again


@pytest.mark.parametrize(("kind", "role"), [("a3c", "worker"), ("impala", "actor")])
def test_a_stopped_worker_is_killed_once_silent_and_the_run_finishes(
    make_config, tmp_path: Path, kind: str, role: str
) -> None:
    """A child stopped (SIGSTOP: anywhere, inside a lock or a message too) stops beating; after
    runner.heartbeat_timeout_s it is killed and restarted, and the run trains its full budget."""
    # 10 s: far beyond an update here, even on a loaded machine, so only the stopped one is silent
    config = _faulty(make_config, "raise", at_step=10**9, serial=False, kind=kind, heartbeat_timeout_s=10)
    hook = _kill_once(f"uavrl-{role}-1", at_env_steps=1500, signal_number=signal.SIGSTOP)
    summary = train(config, tmp_path, hook=hook)
    assert len(hook.killed) == 1
    assert summary["status"] == "finished" and summary["env_steps"] >= config.runner.total_env_steps
    if kind == "impala" and summary["faults"]["restarts"] == [0, 0]:
        # the other actor spent the budget within the timeout: the run ended without waiting
        # for the stopped one, and stopped it (SIGKILL: a stopped process ignores SIGTERM)
        assert not (tmp_path / "events.log").exists()
        return
    assert summary["faults"]["restarts"] == [0, 1]
    events = (tmp_path / "events.log").read_text().splitlines()
    # the other one may have been waiting on a lock the stopped one held: spared, not killed
    spared = [e for e in events if f"{role} 0 silent for" in e and f"maybe waiting on {role} 1" in e]
    events = [e for e in events if e not in spared]
    assert len(events) == 2, events
    assert f"{role} 1 " in events[0] and "silent for" in events[0]
    assert "runner.heartbeat_timeout_s=10); killing it" in events[0]
    assert f"{role} 1 died (exit code -9)" in events[1]
    log = pd.read_csv(tmp_path / "training_log.csv")
    assert not log.duplicated(["worker_id", "episode"]).any()
    if kind == "a3c":  # each worker trains its share: the restarted one acts again (an impala
        # actor restarted late may find the budget spent by the others)
        assert 1 in set(log.loc[log["step"] > 1500 + 1000, "worker_id"])


@pytest.mark.parametrize("stop_first", [False, True], ids=["killed", "stopped_then_killed"])
def test_a_process_lock_held_by_a_killed_process_is_free_at_once(stop_first: bool) -> None:
    """The kernel releases a ProcessLock when its holder dies inside it, stopped (SIGSTOP)
    first or not; while the holder lives, nobody else gets it."""
    ctx = mp.get_context("spawn")
    lock = ProcessLock()
    holding = ctx.RawValue("b", 0)
    holder = ctx.Process(target=_hold_forever, args=(lock, holding))
    holder.start()
    assert wait_until(lambda: holding.value)
    if stop_first:
        os.kill(holder.pid, signal.SIGSTOP)
    taken = threading.Event()

    def take() -> None:
        with lock:
            taken.set()

    waiter = threading.Thread(target=take, daemon=True)
    waiter.start()
    assert not taken.wait(0.5)  # held by the live (or stopped) holder
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=30)
    assert taken.wait(10)  # released by the holder's death
    waiter.join(timeout=10)
    with lock:  # and free again afterwards
        pass


def _hold_forever(lock: ProcessLock, holding: Any) -> None:
    with lock:
        holding.value = 1
        time.sleep(600)


@pytest.mark.parametrize("guarded", [True, False], ids=["started_without_ctrl_c", "plain_start"])
def test_a_ctrl_c_during_a_child_start_up_does_not_kill_it(guarded: bool) -> None:
    """The terminal sends Ctrl-C to the whole group; a child still importing (it ignores SIGINT
    only once its own code runs) survives it when started by ``start_without_ctrl_c``."""
    # as in a terminal (a test run started in the background has SIGINT ignored, and a child
    # would inherit that)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        child = mp.get_context("spawn").Process(target=time.sleep, args=(0.5,))
        if guarded:
            start_without_ctrl_c(child)
        else:
            child.start()
        os.kill(child.pid, signal.SIGINT)  # at once: the child is still starting its interpreter
        child.join(timeout=60)
        assert (child.exitcode == 0) is guarded, child.exitcode
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the parent's is back
    finally:
        signal.signal(signal.SIGINT, outer)


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
    config = _faulty(make_config, "raise", at_step=120, serial=False, kind=kind)
    with pytest.raises(WorkerFailed, match=r"actor \d failed") as err:
        train(config, tmp_path)
    assert "injected env failure" in str(err.value) and "helper_envs.py" in str(err.value)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()
