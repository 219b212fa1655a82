"""Actors and one learner: data-parallel A3C (``a3c_data``) and IMPALA (``impala``).

N actors step their K envs with the latest weights they were given and hand each T-step
:class:`~uavrl.algo.batch.RolloutBatch` to one :class:`~uavrl.runners.learner.Learner`, which
updates on ``learner_batch`` rollouts at a time and publishes the new weights with a version.

- ``a3c_data``: every update takes one rollout from each actor, and an actor waits for the
  weights of the update it fed before acting again, so every rollout is on-policy.
- ``impala``: actors never wait for the learner; a rollout may have been acted by weights some
  versions old (the policy lag, logged as a histogram in ``summary.json``), which the learner
  corrects with V-trace.

Transport (:mod:`uavrl.runners.transport`): rollouts travel as slot numbers of preallocated
shared-memory slots, weights through one shared model with a version. An actor gets a free slot
before it acts: for ``a3c_data`` its one slot comes back only once the update
that read it is published. ``serial`` runs the actors in this process, stepped as one batch,
then the learner.
"""

from __future__ import annotations

import queue as queue_module
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.config import Config
from uavrl.envs.cloud import CloudPool
from uavrl.nn.models import clone_model
from uavrl.runners.bookkeeping import EpisodeRecord, book_update, episode_records
from uavrl.runners.ipc import ROLLOUT
from uavrl.runners.learner import Learner, learner_batch, replay_stats, trajectory_replay
from uavrl.runners.metrics import histogram_summary
from uavrl.runners.seeds import SeedPurpose, derived_seed, incarnation_seed
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.supervise import ChildLink, Supervisor, child_process
from uavrl.runners.transport import RolloutSlots, WeightBroadcast, empty_rollout
from uavrl.runners.worker import make_all_worker_envs, make_collector, make_worker_env

POLL_S = 0.2  # how often a blocked actor or learner looks up from its queue


def _next_free_slot(free: Any, link: ChildLink, parent: Any) -> int | None:
    while not link.stop.is_set() and (parent is None or parent.is_alive()):
        link.beat()  # waiting for the learner is a sign of life too
        if free.poll(POLL_S):
            return int(free.recv())
    return None


def _actor_process(
    config_data: dict[str, Any],
    actor_id: int,
    incarnation: int,
    weights: WeightBroadcast,
    buffers: RolloutSlots,
    free: Any,
    pool: CloudPool | None,
    link: ChildLink,
    env_seed: int,
) -> None:
    """Act until stopped: take a free slot from ``free``, fetch the latest weights, collect,
    hand it over with this process's ``incarnation`` (0, or the restart it is)."""
    with child_process(link.channel, actor_id) as parent:
        config = Config.model_validate(config_data)
        k = config.runner.envs_per_worker
        torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, actor_id, env_seed))
        local = clone_model(weights.model)
        collector = make_collector(
            config, local, make_worker_env(config, actor_id, pool), env_seed, actor_id * k
        )
        version = -1
        while (slot := _next_free_slot(free, link, parent)) is not None:
            version = weights.fetch(local, version)
            batch, finished = collector.collect(local, config.algo.rollout_length)
            batch.policy_version = version
            buffers.write(slot, batch)
            link.channel.send((ROLLOUT, slot, incarnation, episode_records(finished, actor_id, k)))
        link.finished()


class CentralLearner:
    """The learner of an actor-learner run: one update per ``learner_batch`` rollouts, then
    the weights are published; books env steps, episodes and the policy lag."""

    def __init__(self, config: Config, session: TrainingSession, weights: WeightBroadcast | None) -> None:
        self.config = config
        self.session = session
        self.learner = Learner(
            config, session.models[0], session.optimizers[0], replay=trajectory_replay(config)
        )
        self.weights = weights
        self.version = int(session.counters.snapshot()["updates"])
        self.lag = Counter[int]()

    def update(self, rollouts: list[RolloutBatch], episodes: list[EpisodeRecord]) -> None:
        session = self.session
        stats = self.learner.learn_rollouts(rollouts, int(session.counters.env_steps.value))
        self.lag.update(self.version - r.policy_version for r in rollouts)
        self.version += 1
        if self.weights is not None:
            self.weights.publish(self.learner.model, self.version)
        book_update(0, stats, episodes, session.counters, session.metrics, session.clock_origin)

    def stats(self) -> dict[str, Any]:
        return {"policy_lag": histogram_summary(self.lag), **replay_stats(self.learner.replay)}


