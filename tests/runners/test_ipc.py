"""Cross-process primitives no dead or stopped process can block: per-child channels, the stop
flag and heartbeats."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from typing import Any

from tests.polling import wait_until
from uavrl.runners.ipc import ROWS, Channel, Heartbeats, Inbox, StopFlag

BIG = 2_000_000  # bytes: far more than a pipe's buffer, so its writer blocks inside the message


def _first_then_big(channel: Channel) -> None:
    channel.send((ROWS, [{"n": 0}]))
    channel.send((ROWS, [{"blob": "x" * BIG}]))  # blocks part-way until the parent reads on
    channel.send((ROWS, [{"n": 1}]))


def _count(channel: Channel, n: int, stop: StopFlag) -> None:
    for i in range(n):
        channel.send((ROWS, [{"i": i}]))
        time.sleep(0.01)
    while not stop.is_set():
        time.sleep(0.01)


def test_a_child_stopped_inside_a_message_holds_up_its_own_channel_only() -> None:
    """The hang of a shared queue, made deterministic: child A is stopped (SIGSTOP) part-way
    through writing a message, then killed. Meanwhile child B's messages all arrive; A's pipe
    ends at its death with the partial message dropped, and nothing waits on it."""
    ctx = mp.get_context("spawn")
    received: dict[int, list[Any]] = {0: [], 1: []}
    gate = threading.Event()

    def handler(child: int, message: tuple[Any, ...]) -> None:
        received[child].append(message[1][0])
        if child == 0 and len(received[0]) == 1:
            gate.wait(60)  # A's reader stalls: A's next message fills the pipe and blocks A

    inbox, stop = Inbox(ctx, handler), StopFlag(ctx)
    channel_a, channel_b = inbox.open(0), inbox.open(1)
    a = ctx.Process(target=_first_then_big, args=(channel_a,))
    b = ctx.Process(target=_count, args=(channel_b, 50, stop))
    for process, channel in ((a, channel_a), (b, channel_b)):
        process.start()
        inbox.started(channel)
    try:
        assert wait_until(lambda: received[0])
        time.sleep(1.0)  # A is now blocked inside its big message
        assert a.is_alive()
        os.kill(a.pid, signal.SIGSTOP)
        gate.set()  # A's reader takes what is in the pipe, then waits for the rest of it
        wait_until(lambda: len(received[1]) >= 50)
        assert [r["i"] for r in received[1]] == list(range(50))  # B was never held up
        assert not inbox.closed(0, timeout=0.5)  # A's pipe waits for A alone
        os.kill(a.pid, signal.SIGKILL)
        a.join(timeout=30)
        assert inbox.closed(0, timeout=10)  # its death ended the pipe
        assert received[0] == [{"n": 0}]  # the message it was writing is lost, nothing else
    finally:
        stop.set()
        for process in (a, b):
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join(timeout=30)
    assert inbox.drain(timeout=10)


def _beat_until_stopped(heartbeats: Heartbeats, stop: StopFlag) -> None:
    while not stop.is_set():
        heartbeats.beat(1)
        time.sleep(0.02)


def test_a_stop_flag_and_heartbeats_cross_processes_without_locks() -> None:
    ctx = mp.get_context("spawn")
    heartbeats, stop = Heartbeats(2, ctx), StopFlag(ctx)
    heartbeats.beat(0)
    heartbeats.starting(1)
    assert heartbeats.started(0) and not heartbeats.started(1)
    child = ctx.Process(target=_beat_until_stopped, args=(heartbeats, stop))
    child.start()
    try:
        wait_until(lambda: heartbeats.started(1))
        assert heartbeats.silent_for(1) < 1.0 and heartbeats.started(1)  # the child's beats are seen
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.5)
        assert heartbeats.silent_for(1) >= 0.4  # a stopped child falls silent
        os.kill(child.pid, signal.SIGCONT)
        stop.set()
        child.join(timeout=30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()
            child.join(timeout=30)
    assert heartbeats.silent_for(0) > 0.5
