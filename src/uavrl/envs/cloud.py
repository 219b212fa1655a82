"""Cloud pools: the units of cloud capacity that offloaded tasks hold while they run.

Every pool has the same vectorised interface, so a batched core does not care which it has:

- ``take(units, want)`` grants copy ``i`` its ``units[i]`` where ``want[i]``, atomically, in index
  order (a copy is granted iff its request fits what earlier copies of the same call left);
- ``give(units)`` returns ``units[i]`` held by copy ``i``;
- ``levels(n)`` is the level each of ``n`` copies sees (privileged information for the oracle).

``PrivatePools``: one pool per copy (independent agents, e.g. evaluation episodes in parallel).
``SharedPool``: one pool shared by every copy of the process.
``CrossProcessPool``: one pool in shared memory, guarded by a lock, shared across processes.
A pool never holds fewer than 0 or more than ``capacity`` units: an over-return raises.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any, Protocol

import numpy as np

from uavrl.errors import check_range


class CloudPool(Protocol):
    """What a batched environment core needs from a cloud pool."""

    capacity: int

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        """Grant requests in index order; returns (B,) bool."""
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
    check_range("cloud_capacity", capacity, low=1, unit="units")


class PrivatePools:
    """One independent pool per copy."""

    def __init__(self, capacity: int, n: int) -> None:
        _check_capacity(capacity)
        self.capacity = int(capacity)
        self.level = np.full(n, self.capacity, dtype=np.int64)

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        granted = want & (units <= self.level)
        self.level -= units * granted
        return granted

    def give(self, units: np.ndarray) -> None:
        self.level += units
        if (self.level > self.capacity).any():
            raise RuntimeError(f"cloud pool above capacity {self.capacity}: {self.level.max()}")

    def levels(self, n: int) -> np.ndarray:
        return self.level.copy()


class SharedPool:
    """One pool shared by all copies of one process."""

    def __init__(self, capacity: int) -> None:
        _check_capacity(capacity)
        self.capacity = int(capacity)
        self.level = self.capacity

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        granted, self.level = grant_in_order(self.level, units, want)
        return granted

    def give(self, units: np.ndarray) -> None:
        level = self.level + int(units.sum())
        if level > self.capacity:
            raise RuntimeError(f"cloud pool above capacity {self.capacity}: {level}")
        self.level = level

    def levels(self, n: int) -> np.ndarray:
        return np.full(n, self.level, dtype=np.int64)


class CrossProcessPool:
    """One pool in shared memory; pass it to worker processes at creation (spawn-safe)."""

    def __init__(self, capacity: int, context: str = "spawn") -> None:
        _check_capacity(capacity)
        self.capacity = int(capacity)
        self._value = mp.get_context(context).Value("q", self.capacity, lock=True)

    @property
    def level(self) -> int:
        return int(self._value.value)

    def lock(self) -> Any:
        """The pool's re-entrant lock: hold it to read a consistent snapshot across processes."""
        return self._value.get_lock()

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        if not want.any():
            return want.copy()
        with self._value.get_lock():
            granted, self._value.value = grant_in_order(self._value.value, units, want)
        return granted

    def give(self, units: np.ndarray) -> None:
        total = int(units.sum())
        if total == 0:
            return
        with self._value.get_lock():
            level = self._value.value + total
            if level > self.capacity:
                raise RuntimeError(f"cloud pool above capacity {self.capacity}: {level}")
            self._value.value = level

    def levels(self, n: int) -> np.ndarray:
        return np.full(n, self.level, dtype=np.int64)
