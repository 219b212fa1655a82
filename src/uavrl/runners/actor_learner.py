"""Actors and one learner: data-parallel A3C (``a3c_data``) and IMPALA (``impala``).

N actors step their K envs with the latest weights they were given (acting on the CPU, or with
``runner.actor_device`` on an accelerator) and hand each T-step
:class:`~uavrl.algo.batch.RolloutBatch` to one :class:`~uavrl.runners.learner.Learner`, which
updates on ``learner_batch`` rollouts at a time and publishes the new weights with a version.

- ``a3c_data``: every update takes one rollout from each actor, and an actor waits for the
  weights of the update it fed before acting again, so every rollout is on-policy.
- ``impala``: actors never wait for the learner; a rollout may have been acted by weights some
  versions old (the policy lag, logged as a histogram in ``summary.json``), which the learner
  corrects with V-trace.

One learner loop (:func:`~uavrl.runners.transport.learner_loop`) runs over either transport
(:class:`~uavrl.runners.transport.ActorTransport`): :class:`ActorProcesses`, where rollouts
travel as slot numbers of preallocated shared-memory slots and weights through one shared model
with a version (an actor gets a free slot before it acts: for ``a3c_data`` its one slot comes
back only once the update that read it is published), or, with ``serial``,
:class:`InProcessActors`, which steps every actor in this process as one batch when the learner
asks for rollouts.
"""

from __future__ import annotations

import queue as queue_module
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.config import Config, ImpalaRunner
from uavrl.envs.cloud import CloudPool
from uavrl.nn.models import ActorCritic, clone_model
from uavrl.runners.bookkeeping import EpisodeRecord, book_update, episode_records
from uavrl.runners.checkpoint import load_training_tensors, training_tensors
from uavrl.runners.device import CPU, actor_device, learner_device
from uavrl.runners.inference import InferenceSlots, ServedPolicy, ServerStopped, inference_server_process
from uavrl.runners.ipc import ROLLOUT
from uavrl.runners.learner import Learner, learner_optimizer, replay_stats, trajectory_replay
from uavrl.runners.metrics import histogram_summary
from uavrl.runners.seeds import SeedPurpose, derived_seed, incarnation_seed
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.supervise import ChildLink, Supervisor, child_process
from uavrl.runners.transport import (
    ActorTransport,
    RolloutSlots,
    WeightBroadcast,
    empty_rollout,
    learner_loop,
)
from uavrl.runners.worker import make_all_worker_envs, make_collector, make_worker_env

POLL_S = 0.2  # how often a blocked actor or learner looks up from its queue


def _next_free_slot(free: Any, link: ChildLink, parent: Any) -> int | None:
    while not link.stop.is_set() and (parent is None or parent.is_alive()):
        link.beat()  # waiting for the learner is a sign of life too
        if free.poll(POLL_S):
            return int(free.recv())
    return None


def _actor_process(
    config: Config,
    actor_id: int,
    incarnation: int,
    weights: WeightBroadcast,
    buffers: RolloutSlots,
    free: Any,
    pool: CloudPool | None,
    link: ChildLink,
    env_seed: int,
    served: InferenceSlots | None = None,
) -> None:
    """Act until stopped: take a free slot from ``free``, fetch the latest weights, collect,
    hand it over with this process's ``incarnation`` (0, or the restart it is). With an
    inference server (``served``) the server acts with the latest weights and the actor only
    steps its envs and samples."""
    with child_process(link.channel, actor_id) as parent:
        k = config.runner.envs_per_worker
        torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, actor_id, env_seed))
        # served: the actor's model is a host template for its policy head; the server acts
        local = clone_model(weights.model).to(CPU if served else actor_device(config))
        acting = local if served is None else ServedPolicy(local, served, actor_id, link, parent, incarnation)
        collector = make_collector(
            config, acting, make_worker_env(config, actor_id, pool), env_seed, actor_id * k
        )
        version = -1
        while (slot := _next_free_slot(free, link, parent)) is not None:
            if isinstance(acting, ServedPolicy):
                try:
                    batch, finished = collector.collect(acting, config.algo.rollout_length)
                except ServerStopped:
                    break
                batch.policy_version = acting.take_version()
            else:
                version = weights.fetch(local, version)
                batch, finished = collector.collect(local, config.algo.rollout_length)
                batch.policy_version = version
            buffers.write(slot, batch)
            link.channel.send((ROLLOUT, slot, incarnation, episode_records(finished, actor_id, k)))
        link.finished()


