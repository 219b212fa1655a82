"""A lock across processes that its holder's death releases (the kernel's ``flock``).

Every lock that processes of a run share is one of these: a process killed inside its critical
section (``kill -9``, the out-of-memory killer) cannot leave it held, so no survivor waits
forever. Used by the cloud pools (below the runners), the models and the run's counters.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import weakref
from typing import Any

_LOCK_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None  # memory, not disk, where there is one


class ProcessLock:
    """A mutual-exclusion lock across processes (and threads) that its holder's death releases.

    An exclusive ``flock`` on a file of its own, which the kernel drops when the holding process
    exits for any reason; a re-entrant thread lock orders the threads of one process, and a
    thread that holds the lock may take it again (a pool's caller and the pool itself). Picklable for spawn:
    each process opens the file for itself, so each holds its own lock description. The file is
    unlinked when the creating process drops the lock.
    """

    def __init__(self) -> None:
        handle, self.path = tempfile.mkstemp(prefix=f"uavrl-lock-{os.getpid()}-", dir=_LOCK_DIR)
        os.close(handle)
        weakref.finalize(self, _unlink_quietly, self.path)
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDWR)
        self._threads = threading.RLock()
        self._depth = 0  # nested holds of the thread that has it
        weakref.finalize(self, os.close, self._fd)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self._open()

    def __enter__(self) -> ProcessLock:
        self._threads.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