def _run_serial(
    session: TrainingSession, central: CentralLearner, pool: CloudPool | None, hook: ProgressHook | None
) -> None:
    """All actors step as one batch in this process with the learner's weights of the round's
    start; the learner then takes their rollouts ``learner_batch`` at a time (for ``impala``
    with ``learner_batch < N`` the later ones are off-policy by the updates before them)."""
    config, counters = session.config, session.counters
    n, k = config.runner.n_workers, config.runner.envs_per_worker
    env_seed = session.env_seed()
    torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, env_seed))
    local = clone_model(central.learner.model)
    collector = make_collector(config, local, make_all_worker_envs(config, pool), env_seed, 0)
    per_update = learner_batch(config)
    while counters.env_steps.value < config.runner.total_env_steps:
        local.load_state_dict(central.learner.model.state_dict())
        batch, finished = collector.collect(local, config.algo.rollout_length)
        batch.policy_version = central.version
        records = episode_records(finished, 0, k)
        for first in range(0, n, per_update):
            actors = range(first, min(n, first + per_update))
            rollouts = [batch.columns(i * k, (i + 1) * k) for i in actors]
            central.update(rollouts, [r for r in records if r.owner in actors])
        session.maybe_checkpoint()
        if session.after_round(hook):
            return


def _run_parallel(
    session: TrainingSession, central: CentralLearner, pool: CloudPool | None, hook: ProgressHook | None
) -> None:
    config, counters, ctx = session.config, session.counters, session.ctx
    r = config.runner
    template = empty_rollout(central.learner.model, config.algo.rollout_length, r.envs_per_worker)
    per_actor = 1 if r.kind == "a3c_data" else r.rollout_slots
    slots = RolloutSlots(template, r.n_workers, per_actor, ctx)
    weights = central.weights
    assert weights is not None
    weights.publish(central.learner.model, central.version)
    env_seed = session.env_seed()
    held: set[int] = set()  # slots the learner has taken and not yet handed back
    written: queue_module.Queue[tuple[int, int, list[EpisodeRecord]]] = queue_module.Queue()

    def make_process(actor_id: int, incarnation: int, link: ChildLink) -> Any:
        free = slots.free_slots_of(actor_id, incarnation, held)
        seed = incarnation_seed(env_seed, actor_id, incarnation)
        agent_pool = session.worker_pool(actor_id, incarnation, pool)
        args = (config.to_dict(), actor_id, incarnation, weights, slots, free, agent_pool, link, seed)
        return ctx.Process(target=_actor_process, args=args, name=f"uavrl-actor-{actor_id}")

    def on_message(actor_id: int, message: tuple[Any, ...]) -> None:
        if message[0] == ROLLOUT:
            written.put(message[1:])
        else:
            session.log_message(actor_id, message)

    supervisor = Supervisor(
        make_process,
        r.n_workers,
        ctx,
        r.max_restarts,
        on_message,
        r.heartbeat_timeout_s,
        session.record_event,
        "actor",
    )
    supervisor.start()
    release_after_update = r.kind == "a3c_data"  # its actors wait for the update they fed
    per_update = learner_batch(config)
    stale = 0
    try:
        while counters.env_steps.value < r.total_env_steps:
            rollouts: list[RolloutBatch] = []
            episodes: list[EpisodeRecord] = []
            while len(rollouts) < per_update:
                try:
                    slot, incarnation, finished = written.get(timeout=POLL_S)
                except queue_module.Empty:
                    supervisor.check()
                    continue
                if incarnation != supervisor.restarts[slots.owner(slot)]:
                    stale += 1  # written by an actor that died since: its slot is the new one's
                    continue
                held.add(slot)
                rollouts.append(slots.read(slot))
                episodes.extend(finished)
                if not release_after_update:
                    held.discard(slot)
                    slots.release(slot)
            central.update(rollouts, episodes)
            for slot in list(held):
                held.discard(slot)
                slots.release(slot)
            supervisor.check()
            session.maybe_checkpoint()
            if session.after_round(hook):
                return
    finally:  # also on Ctrl-C or a failure: never leave actors running
        supervisor.stop_all()
        session.record_restarts(supervisor, stale)


def run_actor_learner(
    config: Config, run_dir: Path, resume: bool = False, hook: ProgressHook | None = None
) -> RunResult:
    """Train ``a3c_data`` or ``impala``; writes logs and checkpoints under ``run_dir``."""
    torch.set_num_threads(1)  # the learner's process: one thread, as every worker
    r = config.runner
    session = TrainingSession(config, run_dir, n_learners=1, n_slots=1, resume=resume)
    pool = session.open_pool(cross_process=not r.serial)
    central = CentralLearner(
        config, session, None if r.serial else WeightBroadcast(session.models[0], session.ctx)
    )
    with session.running():
        if r.serial:
            _run_serial(session, central, pool, hook)
        else:
            _run_parallel(session, central, pool, hook)
    session.stats.update(central.stats())
    return session.result()
