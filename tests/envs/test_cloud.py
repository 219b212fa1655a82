"""Cloud pools: in-order grants, bounds, and conservation under concurrent processes."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.polling import wait_until
from uavrl.envs import make_core
from uavrl.envs.cloud import BookedPool, PerCopyPools, SharedPool, grant_in_order
from uavrl.errors import ConfigError


def _grant_sequentially(level: int, units: list[int], want: list[bool]) -> tuple[list[bool], int]:
    granted = []
    for u, w in zip(units, want, strict=True):
        ok = w and u <= level
        level -= u if ok else 0
        granted.append(ok)
    return granted, level


@given(
    level=st.integers(0, 1000),
    requests=st.lists(st.tuples(st.integers(1, 300), st.booleans()), max_size=64),
)
def test_grant_in_order_equals_a_sequential_loop(level: int, requests: list) -> None:
    units = [u for u, _ in requests]
    want = [w for _, w in requests]
    granted, new_level = grant_in_order(level, np.array(units, dtype=np.int64), np.array(want, dtype=bool))
    expected, expected_level = _grant_sequentially(level, units, want)
    assert granted.tolist() == expected
    assert new_level == expected_level


def test_private_pools_are_independent() -> None:
    pools = PerCopyPools(100, 3)
    granted = pools.take(np.array([60, 60, 150]), np.array([True, True, True]))
    assert granted.tolist() == [True, True, False]
    assert pools.levels(3).tolist() == [40, 40, 100]


@pytest.mark.parametrize("pool", [SharedPool(50), PerCopyPools(50, 1)])
def test_returning_more_than_was_taken_raises(pool: Any) -> None:
    with pytest.raises(RuntimeError, match="above capacity"):
        pool.give(np.array([1]))


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="cloud_capacity must be >= 1 units, got -5"):
        SharedPool(-5)


COPIES = 6


class _AuditedPool:
    """Delegates to a cross-process pool and books, under its lock, what each copy holds."""

    def __init__(self, pool: Any, held: Any, slot: int) -> None:
        self.pool, self.held, self.first = pool, held, slot * COPIES
        self.capacity = pool.capacity

    def _book(self, units: np.ndarray, sign: int) -> None:
        for j, u in enumerate(units.tolist()):
            self.held[self.first + j] += sign * u

    def take(self, units: np.ndarray, want: np.ndarray) -> np.ndarray:
        with self.pool.lock():
            granted = self.pool.take(units, want)
            self._book(units * granted, +1)
        return granted

    def give(self, units: np.ndarray) -> None:
        with self.pool.lock():
            self.pool.give(units)
            self._book(units, -1)

    def levels(self, n: int) -> np.ndarray:
        return self.pool.levels(n)


def _hammer(pool: Any, held: Any, slot: int, steps: int, errors: Any) -> None:
    try:
        audited = _AuditedPool(pool, held, slot)
        core = make_core("paper", COPIES, pool=audited, cloud_capacity=pool.capacity, episode_length=30)
        core.reset(seed=slot)
        rng = np.random.default_rng(slot)
        for _ in range(steps):
            core.step(rng.choice([0, 1, 1, 1, 2], size=COPIES))
            with pool.lock():
                mine = held[slot * COPIES : (slot + 1) * COPIES]
                assert mine == core.held_cloud_units().tolist()
        core.reset()
        assert sum(held[slot * COPIES : (slot + 1) * COPIES]) == 0
    except BaseException as err:
        errors.put(f"agent {slot}: {err!r}")
        raise


def _conserved(pool: Any, held: list[int], capacity: int) -> None:
    per_agent = np.array(held).reshape(4, COPIES)
    if isinstance(pool, SharedPool):
        assert 0 <= pool.level <= capacity
        assert pool.level + per_agent.sum() == capacity
    else:  # pool j is shared by copy j of every agent
        levels = pool.level
        assert ((levels >= 0) & (levels <= capacity)).all()
        assert (levels + per_agent.sum(axis=0) == capacity).all()


@pytest.mark.parametrize("kind", ["shared", "per_copy"])
def test_four_processes_never_leak_or_create_units(kind: str) -> None:
    ctx = mp.get_context("spawn")
    capacity = 700
    pool: Any = (
        SharedPool(capacity, cross_process=True)
        if kind == "shared"
        else PerCopyPools(capacity, COPIES, cross_process=True)
    )
    held = ctx.Array("q", 4 * COPIES, lock=False)
    errors = ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(pool, held, i, 300, errors)) for i in range(4)]
    for w in workers:
        w.start()
    snapshots = 0
    while any(w.is_alive() for w in workers):
        with pool.lock():
            _conserved(pool, held[:], capacity)
        snapshots += 1
    for w in workers:
        w.join()
    assert errors.empty(), errors.get()
    assert all(w.exitcode == 0 for w in workers)
    _conserved(pool, [0] * 4 * COPIES, capacity)
    assert snapshots > 10


def _take_and_hold(pool: Any, done: Any) -> None:
    pool.take(np.array([100, 200, 0]), np.array([True, True, False]))
    pool.give(np.array([0, 50, 0]))
    done.value = 1
    time.sleep(600)


@pytest.mark.parametrize("kind", ["shared", "per_copy"])
def test_the_units_of_an_agent_killed_with_tasks_in_flight_go_back(kind: str) -> None:
    """A BookedPool books what its agent's copies hold; once the agent is killed, release()
    returns exactly that, and the pool is whole again."""
    ctx = mp.get_context("spawn")
    pool: Any = (
        SharedPool(700, cross_process=True) if kind == "shared" else PerCopyPools(700, 3, cross_process=True)
    )
    booked = BookedPool(pool, 3)
    done = ctx.RawValue("b", 0)
    agent = ctx.Process(target=_take_and_hold, args=(booked, done))
    agent.start()
    assert wait_until(lambda: done.value)
    os.kill(agent.pid, signal.SIGKILL)
    agent.join(timeout=30)
    np.testing.assert_array_equal(booked.held, [100, 150, 0])
    assert (pool.level == 700 - 250) if kind == "shared" else (pool.level == [600, 550, 700]).all()
    assert booked.release() == 250
    assert (np.asarray(pool.level) == 700).all() and not booked.held.any()
    assert booked.release() == 0
