"""A3C (``share=True``) and individual learning (``share=False``) with Hogwild workers.

N worker processes (spawn, one torch thread each) run the same :class:`Worker`. With sharing,
all of them update one global model through one SharedAdam; without, worker ``i`` updates
learner ``i`` alone. Envs, seeds and update counts are identical in the two arms. ``serial``
runs the workers in this process, stepped as one batch (:class:`BatchedWorkers`).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from uavrl.algo.optim import SharedAdam
from uavrl.config import Config
from uavrl.envs.cloud import CloudPool
from uavrl.locking import ProcessLock
from uavrl.nn.models import ActorCritic
from uavrl.runners.learner import UpdateStats
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.supervise import ChildLink, Supervisor, child_process
from uavrl.runners.worker import (
    BatchedWorkers,
    EpisodeRecord,
    SharedCounters,
    Worker,
    derived_seed,
    incarnation_seed,
    make_all_worker_envs,
    metric_rows,
)

POLL_S = 0.2  # how often the parent looks at its workers


def updates_per_worker(config: Config) -> int:
    """Equal share of ``total_env_steps`` per worker, in whole rollouts."""
    r = config.runner
    per_update = r.n_workers * r.envs_per_worker * config.algo.rollout_length
    return max(1, math.ceil(r.total_env_steps / per_update))


def _learner_of(session: TrainingSession, worker_id: int) -> int:
    return 0 if len(session.models) == 1 else worker_id


def book_update(
    worker_id: int,
    stats: UpdateStats,
    episodes: list[EpisodeRecord],
    counters: SharedCounters,
    metrics: Any,
    clock_origin: float,
) -> None:
    """One worker update, booked in the run counters and sent to the writer."""
    total, numbers = counters.add(stats.env_steps, stats.applied, [ep.owner for ep in episodes], worker_id)
    if episodes:
        metrics.put(
            metric_rows(stats, episodes, numbers, total, counters.worker_updates[worker_id], clock_origin)
        )


def _one_update(worker: Worker, counters: SharedCounters, metrics: Any, clock_origin: float) -> None:
    stats, episodes = worker.update(int(counters.env_steps.value))
    book_update(worker.worker_id, stats, episodes, counters, metrics, clock_origin)


def _worker_process(
    config_data: dict[str, Any],
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
        config = Config.model_validate(config_data)
        torch.manual_seed(derived_seed(config.seed, 3, worker_id, env_seed))
        worker = Worker.build(config, worker_id, learner, optimizer, lock, pool, env_seed)
        # a parent killed with -9 sets no stop flag: notice its death instead of outliving it
        while (
            counters.worker_updates[worker_id] < target
            and not link.stop.is_set()
            and (parent is None or parent.is_alive())
        ):
            link.beat()
            _one_update(worker, counters, link.channel, clock_origin)
        link.finished()


def _monitor(session: TrainingSession, supervisor: Supervisor, hook: ProgressHook | None = None) -> None:
    """Wait for the workers to finish their updates, restarting any that die and
    checkpointing as updates accumulate; raise if one fails for good."""
    while True:
        supervisor.check()
        if not supervisor.any_alive() and not supervisor.check():  # none died at the very end
            return
        session.maybe_checkpoint()
        if session.after_round(hook):
            return  # the caller stops the workers
        time.sleep(POLL_S)


def run_serial(
    workers: list[Worker], session: TrainingSession, target: int, hook: ProgressHook | None = None
) -> None:
    """Round-robin: one update of every unfinished worker per pass, in this process."""
    counters = session.counters
    while pending := [w for w in workers if counters.worker_updates[w.worker_id] < target]:
        for worker in pending:
            _one_update(worker, counters, session.metrics, session.clock_origin)
        session.maybe_checkpoint()
        if session.after_round(hook):
            return


def run_batched(
    workers: BatchedWorkers, session: TrainingSession, target: int, hook: ProgressHook | None = None
) -> None:
    """Serial A3C and individual learning: every round acts for all workers in one batch,
    then applies one update per worker."""
    counters = session.counters
    while min(counters.worker_updates[:]) < target:
        results = workers.update(int(counters.env_steps.value))
        for worker_id, (stats, episodes) in enumerate(results):
            book_update(worker_id, stats, episodes, counters, session.metrics, session.clock_origin)
        session.maybe_checkpoint()
        if session.after_round(hook):
            return


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
        if r.serial:
            torch.manual_seed(derived_seed(config.seed, 3, env_seed))
            batched = BatchedWorkers(
                config,
                session.models,
                session.optimizers,
                locks,
                make_all_worker_envs(config, pool),
                env_seed,
            )
            run_batched(batched, session, target, hook)
        else:

            def make_process(worker_id: int, incarnation: int, link: ChildLink) -> Any:
                k = _learner_of(session, worker_id)
                args = (
                    config.to_dict(),
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
                name = f"uavrl-worker-{worker_id}"
                return session.ctx.Process(target=_worker_process, args=args, name=name)

            supervisor = Supervisor(
                make_process,
                r.n_workers,
                session.ctx,
                r.max_restarts,
                session.log_message,
                r.heartbeat_timeout_s,
                session.record_event,
            )
            supervisor.start()
            try:
                _monitor(session, supervisor, hook)
            finally:  # also on Ctrl-C or a failed checkpoint: never leave workers running
                supervisor.stop_all()
                session.record_restarts(supervisor)
    return session.result()
