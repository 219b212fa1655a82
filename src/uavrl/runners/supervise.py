"""Worker processes of one run: their frame, their channels, and restarts after a death.

A worker that *raises* stops the run (a bug or a diverged update would raise again); a worker
that *dies* without a traceback (kill -9, out of memory, a crashed extension) is started again,
up to ``runner.max_restarts`` times per worker, and the run goes on. Its in-flight rollout is
lost and was never booked, so the run still trains its full env-step budget. A worker that stops
showing signs of life (stopped with SIGSTOP, stuck) for ``runner.heartbeat_timeout_s`` is killed,
and then restarted like any dead worker.

Nothing a worker shares can be held by it after its death (:mod:`uavrl.runners.ipc`): its locks
are :class:`~uavrl.locking.ProcessLock` s, which the kernel releases; it writes to the parent
through a pipe of its own; the stop signal is a lock-free flag.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import queue as queue_module
import signal
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from uavrl.errors import ConfigError
from uavrl.runners.ipc import ERROR, Channel, Handler, Heartbeats, Inbox, StopFlag

JOIN_TIMEOUT_S = 10.0
TERMINATE_GRACE_S = 2.0
# A child's start-up (interpreter, imports, envs) may take this long before its first heartbeat
# (tens of seconds on a loaded machine).
STARTUP_TIMEOUT_S = 300.0
PR_SET_PDEATHSIG = 1  # prctl(2)
TRACEBACK_GRACE_S = 2.0  # a worker that raised exits right after sending its traceback


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
def child_process(channel: Channel, worker_id: int) -> Iterator[Any]:
    """The frame of a worker or actor process: one torch thread, Ctrl-C left to the parent
    (which stops us in order), any exception sent through ``channel`` with its traceback and
    exit code 1. Yields the parent process, whose death (kill -9) the caller must notice."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = mp.parent_process()
    die_with_parent(parent)
    try:
        yield parent
    except BaseException:
        channel.send((ERROR, worker_id, traceback.format_exc()))
        sys.exit(1)


class CallAside:
    """``fn(*args)`` computed in a spawned process while this one does other work (the
    references of a run while it trains). :meth:`result` waits for it and raises what it raised
    (a :class:`~uavrl.errors.ConfigError` as it was, anything else with its traceback);
    :meth:`close` ends it if it still runs. The child: one torch thread, Ctrl-C left to the
    parent, killed with the parent. ``fn`` and ``args`` must pickle (``fn`` at module level)."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self.name = name
        self._receive, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=_call_aside, args=(send, fn, args), name=f"uavrl-{name}")
        start_without_ctrl_c(self._process)
        send.close()  # the child's end, held by the child alone: its death ends our recv with EOF
        # not a daemon (it may start processes of its own), so one never closed would hold up
        # the interpreter's exit until it finished: ended at exit, or when garbage collected
        self._end = weakref.finalize(self, _end_process, self._process)

    def result(self) -> Any:
        try:
            ok, value = self._receive.recv()
        except EOFError:
            self._process.join(timeout=JOIN_TIMEOUT_S)
            raise WorkerFailed(
                f"{self.name}: its process died (exit code {self._process.exitcode}) before it finished"
            ) from None
        self._process.join(timeout=JOIN_TIMEOUT_S)
        if ok:
            return value
        if isinstance(value, ConfigError):
            raise value
        raise WorkerFailed(f"{self.name} raised in its process:\n{value}")

    def close(self) -> None:
        self._receive.close()
        self._end()


def _end_process(process: Any) -> None:
    """Terminate ``process`` if it still runs (kill it if that does not end it), and join it."""
    if process.is_alive():
        process.terminate()
        process.join(timeout=TERMINATE_GRACE_S)
    if process.is_alive():
        process.kill()
    process.join(timeout=JOIN_TIMEOUT_S)


def _call_aside(send: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(mp.parent_process())
    try:
        outcome: tuple[bool, Any] = (True, fn(*args))
    except ConfigError as error:
        outcome = (False, error)
    except BaseException:
        outcome = (False, traceback.format_exc())
    send.send(outcome)


def die_with_parent(parent: Any) -> None:
    """Have the kernel kill this process when its parent dies (Linux): even stopped (SIGSTOP),
    when it cannot notice the death itself, it does not outlive the run. A parent that died
    before the request was made is noticed here."""
    if parent is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent.pid:
        os._exit(1)


def process_status(pid: int) -> tuple[str, int] | None:
    """Process ``pid``'s state letter (``R``, ``S``, ``T`` stopped, ``Z`` zombie...) and parent
    pid, from /proc (Linux); None where it cannot be read (gone, or another system)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1])
    except (OSError, IndexError, ValueError):
        return None