class CentralLearner:
    """The learner of an actor-learner run: one update per ``learner_batch`` rollouts; books
    env steps, episodes and the policy lag.

    On the CPU it updates the session's (shared-memory) model itself. On an accelerator
    (``runner.learner_device``) it updates a copy there; the session's model is the host copy
    that actors and the progress hook read (refreshed at every publish) and checkpoints save
    (with the Adam state, through ``session.sync_models``)."""

    def __init__(self, config: Config, session: TrainingSession) -> None:
        self.config = config
        self.session = session
        device = learner_device(config)
        model, optimizer = session.models[0], session.optimizers[0]
        if device.type != "cpu":
            model = clone_model(model).to(device)
            optimizer = learner_optimizer(config, model)
            load_training_tensors(training_tensors(session.models, session.optimizers), [model], [optimizer])
            session.sync_models = self._copy_to_host
        self.learner = Learner(config, model, optimizer, replay=trajectory_replay(config))
        self.version = int(session.counters.snapshot()["updates"])
        self.lag = Counter[int]()

    def _copy_to_host(self) -> bool:
        learner = self.learner
        tensors = training_tensors([learner.model], [learner.optimizer])
        load_training_tensors(tensors, self.session.models, self.session.optimizers)
        return True

    def update(self, rollouts: list[RolloutBatch], episodes: list[EpisodeRecord]) -> bool:
        session = self.session
        stats = self.learner.learn_rollouts(rollouts, int(session.counters.env_steps.value))
        self.lag.update(self.version - r.policy_version for r in rollouts)
        self.version += 1
        book_update(0, stats, episodes, session.counters, session.metrics, session.clock_origin)
        return True

    def weights(self) -> ActorCritic:
        host = self.session.models[0]
        if self.learner.model is not host:
            host.load_state_dict(self.learner.model.state_dict())
        return host

    def stats(self) -> dict[str, Any]:
        return {"policy_lag": histogram_summary(self.lag), **replay_stats(self.learner.replay)}


class InProcessActors:
    """The serial transport: every actor steps in this process, all as one batch, with the
    weights last published when the batch starts; the learner takes the batch's rollouts
    ``n`` at a time (for ``impala`` with ``learner_batch < N`` the later ones are off-policy by
    the updates before them), and a new batch is acted only when it has taken them all."""

    def __init__(self, session: TrainingSession, model: ActorCritic, pool: CloudPool | None) -> None:
        config = session.config
        self.k = config.runner.envs_per_worker
        env_seed = session.env_seed()
        torch.manual_seed(derived_seed(config.seed, SeedPurpose.ACTOR_SAMPLING, env_seed))
        self.local = clone_model(model).to(actor_device(config))
        self.collector = make_collector(config, self.local, make_all_worker_envs(config, pool), env_seed, 0)
        self.rollout_length = config.algo.rollout_length
        self.n_actors = config.runner.n_workers
        self.published: tuple[ActorCritic, int] = (model, 0)
        self.waiting: list[RolloutBatch] = []  # the current batch's rollouts not taken yet
        self.records: list[EpisodeRecord] = []

    def start(self) -> None:
        pass  # the actors act when the learner takes their rollouts

    def publish(self, model: ActorCritic, version: int) -> None:
        self.published = (model, version)

    def take(self, n: int) -> tuple[list[RolloutBatch], list[EpisodeRecord]]:
        if not self.waiting:
            model, version = self.published
            self.local.load_state_dict(model.state_dict())
            batch, finished = self.collector.collect(self.local, self.rollout_length)
            batch.policy_version = version
            k = self.k
            self.waiting = [batch.columns(i * k, (i + 1) * k) for i in range(self.n_actors)]
            self.records = episode_records(finished, 0, k)
        first = self.n_actors - len(self.waiting)  # the rollouts left are the last actors'
        actors = range(first, min(self.n_actors, first + n))
        rollouts, self.waiting = self.waiting[: len(actors)], self.waiting[len(actors) :]
        return rollouts, [r for r in self.records if r.owner in actors]

    def update_done(self) -> None:
        pass  # nothing is held between updates

    def close(self) -> None:
        pass


