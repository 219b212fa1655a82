"""Cloud pools: the units of cloud capacity that offloaded tasks hold while they run.

Every pool has the same vectorised interface, so a batched core does not care which it has:

- ``take(units, want)`` grants copy ``i`` its ``units[i]`` where ``want[i]``, atomically;
- ``give(units)`` returns ``units[i]`` held by copy ``i``;
- ``levels(n)`` is the level each of ``n`` copies sees (privileged information for the oracle).

``SharedPool``: one pool for every copy attached to it; the copies of one call are served in
index order (a copy is granted iff its request fits what earlier copies left).
``PerCopyPools``: pool ``j`` serves copy ``j``. Private pools of independent episodes are this,
and so is the A3C setting: copy ``j`` of every worker attaches to pool ``j``, so each pool is
shared by N agents (one per worker) however many envs a worker steps.

Both live in process memory, or (``cross_process=True``) in shared memory behind one
:class:`~uavrl.locking.ProcessLock`, to be handed to worker processes at creation (spawn-safe): a
worker killed while it takes or gives units releases the lock by dying, so no survivor blocks.
A pool never holds fewer than 0 or more than ``capacity`` units: an over-return raises.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from typing import Any, Protocol

import numpy as np

from uavrl.errors import check_range
from uavrl.locking import ProcessLock


class CloudPool(Protocol):
    """What a batched environment core needs from a cloud pool."""

    capacity: int

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        """Grant requests; returns (B,) bool."""
        ...

    def give(self, units: np.ndarray) -> None:
        """Return (B,) units held by each copy."""
        ...

    def levels(self, n: int) -> np.ndarray:
        """(n,) int64 level seen by each copy."""
        ...


def grant_in_order(level: int, units: np.ndarray, want: np.ndarray) -> tuple[np.ndarray, int]:
    """Sequential first-come grants, computed without a loop over every copy.

    Equivalent to ``for i: if want[i] and units[i] <= level: grant i; level -= units[i]``.
    A request larger than the current level can never be granted later in the same call (the
    level only falls), so each pass grants the longest fitting prefix and drops every request
    that no longer fits; each pass grants at least one request.

    Args:
        level: units in the pool before the call.
        units: (B,) int64 requested units per copy.
        want: (B,) bool which copies request.

    Returns:
        (B,) bool granted, and the level after the grants.
    """
    granted = np.zeros(units.shape[0], dtype=bool)
    idx = np.flatnonzero(want)
    req = units[idx]
    while idx.size:
        fits = req <= level
        idx, req = idx[fits], req[fits]
        if not idx.size:
            break
        cumulative = np.cumsum(req)
        within = cumulative <= level
        n = idx.size if within.all() else int(np.argmin(within))
        granted[idx[:n]] = True
        level -= int(cumulative[n - 1])
        idx, req = idx[n + 1 :], req[n + 1 :]
    return granted, level


def _check_capacity(capacity: int) -> None:
    check_range("cloud_capacity", capacity, low=1, unit="units", integer=True)


class _SharedInts:
    """``size`` int64 values in process memory, or (``cross_process``) in shared memory that a
    spawned process gets by pickling; ``values`` is a NumPy view of them either way."""

    def __init__(self, initial: int, size: int, cross_process: bool) -> None:
        ctx = mp.get_context("spawn")
        self._shared = ctx.RawArray("q", [initial] * size) if cross_process else None
        self.values = self._view() if self._shared is not None else np.full(size, initial, np.int64)

    def _view(self) -> np.ndarray:
        assert self._shared is not None
        return np.frombuffer(memoryview(self._shared).cast("B"), dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._shared is not None:
            del state["values"]  # a view into shared memory is rebuilt after unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self._shared is not None:
            self.values = self._view()


class _Levels(_SharedInts):
    """``size`` int64 pool levels in process memory or in shared memory with a lock."""

    def __init__(self, capacity: int, size: int, cross_process: bool) -> None:
        _check_capacity(capacity)
        self.capacity = int(capacity)
        self._lock = ProcessLock() if cross_process else None
        super().__init__(self.capacity, size, cross_process)

    def lock(self) -> Any:
        """The lock guarding the levels (a no-op in process memory)."""
        return self._lock if self._lock is not None else contextlib.nullcontext()

    def check(self) -> None:
        if (self.values > self.capacity).any():
            raise RuntimeError(f"cloud pool above capacity {self.capacity}: {self.values.max()}")


class PerCopyPools:
    """Pool ``j`` serves copy ``j`` (private pools, or one pool per copy index across workers)."""

    def __init__(self, capacity: int, n: int, cross_process: bool = False) -> None:
        self._levels = _Levels(capacity, n, cross_process)
        self.capacity = self._levels.capacity

    @property
    def level(self) -> np.ndarray:
        return self._levels.values.copy()

    def lock(self) -> Any:
        return self._levels.lock()

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        with self._levels.lock():
            levels = self._levels.values
            granted = want & (units <= levels)
            levels -= units * granted
        return granted

    def give(self, units: np.ndarray) -> None:
        with self._levels.lock():
            self._levels.values += units
            self._levels.check()

    def levels(self, n: int) -> np.ndarray:
        return self.level


class SharedPool:
    """One pool for every attached copy, served in index order within a call."""

    def __init__(self, capacity: int, cross_process: bool = False) -> None:
        self._levels = _Levels(capacity, 1, cross_process)
        self.capacity = self._levels.capacity

    @property
    def level(self) -> int:
        return int(self._levels.values[0])

    def lock(self) -> Any:
        return self._levels.lock()

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        if not want.any():
            return want.copy()
        with self._levels.lock():
            granted, level = grant_in_order(int(self._levels.values[0]), units, want)
            self._levels.values[0] = level
        return granted

    def give(self, units: np.ndarray) -> None:
        total = int(units.sum())
        if total == 0:
            return
        with self._levels.lock():
            self._levels.values[0] += total
            self._levels.check()

    def levels(self, n: int) -> np.ndarray:
        return np.full(n, self.level, dtype=np.int64)


class BookedPool:
    """One agent's view of a cross-process pool (its K copies at the pool's copy indices) that
    books, under the pool's lock, the units its copies hold, so that the units of an agent
    killed with tasks in flight go back to the pool (:meth:`release`) instead of being lost.

    Made in the parent, one per worker, handed to that worker; the parent calls :meth:`release`
    once the worker is dead, before its replacement starts.
    """

    def __init__(self, pool: PerCopyPools | SharedPool, n: int) -> None:
        self.pool = pool
        self.capacity = pool.capacity
        self._held = _SharedInts(0, n, cross_process=True)

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        with self.pool.lock():
            granted = self.pool.take(units, want)
            self._held.values += units * granted
        return granted

    def give(self, units: np.ndarray) -> None:
        with self.pool.lock():
            self.pool.give(units)
            self._held.values -= units

    def levels(self, n: int) -> np.ndarray:
        return self.pool.levels(n)

    @property
    def held(self) -> np.ndarray:
        """(n,) units each copy holds now."""
        return self._held.values.copy()

    def release(self) -> int:
        """Return every unit the (dead) agent's copies held; the number of units returned."""
        with self.pool.lock():
            held = self._held.values
            returned = int(held.sum())
            self.pool.give(held.copy())
            held[:] = 0
        return returned
