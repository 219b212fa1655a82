"""A3C (``share=True``) and individual learning (``share=False``) with Hogwild workers.

N worker processes (spawn, one torch thread each) run the same :class:`Worker`. With sharing,
all of them update one global model through one SharedAdam; without, worker ``i`` updates
learner ``i`` alone. Envs, seeds and update counts are identical in the two arms. One gradient
loop (:func:`~uavrl.runners.transport.gradient_loop`) runs over either transport:
:class:`WorkerProcesses`, or, with ``backend: serial``, the workers in this process stepped as
one batch (:class:`~uavrl.runners.worker.BatchedWorkers` in an
:class:`~uavrl.runners.transport.InProcessWorkers`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from uavrl.algo.optim import SharedAdam
from uavrl.config import Config
from uavrl.envs.cloud import CloudPool
from uavrl.locking import ProcessLock
from uavrl.nn.models import ActorCritic
from uavrl.runners.bookkeeping import SharedCounters, updates_per_worker
from uavrl.runners.seeds import SeedPurpose, derived_seed, incarnation_seed
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.supervise import ChildLink, Supervisor, child_process
from uavrl.runners.transport import GradientWorkers, InProcessWorkers, WorkerUpdate, gradient_loop
from uavrl.runners.worker import BatchedWorkers, Worker, make_all_worker_envs

POLL_S = 0.2  # how often the parent looks at its workers


def _learner_of(session: TrainingSession, worker_id: int) -> int:
    return 0 if len(session.models) == 1 else worker_id


def _worker_process(
    config: Config,
    worker_id: int,
    learner: ActorCritic,
    optimizer: SharedAdam,
    lock: ProcessLock,
    pool: CloudPool | None,
    counters: SharedCounters,
    link: ChildLink,
    env_seed: int,
    target: int,
    clock_origin: float,
) -> None:
    with child_process(link.channel, worker_id) as parent:
        torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, worker_id, env_seed))
        worker = Worker.build(config, worker_id, learner, optimizer, lock, pool, env_seed)
        # a parent killed with -9 sets no stop flag: notice its death instead of outliving it
        while (
            counters.worker_updates[worker_id] < target
            and not link.stop.is_set()
            and (parent is None or parent.is_alive())
        ):
            link.beat()
            worker.update_and_book(counters, link.channel, clock_origin)
        link.finished()


class WorkerProcesses:
    """The process transport of the gradient loop: N supervised Hogwild worker processes, each
    applying its own updates to its learner (the shared model, or its own) and booking them in
    the run's shared counters; ``step`` supervises them (restarting the dead) and waits."""

    def __init__(
        self,
        session: TrainingSession,
        pool: CloudPool | None,
        locks: list[ProcessLock],
        target: int,
        env_seed: int,
    ) -> None:
        config, r = session.config, session.config.runner
        self.session = session

        def make_process(worker_id: int, incarnation: int, link: ChildLink) -> Any:
            k = _learner_of(session, worker_id)
            args = (
                config,  # validated once, in the parent: a child unpickles it as it is
                worker_id,
                session.models[k],
                session.optimizers[k],
                locks[k],
                session.worker_pool(worker_id, incarnation, pool),
                session.counters,
                link,
                incarnation_seed(env_seed, worker_id, incarnation),
                target,
                session.clock_origin,
            )
            return session.ctx.Process(target=_worker_process, args=args, name=f"uavrl-worker-{worker_id}")

        self.supervisor = Supervisor(
            make_process,
            r.n_workers,
            session.ctx,
            r.max_restarts,
            session.log_message,
            r.heartbeat_timeout_s,
            session.record_event,
        )

    def start(self) -> None:
        self.supervisor.start()

    def finished(self) -> bool:
        return not self.supervisor.any_alive() and not self.supervisor.check()  # none died at the end

    def step(self) -> list[WorkerUpdate]:
        self.supervisor.check()
        time.sleep(POLL_S)
        return []  # the workers book their own updates

    def close(self) -> None:
        self.supervisor.stop_all()
        self.session.record_restarts(self.supervisor)


def run_a3c(
    config: Config, run_dir: Path, resume: bool = False, hook: ProgressHook | None = None
) -> RunResult:
    """Train with N asynchronous workers; writes logs and checkpoints under ``run_dir``.

    On a worker failure the other workers are stopped, a checkpoint and every logged row are
    written, and :class:`WorkerFailed` is raised with the worker's traceback.
    """
    r = config.runner
    if r.serial:  # the workers run here: one thread from the start, as in every worker process
        torch.set_num_threads(1)
    session = TrainingSession(config, run_dir, 1 if r.share else r.n_workers, r.n_workers, resume)
    pool = session.open_pool(cross_process=not r.serial)
    locks = [ProcessLock() for _ in session.models]
    target = updates_per_worker(config)
    env_seed = session.env_seed()
    with session.running():
        workers: GradientWorkers
        if r.serial:
            torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, env_seed))
            envs = make_all_worker_envs(config, pool)
            batched = BatchedWorkers(config, session.models, session.optimizers, locks, envs, env_seed)
            workers = InProcessWorkers(session, target, batched.update)
        else:
            workers = WorkerProcesses(session, pool, locks, target, env_seed)
        try:
            workers.start()
            gradient_loop(session, workers, hook)
        finally:  # also on Ctrl-C or a failed checkpoint: never leave workers running
            workers.close()
    return session.result()