class ActorProcesses:
    """The process transport: N supervised actor processes write rollouts into shared-memory
    slots (:class:`~uavrl.runners.transport.RolloutSlots`) and fetch weights from a
    :class:`~uavrl.runners.transport.WeightBroadcast`. ``a3c_data``'s actors get their slot
    back only once the update that read it is published, so every rollout is on-policy;
    ``impala``'s at once. A rollout written by an actor that has died since is discarded."""

    def __init__(self, session: TrainingSession, model: ActorCritic, pool: CloudPool | None) -> None:
        config, ctx = session.config, session.ctx
        r = config.runner
        self.session = session
        template = empty_rollout(model, config.algo.rollout_length, r.envs_per_worker)
        per_actor = r.rollout_slots if isinstance(r, ImpalaRunner) else 1  # a3c_data: one, on-policy
        self.slots = RolloutSlots(template, r.n_workers, per_actor, ctx)
        self.weights = WeightBroadcast(model, ctx)
        self.held: set[int] = set()  # slots the learner has taken and not yet handed back
        self.written: queue_module.Queue[tuple[int, int, list[EpisodeRecord]]] = queue_module.Queue()
        self.release_after_update = r.kind == "a3c_data"  # its actors wait for the update they fed
        self.stale = 0
        env_seed = session.env_seed()
        weights, slots = self.weights, self.slots

        # child N, after the N actors, is the inference server, started again like an actor
        served = InferenceSlots(model, r.n_workers, r.envs_per_worker, ctx) if r.served else None

        def make_process(actor_id: int, incarnation: int, link: ChildLink) -> Any:
            if served is not None and actor_id == r.n_workers:
                served.server_incarnation.value = incarnation  # its actors ask the new one again
                serving = (config, weights, served, link)
                return ctx.Process(target=inference_server_process, args=serving, name="uavrl-inference")
            free = slots.free_slots_of(actor_id, incarnation, self.held)
            seed = incarnation_seed(env_seed, actor_id, incarnation)
            agent_pool = session.worker_pool(actor_id, incarnation, pool)
            args = (config, actor_id, incarnation, weights, slots, free, agent_pool, link, seed, served)
            return ctx.Process(target=_actor_process, args=args, name=f"uavrl-actor-{actor_id}")

        def on_message(actor_id: int, message: tuple[Any, ...]) -> None:
            if message[0] == ROLLOUT:
                self.written.put(message[1:])
            else:
                session.log_message(actor_id, message)

        self.supervisor = Supervisor(
            make_process,
            r.n_workers + (served is not None),
            ctx,
            r.max_restarts,
            on_message,
            r.heartbeat_timeout_s,
            session.record_event,
            "actor",
            {r.n_workers: "inference server"} if served is not None else None,
        )

    def publish(self, model: ActorCritic, version: int) -> None:
        self.weights.publish(model, version)

    def start(self) -> None:
        self.supervisor.start()

    def take(self, n: int) -> tuple[list[RolloutBatch], list[EpisodeRecord]]:
        rollouts: list[RolloutBatch] = []
        episodes: list[EpisodeRecord] = []
        while len(rollouts) < n:
            try:
                slot, incarnation, finished = self.written.get(timeout=POLL_S)
            except queue_module.Empty:
                self.supervisor.check()
                continue
            if incarnation != self.supervisor.restarts[self.slots.owner(slot)]:
                self.stale += 1  # written by an actor that died since: its slot is the new one's
                continue
            self.held.add(slot)
            rollouts.append(self.slots.read(slot))
            episodes.extend(finished)
            if not self.release_after_update:
                self.held.discard(slot)
                self.slots.release(slot)
        return rollouts, episodes

    def update_done(self) -> None:
        for slot in list(self.held):
            self.held.discard(slot)
            self.slots.release(slot)
        self.supervisor.check()

    def close(self) -> None:
        self.supervisor.stop_all()
        self.session.record_restarts(self.supervisor, self.stale)


def run_actor_learner(
    config: Config, run_dir: Path, resume: bool = False, hook: ProgressHook | None = None
) -> RunResult:
    """Train ``a3c_data`` or ``impala``; writes logs and checkpoints under ``run_dir``."""
    torch.set_num_threads(1)  # the learner's process: one thread, as every worker
    r = config.runner
    session = TrainingSession(config, run_dir, n_learners=1, n_slots=1, resume=resume)
    pool = session.open_pool(cross_process=not r.serial)
    central = CentralLearner(config, session)
    with session.running():
        model = central.weights()  # the host copy: actors act on the CPU
        actors: ActorTransport = (InProcessActors if r.serial else ActorProcesses)(session, model, pool)
        actors.publish(model, central.version)
        try:
            actors.start()
            learner_loop(session, central, actors, hook)
        finally:  # also on Ctrl-C or a failure: never leave actors running
            actors.close()
    session.stats.update(central.stats())
    return session.result()
