"""Throughput of one study run: a config's serial runner, per-worker vs batched acting.

A study trains every run in one process (serial mode). Rows ``per_worker``: the N workers take
turns, each acting for its own K envs (one forward of K per step). Rows ``batched``: a shared
model acts for all N x K envs in one forward per step, then applies one update per worker (what
``runner.serial`` does for A3C). Same config, envs, model and updates; one torch thread; env
steps per second after a warm-up, medians of interleaved rounds (this machine drifts up to 3x).
A config whose workers must step together (a centralised critic, a team reward) has the
batched row only: its workers cannot act alone.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uavrl.config import Config
from uavrl.runners.session import TrainingSession, make_pool
from uavrl.runners.worker import BatchedWorkers, Worker, make_all_worker_envs

WARMUP_ROUNDS = 2


def _round_function(config: Config, session: TrainingSession, batched: bool) -> Callable[[], int]:
    """One round of updates of every worker; returns its env steps."""
    pool = make_pool(config, cross_process=False)
    model, optimizer, lock = session.models[0], session.optimizers[0], session.ctx.Lock()
    if batched:
        group = BatchedWorkers(
            config, [model], [optimizer], [lock], make_all_worker_envs(config, pool), config.seed
        )
        return lambda: sum(stats.env_steps for stats, _ in group.update(0))
    workers = [
        Worker.build(config, i, model, optimizer, lock, pool, config.seed)
        for i in range(config.runner.n_workers)
    ]
    return lambda: sum(w.update()[0].env_steps for w in workers)


def measure(config: Config, batched: bool, seconds: float) -> float:
    """Env steps per second of one serial run of ``config`` (shared model)."""
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        session = TrainingSession(config, Path(tmp), 1, config.runner.n_workers, resume=False)
        one_round = _round_function(config, session, batched)
        for _ in range(WARMUP_ROUNDS):
            one_round()
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += one_round()
        return steps / (time.perf_counter() - start)


def run(config: Config, seconds: float = 20.0, rounds: int = 3) -> pd.DataFrame:
    """Columns ``acting, n_workers, envs_per_worker, steps_per_s, s_per_2M_steps``."""
    together = config.model.central_critic or config.env.team_reward
    samples: dict[str, list[float]] = {"batched": []} if together else {"per_worker": [], "batched": []}
    for _ in range(rounds):
        for acting in samples:
            samples[acting].append(measure(config, acting == "batched", seconds / rounds))
    r = config.runner
    rows = []
    for acting, values in samples.items():
        rate = float(np.median(values))
        rows.append((acting, r.n_workers, r.envs_per_worker, round(2_000_000 / rate, 1), rate))
    return pd.DataFrame(
        rows, columns=["acting", "n_workers", "envs_per_worker", "s_per_2M_steps", "steps_per_s"]
    )
