"""Worker processes of one run: their frame, their locks, and restarts after a death.

A worker that *raises* stops the run (a bug or a diverged update would raise again); a worker
that *dies* without a traceback (kill -9, out of memory, a crashed extension) is started again,
up to ``runner.max_restarts`` times per worker, and the run goes on. Its in-flight rollout is
lost and was never booked, so the run still trains its full env-step budget.

A process killed inside a critical section would hold its lock forever and hang the others.
The locks the workers share are :class:`OwnedLock` s, which record their holder, so the
supervisor frees the lock a dead worker held before it starts the replacement.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_module
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

JOIN_TIMEOUT_S = 10.0
TRACEBACK_GRACE_S = 2.0  # a worker that raised may exit before its traceback reaches the queue


MAIN_GUARD_HINT = (
    "uavrl: a child process imported your script and reached a uavrl call: wrap the script's "
    'code in `if __name__ == "__main__":` (uavrl spawns its processes, and each one imports the '
    "main script)"
)


def refuse_unguarded_start() -> None:
    """Stop a spawned child that re-imports the user's main script and reaches a uavrl entry
    point (a script without a main guard): in one line, instead of starting the run again inside
    every child. A child imports the main script while ``_inheriting`` is set (spawn's bootstrap).
    """
    if getattr(mp.current_process(), "_inheriting", False):
        raise SystemExit(MAIN_GUARD_HINT)


class WorkerFailed(RuntimeError):
    """A worker raised, or died more often than ``runner.max_restarts`` allows; the message
    carries its traceback or exit code."""


class OwnedLock:
    """A lock across processes that records the pid holding it.

    A plain (non-recursive) semaphore may be released by any process, so when the holder is
    killed inside the critical section, :meth:`free_if_held_by` releases it on its behalf.
    """

    def __init__(self, context: Any = None) -> None:
        ctx = context or mp.get_context("spawn")
        self._lock = ctx.Lock()
        self._holder = ctx.Value("q", 0, lock=False)

    def __enter__(self) -> OwnedLock:
        self._lock.acquire()
        self._holder.value = os.getpid()
        return self

    def __exit__(self, *exc: object) -> None:
        self._holder.value = 0
        self._lock.release()

    def free_if_held_by(self, pid: int) -> bool:
        """Release the lock if process ``pid`` (dead) holds it; True if it did."""
        if pid == 0 or self._holder.value != pid:
            return False
        self._holder.value = 0
        self._lock.release()
        return True


def start_without_ctrl_c(process: Any) -> None:
    """Start ``process`` with Ctrl-C ignored from its first instruction.

    A child ignores SIGINT itself (:func:`child_process`, the writer), but only after its
    imports, which take seconds: a Ctrl-C in that window, sent to the whole process group by the
    terminal, would kill it there. An ignored SIGINT is inherited across the spawn's exec (and
    Python then installs no KeyboardInterrupt handler), so the parent ignores it while it starts
    the child (a Ctrl-C in those milliseconds is lost; the next one is not). Off the main thread
    the disposition cannot be changed; the child starts as is.
    """
    if threading.current_thread() is not threading.main_thread():
        process.start()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        process.start()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def child_process(errors: Any, worker_id: int) -> Iterator[Any]:
    """The frame of a worker or actor process: one torch thread, Ctrl-C left to the parent
    (which stops us in order), any exception sent to ``errors`` with its traceback and exit
    code 1. Yields the parent process, whose death (kill -9) the caller must notice."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield mp.parent_process()
    except BaseException:
        errors.put((worker_id, traceback.format_exc()))
        sys.exit(1)


def stop_processes(processes: Sequence[Any], stop: Any) -> None:
    """Set ``stop``, give the processes ``JOIN_TIMEOUT_S`` to finish, terminate the rest."""
    stop.set()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()
            p.join()


ProcessFactory = Callable[[int, int], Any]
"""``(worker_id, incarnation) -> an unstarted process``; incarnation 0 is the first start."""


class Supervisor:
    """Starts N worker processes, watches them, and restarts one that dies.

    Args:
        make_process: builds worker ``i``'s process for its ``incarnation`` (0, 1, ...); a
            restarted worker should draw new env streams, not replay its first ones.
        errors: the queue where :func:`child_process` reports tracebacks.
        max_restarts: restarts allowed per worker.
        locks: the locks the workers share; a dead worker's hold on one is released.
        on_event: told, in words, of every death and restart (the run's event log).
        role: ``"worker"`` or ``"actor"``, for messages.
    """

    def __init__(
        self,
        make_process: ProcessFactory,
        n: int,
        errors: Any,
        stop: Any,
        max_restarts: int,
        locks: Sequence[OwnedLock] = (),
        on_event: Callable[[str], None] = lambda message: None,
        role: str = "worker",
    ) -> None:
        self.make_process = make_process
        self.errors = errors
        self.stop = stop
        self.max_restarts = max_restarts
        self.locks = list(locks)
        self.on_event = on_event
        self.role = role
        self.restarts = [0] * n
        self.processes = [make_process(i, 0) for i in range(n)]

    def start(self) -> None:
        for p in self.processes:
            start_without_ctrl_c(p)

    def any_alive(self) -> bool:
        return any(p.is_alive() for p in self.processes)

    def check(self) -> list[int]:
        """Raise :class:`WorkerFailed` for a worker that raised or died once too often;
        restart the others that died. Returns the ids of the restarted workers."""
        try:
            worker_id, trace = self.errors.get_nowait()
        except queue_module.Empty:
            pass
        else:
            raise WorkerFailed(f"{self.role} {worker_id} failed:\n{trace}")
        restarted = []
        for i, p in enumerate(self.processes):
            if p.exitcode in (None, 0):
                continue
            self._raise_if_it_raised(i, p.exitcode)
            if self.restarts[i] >= self.max_restarts:
                self.on_event(
                    f"{self.role} {i} died (exit code {p.exitcode}) after {self.restarts[i]} restarts "
                    f"(runner.max_restarts={self.max_restarts}); stopping the run"
                )
                raise WorkerFailed(
                    f"{self.role} {i} failed: {self.role} process exited with code {p.exitcode} "
                    f"after {self.restarts[i]} restarts (runner.max_restarts={self.max_restarts})"
                )
            freed = [n for n, lock in enumerate(self.locks) if lock.free_if_held_by(p.pid)]
            self.restarts[i] += 1
            self.on_event(
                f"{self.role} {i} died (exit code {p.exitcode}); its rollout in flight is dropped; "
                f"restart {self.restarts[i]} of {self.max_restarts}"
                + (f"; freed {len(freed)} lock(s) it held" if freed else "")
            )
            replacement = self.make_process(i, self.restarts[i])
            start_without_ctrl_c(replacement)
            self.processes[i] = replacement
            restarted.append(i)
        return restarted

    def _raise_if_it_raised(self, worker_id: int, exitcode: int) -> None:
        """A worker that raised exits with code 1 right after queueing its traceback: wait for
        the traceback a moment before calling the exit a death."""
        if exitcode != 1:
            return
        try:
            reporter, trace = self.errors.get(timeout=TRACEBACK_GRACE_S)
        except queue_module.Empty:
            return
        raise WorkerFailed(f"{self.role} {reporter} failed:\n{trace}")

    def stop_all(self) -> None:
        stop_processes(self.processes, self.stop)

    @property
    def total_restarts(self) -> int:
        return sum(self.restarts)
