"""A2C: every worker's envs step together in one process, one synchronous update per rollout.

It is the A3C worker run alone over a concatenation of all N x K envs (copy ``j`` belongs to
worker ``j // K`` and sits in that worker's scenario cell), so model, returns and loss are the
same code. With a fixed seed the run is bitwise reproducible.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uavrl.config import Config
from uavrl.locking import ProcessLock
from uavrl.runners.bookkeeping import updates_per_worker
from uavrl.runners.seeds import SeedPurpose, derived_seed
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.worker import Worker, make_all_worker_envs


def _run_synchronous(
    worker: Worker, session: TrainingSession, target: int, hook: ProgressHook | None
) -> None:
    """``target`` updates of the one worker that steps every env, in this process."""
    counters = session.counters
    while counters.worker_updates[worker.worker_id] < target:
        worker.update_and_book(counters, session.metrics, session.clock_origin)
        if session.end_round(hook):
            return


def run_a2c(
    config: Config, run_dir: Path, resume: bool = False, hook: ProgressHook | None = None
) -> RunResult:
    """Train synchronously; writes logs and checkpoints under ``run_dir``."""
    torch.set_num_threads(1)
    session = TrainingSession(config, run_dir, n_learners=1, n_slots=1, resume=resume)
    pool = session.open_pool(cross_process=False)
    env = make_all_worker_envs(config, pool)
    env_seed = session.env_seed()
    torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, env_seed))
    worker = Worker(config, 0, session.models[0], session.optimizers[0], ProcessLock(), env, env_seed)
    with session.running():
        _run_synchronous(worker, session, updates_per_worker(config), hook)
    return session.result()