def stop_processes(processes: Sequence[Any], stop: StopFlag) -> None:
    """Set ``stop``, give the processes ``JOIN_TIMEOUT_S`` to finish, then end the rest: SIGTERM,
    and SIGKILL for one that is stopped (SIGSTOP) or ignores it."""
    stop.set()
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for p in processes:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()
            p.join(timeout=TERMINATE_GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()


ProcessFactory = Callable[[int, int, "ChildLink"], Any]
"""``(worker_id, incarnation, link) -> an unstarted process``; incarnation 0 is the first start;
the process gets ``link`` (its channel to the parent, the stop flag and its heartbeat)."""


class ChildLink:
    """What one child process is handed to talk to its supervisor, all of it lock-free: its own
    channel to the parent, the run's stop flag, and its heartbeat slot."""

    def __init__(self, child: int, channel: Channel, stop: StopFlag, heartbeats: Heartbeats) -> None:
        self.child = child
        self.channel = channel
        self.stop = stop
        self.heartbeats = heartbeats

    def beat(self) -> None:
        """Show the supervisor this child is working (at least once per heartbeat timeout)."""
        self.heartbeats.beat(self.child)

    def finished(self) -> None:
        """Tell the supervisor this child's work is done: its exit may take a while."""
        self.heartbeats.finished(self.child)


class Supervisor:
    """Starts N worker processes, watches them, and restarts one that dies or falls silent.

    Args:
        make_process: builds worker ``i``'s process for its ``incarnation`` (0, 1, ...) and its
            :class:`ChildLink`; a restarted worker should draw new env streams, not replay its
            first ones.
        ctx: the multiprocessing context.
        max_restarts: restarts allowed per worker.
        on_message: called (in a reader thread) with every message a child sends but an error:
            training-log rows, rollouts.
        heartbeat_timeout_s: a worker silent this long (no :meth:`ChildLink.beat`) is killed.
        on_event: told, in words, of every death and restart (the run's event log).
        role: ``"worker"`` or ``"actor"``, for messages.
        names: what messages call the children that are not a ``role`` (the inference server).
    """

    def __init__(
        self,
        make_process: ProcessFactory,
        n: int,
        ctx: Any,
        max_restarts: int,
        on_message: Handler,
        heartbeat_timeout_s: float,
        on_event: Callable[[str], None] = lambda message: None,
        role: str = "worker",
        names: dict[int, str] | None = None,
    ) -> None:
        self.make_process = make_process
        self.max_restarts = max_restarts
        self.on_message = on_message
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.on_event = on_event
        self.role = role
        self.names = names or {}
        self.stop = StopFlag(ctx)
        self.heartbeats = Heartbeats(n, ctx)
        self.errors: queue_module.Queue[tuple[int, str]] = queue_module.Queue()
        self.inbox = Inbox(ctx, self._dispatch)
        self.restarts = [0] * n
        self.processes: list[Any] = []
        self._stopped_since: dict[int, float] = {}  # children seen stopped in their start-up

    def name(self, i: int) -> str:
        """Child ``i`` in messages (``actor 1``, ``the inference server``)."""
        return self.names.get(i, f"{self.role} {i}")

    def _dispatch(self, child: int, message: tuple[Any, ...]) -> None:
        if message[0] == ERROR:
            self.errors.put((message[1], message[2]))
        else:
            self.on_message(child, message)

    def _spawn(self, worker_id: int, incarnation: int) -> Any:
        channel = self.inbox.open(worker_id)
        self.heartbeats.starting(worker_id)
        process = self.make_process(
            worker_id, incarnation, ChildLink(worker_id, channel, self.stop, self.heartbeats)
        )
        start_without_ctrl_c(process)
        self.inbox.started(channel)
        return process

    def start(self) -> None:
        self.processes = [self._spawn(i, 0) for i in range(len(self.restarts))]

    def any_alive(self) -> bool:
        return any(p.is_alive() for p in self.processes)

    def check(self) -> list[int]:
        """Raise :class:`WorkerFailed` for a worker that raised or died once too often; kill
        a silent one; restart the others that died. Returns the ids of the restarted workers."""
        try:
            worker_id, trace = self.errors.get_nowait()
        except queue_module.Empty:
            pass
        else:
            raise WorkerFailed(f"{self.name(worker_id)} failed:\n{trace}")
        self._kill_silent()
        restarted = []
        for i, p in enumerate(self.processes):
            if p.exitcode in (None, 0):
                continue
            self._raise_if_it_raised(i, p.exitcode)
            if self.restarts[i] >= self.max_restarts:
                self.on_event(
                    f"{self.name(i)} died (exit code {p.exitcode}) after {self.restarts[i]} restarts "
                    f"(runner.max_restarts={self.max_restarts}); stopping the run"
                )
                raise WorkerFailed(
                    f"{self.name(i)} failed: its process exited with code {p.exitcode} "
                    f"after {self.restarts[i]} restarts (runner.max_restarts={self.max_restarts})"
                )
            self.restarts[i] += 1
            self.on_event(
                f"{self.name(i)} died (exit code {p.exitcode}); its rollout in flight is dropped; "
                f"restart {self.restarts[i]} of {self.max_restarts}"
            )
            self.processes[i] = self._spawn(i, self.restarts[i])
            restarted.append(i)
        return restarted

    def _kill_silent(self) -> None:
        """Kill a worker silent for the heartbeat timeout; in its start-up (no beat yet), one
        stopped (SIGSTOP) that long, or one still starting after :data:`STARTUP_TIMEOUT_S`.

        When one is silent that long, the culprits die: the children stopped (SIGSTOP: they keep
        their locks, however short their silence yet), or else the silent ones still running (a
        loop that never beats), or else all silent ones. The other silent ones may be waiting on
        a culprit's lock: they get one more timeout from now, and die after it if still silent."""
        now = time.monotonic()
        timeout = self.heartbeat_timeout_s
        silent: dict[int, str] = {}
        started: list[int] = []
        for i, p in enumerate(self.processes):
            if not p.is_alive():
                continue
            silence = self.heartbeats.silent_for(i)
            if self.heartbeats.started(i):
                started.append(i)
                if silence > timeout:
                    silent[i] = f"silent for {silence:.0f} s"
                continue
            stopped_since = self._stopped_since.pop(i, now) if self._state(i) in ("T", "t") else None
            if stopped_since is not None:
                self._stopped_since[i] = stopped_since
            if stopped_since is not None and now - stopped_since > timeout:
                self._kill(i, f"stopped in its start-up for {now - stopped_since:.0f} s")
            elif silence > max(timeout, STARTUP_TIMEOUT_S):
                self._kill(i, f"still starting after {silence:.0f} s")
        if not silent:
            return
        states = {i: self._state(i) for i in started}
        stopped = {i for i in started if states[i] in ("T", "t")}
        running = {i for i in silent if states[i] == "R"}
        culprits = stopped or running or set(silent)
        for i in sorted(culprits):
            why = silent.get(i, f"stopped, silent for {self.heartbeats.silent_for(i):.0f} s")
            self._kill(i, why)
        waited_on = ", ".join(map(self.name, sorted(culprits)))
        for i in sorted(silent.keys() - culprits):
            self.on_event(
                f"{self.name(i)} {silent[i]}, maybe waiting on {waited_on}: "
                f"one more runner.heartbeat_timeout_s={timeout:g}"
            )
            self.heartbeats.pardon(i)

    def _state(self, i: int) -> str:
        """Child ``i``'s state letter in /proc (``?`` where it cannot be read)."""
        status = process_status(self.processes[i].pid)
        return status[0] if status is not None else "?"

    def _kill(self, i: int, why: str) -> None:
        self._stopped_since.pop(i, None)
        timeout = self.heartbeat_timeout_s
        self.on_event(f"{self.name(i)} {why} (runner.heartbeat_timeout_s={timeout:g}); killing it")
        self.processes[i].kill()
        self.processes[i].join(timeout=JOIN_TIMEOUT_S)

    def _raise_if_it_raised(self, worker_id: int, exitcode: int) -> None:
        """A worker that raised sends its traceback, then exits with code 1: once its channel
        has ended, the traceback is in (or the exit was a death)."""
        if exitcode != 1:
            return
        self.inbox.closed(worker_id, TRACEBACK_GRACE_S)
        try:
            reporter, trace = self.errors.get_nowait()
        except queue_module.Empty:
            return
        raise WorkerFailed(f"{self.name(reporter)} failed:\n{trace}")

    def stop_all(self) -> None:
        """Stop every worker, then wait for their channels to end, so that everything they
        sent has been handed on."""
        stop_processes(self.processes, self.stop)
        if not self.inbox.drain(JOIN_TIMEOUT_S):
            self.on_event(f"a {self.role} channel did not end {JOIN_TIMEOUT_S:g} s after its process")

    @property
    def total_restarts(self) -> int:
        return sum(self.restarts)
