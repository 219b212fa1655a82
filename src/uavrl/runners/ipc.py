"""Cross-process primitives that no dead or stopped process can block.

A process can be killed (``kill -9``, the out-of-memory killer) at any instruction, or stopped
(SIGSTOP, a debugger) for as long as anyone likes. So nothing shared here has a lock that a
dead process could hold, and nothing a survivor needs waits on one particular process:

- :class:`~uavrl.locking.ProcessLock` (the locks of models, counters, weights and cloud pools):
  an ``flock`` that the kernel releases when its holder dies, whatever it was doing; a stopped
  holder is killed by the supervisor once its heartbeat lapses (:class:`Heartbeats`).
- :class:`StopFlag`: one byte of shared memory; setting and reading it takes no lock
  (``multiprocessing.Event`` takes a condition's lock even in ``is_set``).
- :class:`Inbox` and :class:`Channel`: every child writes to the parent through a pipe of its
  own, the pipe's only writer, so no write lock is shared (``multiprocessing.Queue`` shares
  one among all its writers: a writer killed inside it blocked every other writer forever).
  The parent reads each pipe in a thread of its own: a child stopped in the middle of a message
  holds up its own pipe and nothing else, and a dead child's pipe ends (EOF) with at most its
  last, partly written message lost.
- :class:`Heartbeats`: a time per child in shared memory, written by the child, read by the
  supervisor; lock-free.

Child-to-parent messages are tuples whose first item names their kind (:data:`ROWS`...).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

# Message kinds, child to parent.
ROWS = "rows"  # ("rows", [training-log row, ...])
ERROR = "error"  # ("error", child id, traceback text)
ROLLOUT = "rollout"  # ("rollout", slot, incarnation, [EpisodeRecord, ...])


class StopFlag:
    """Tells every child to stop: one shared byte, set by the parent, read without a lock."""

    def __init__(self, ctx: Any) -> None:
        self._flag = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)


class Heartbeats:
    """When each child last showed it was working (``time.monotonic()``, one clock for all
    processes of the machine), and whether it has since its start: written by the child, read
    by its supervisor, lock-free."""

    def __init__(self, n: int, ctx: Any) -> None:
        self._times = ctx.RawArray("d", n)
        self._beaten = ctx.RawArray("b", n)

    def starting(self, child: int) -> None:
        """Child ``child`` is being started: its silence counts from now, as start-up."""
        self._beaten[child] = 0
        self._times[child] = time.monotonic()

    def beat(self, child: int) -> None:
        self._times[child] = time.monotonic()
        self._beaten[child] = 1

    def finished(self, child: int) -> None:
        """Child ``child`` has done its work and is exiting: its silence from now on is no fault."""
        self._times[child] = float("inf")
        self._beaten[child] = 1

    def pardon(self, child: int) -> None:
        """Child ``child``'s silence counts from now again (it was waiting on another)."""
        self._times[child] = max(self._times[child], time.monotonic())

    def started(self, child: int) -> bool:
        """Whether child ``child`` has beaten since :meth:`starting`."""
        return bool(self._beaten[child])

    def silent_for(self, child: int) -> float:
        """Seconds since child ``child`` last beat (or was started)."""
        return time.monotonic() - self._times[child]


class Channel:
    """A child's end of its pipe to the parent; it is the pipe's only writer.

    ``put(item)`` sends a training-log row list (what the runners' ``metrics.put`` gets);
    :meth:`send` any message of :data:`ROWS`, :data:`ERROR`, :data:`ROLLOUT`.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def put(self, rows: list[dict[str, Any]]) -> None:
        self.send((ROWS, rows))

    def send(self, message: tuple[Any, ...]) -> None:
        self.connection.send(message)


Handler = Callable[[int, tuple[Any, ...]], None]
"""``(child id, message) -> None``, called in the pipe's reader thread."""


class Inbox:
    """The parent's ends of its children's pipes, each read by a thread of its own.

    :meth:`open` makes a pipe for one child (one per start: a restarted child gets a new one)
    and returns the child's :class:`Channel`; after the child has started, :meth:`started`
    closes the parent's copy of the write end, so that the child's exit ends the pipe (EOF).
    Every message goes to ``handler`` as it arrives.
    """

    def __init__(self, ctx: Any, handler: Handler) -> None:
        self.ctx = ctx
        self.handler = handler
        self._readers: list[tuple[int, threading.Thread]] = []

    def open(self, child: int) -> Channel:
        reader, writer = self.ctx.Pipe(duplex=False)
        thread = threading.Thread(target=self._read, args=(child, reader), daemon=True, name=f"inbox-{child}")
        thread.start()
        self._readers.append((child, thread))
        return Channel(writer)

    @staticmethod
    def started(channel: Channel) -> None:
        """Drop the parent's copy of a started child's write end."""
        channel.connection.close()

    def _read(self, child: int, reader: Any) -> None:
        try:
            while True:
                try:
                    message = reader.recv()
                except (EOFError, OSError):
                    return  # the child exited; a message it was writing when it died is lost
                self.handler(child, message)
        finally:
            reader.close()

    def closed(self, child: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every pipe of child ``child`` to end; True if they did."""
        deadline = time.monotonic() + timeout
        for owner, thread in self._readers:
            if owner == child:
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for owner, t in self._readers if owner == child)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for every pipe to end (every child gone, everything it sent
        handed on); True if they all did."""
        deadline = time.monotonic() + timeout
        for _, thread in self._readers:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._readers = [(owner, t) for owner, t in self._readers if t.is_alive()]
        return not self._readers
