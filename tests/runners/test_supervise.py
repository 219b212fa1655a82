"""The supervisor's silence policy, on bare child processes: of children silent together, the
stopped one dies and the one waiting on its lock is spared."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import pytest

from tests.polling import wait_until
from uavrl.errors import ConfigError
from uavrl.locking import ProcessLock
from uavrl.runners.supervise import CallAside, ChildLink, Supervisor, WorkerFailed


def _beat_under_lock(lock: ProcessLock, link: ChildLink, stop_inside: Any) -> None:
    """Beat once per turn of the lock; once ``stop_inside`` is set (a shared flag, or None),
    stop itself while holding it."""
    while not link.stop.is_set():
        with lock:
            link.beat()
            if stop_inside is not None and stop_inside.value:
                os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(0.01)
    link.finished()


def test_of_two_silent_children_only_the_stopped_one_dies_the_one_waiting_on_its_lock_lives() -> None:
    ctx = mp.get_context("spawn")
    lock = ProcessLock()
    events: list[str] = []
    arm = ctx.RawValue("b", 0)

    def make_process(worker_id: int, incarnation: int, link: ChildLink) -> Any:
        # child 1 stops inside the lock on its first start only; child 0 waits on it meanwhile
        stop_inside = arm if worker_id == 1 and incarnation == 0 else None
        return ctx.Process(target=_beat_under_lock, args=(lock, link, stop_inside), daemon=True)

    supervisor = Supervisor(
        make_process,
        2,
        ctx,
        max_restarts=1,
        on_message=lambda child, message: None,
        heartbeat_timeout_s=1.0,
        on_event=events.append,
    )
    supervisor.start()
    try:
        assert wait_until(lambda: all(supervisor.heartbeats.started(i) for i in range(2)), timeout_s=120)
        arm.value = 1
        restarted: list[int] = []
        assert wait_until(lambda: bool(restarted.extend(supervisor.check()) or restarted), timeout_s=60)
        assert restarted == [1] and supervisor.restarts == [0, 1], events
        kills = [e for e in events if "killing it" in e]
        assert len(kills) == 1 and kills[0].startswith("worker 1 "), events
        assert any(e.startswith("worker 0 silent for") and "maybe waiting on worker 1" in e for e in events)
        # child 0 was silent too (blocked on the lock), was spared, and beats again once the
        # stopped holder's death frees the lock
        assert wait_until(lambda: supervisor.heartbeats.silent_for(0) < 0.5, timeout_s=30)
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.05)
        assert supervisor.restarts == [0, 1] and supervisor.processes[0].is_alive()
    finally:
        supervisor.stop_all()
    assert all(p.exitcode == 0 for p in supervisor.processes)


def _sum_after(seconds: float, *values: int) -> int:
    time.sleep(seconds)
    return sum(values)


def _refuse(field: str) -> None:
    raise ConfigError(f"{field}: refused")


def _divide(a: int, b: int) -> float:
    return a / b


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_call_aside_returns_its_result_and_raises_what_it_raised() -> None:
    aside = CallAside("sum", _sum_after, 0.0, 1, 2, 3)
    try:
        assert aside.result() == 6
    finally:
        aside.close()
    aside = CallAside("refusal", _refuse, "eval.episodes")
    with pytest.raises(ConfigError, match=r"eval\.episodes: refused"):
        aside.result()  # a ConfigError comes back as it was raised
    aside.close()
    aside = CallAside("division", _divide, 1, 0)
    with pytest.raises(WorkerFailed, match=r"(?s)division raised in its process.*ZeroDivisionError"):
        aside.result()
    aside.close()


def test_a_call_aside_that_dies_is_named_and_one_still_running_is_ended_by_close() -> None:
    aside = CallAside("victim", _die)
    with pytest.raises(WorkerFailed, match=r"victim: its process died \(exit code -9\)"):
        aside.result()
    aside.close()
    slow = CallAside("slow", _sum_after, 600.0, 1)
    process = slow._process
    assert wait_until(lambda: process.is_alive(), timeout_s=60)
    started = time.monotonic()
    slow.close()
    assert not process.is_alive() and time.monotonic() - started < 15
