"""A2C: every worker's envs step together in one process, one synchronous update per rollout.

It is the A3C worker run alone over a concatenation of all N x K envs (copy ``j`` belongs to
worker ``j // K`` and sits in that worker's scenario cell), so model, returns and loss are the
same code, and the loop is the gradient loop of A3C with one worker in this process
(:class:`~uavrl.runners.transport.InProcessWorkers`). With a fixed seed the run is bitwise
reproducible.
"""

from __future__ import annotations

from pathlib import Path

import torch

from uavrl.config import Config
from uavrl.locking import ProcessLock
from uavrl.runners.bookkeeping import updates_per_worker
from uavrl.runners.seeds import SeedPurpose, derived_seed
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.transport import InProcessWorkers, gradient_loop
from uavrl.runners.worker import Worker, make_all_worker_envs


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
        target = updates_per_worker(config)
        gradient_loop(session, InProcessWorkers(session, target, lambda steps: [worker.update(steps)]), hook)
    return session.result()
