"""Actors and one learner: data-parallel A3C (``a3c_data``) and IMPALA (``impala``).

N actors step their K envs with the latest weights they were given and hand each T-step
:class:`~uavrl.algo.batch.RolloutBatch` to one :class:`~uavrl.runners.learner.Learner`, which
updates on ``learner_batch`` rollouts at a time and publishes the new weights with a version.

- ``a3c_data``: every update takes one rollout from each actor, and an actor waits for the
  weights of the update it fed before acting again, so every rollout is on-policy.
- ``impala``: actors never wait for the learner; a rollout may have been acted by weights some
  versions old (the policy lag, logged as a histogram in ``summary.json``), which the learner
  corrects with V-trace.

Transport (:class:`RolloutSlots`, :class:`WeightBroadcast`): rollouts are written into
preallocated shared-memory slots and only slot numbers travel, each actor's on pipes of its own
(free slots from the learner, written slots to it through its channel); weights are copied into
one shared model under a :class:`~uavrl.locking.ProcessLock`, with a version counter. An actor
gets a free slot before it acts: for ``a3c_data`` its one slot comes back only once the update
that read it is published. ``serial`` runs the actors in this process, stepped as one batch,
then the learner.
"""

from __future__ import annotations

import queue as queue_module
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from uavrl.algo.batch import TENSOR_FIELDS, RolloutBatch
from uavrl.algo.replay import TrajectoryReplay
from uavrl.config import Config
from uavrl.envs.cloud import CloudPool
from uavrl.locking import ProcessLock
from uavrl.nn.models import ActorCritic
from uavrl.runners.a3c import book_update
from uavrl.runners.ipc import ROLLOUT
from uavrl.runners.learner import Learner
from uavrl.runners.metrics import histogram_summary
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.supervise import ChildLink, Supervisor, child_process
from uavrl.runners.worker import (
    EpisodeRecord,
    derived_seed,
    episode_records,
    incarnation_seed,
    local_copy,
    make_all_worker_envs,
    make_collector,
    make_worker_env,
)

POLL_S = 0.2  # how often a blocked actor or learner looks up from its queue


def learner_batch(config: Config) -> int:
    """Rollouts per learner update: every actor's for ``a3c_data``, ``learner_batch`` (default
    all N) for ``impala``."""
    r = config.runner
    return r.n_workers if r.kind == "a3c_data" or r.learner_batch is None else r.learner_batch


def trajectory_replay(config: Config) -> TrajectoryReplay | None:
    """The learner's replay of recent rollouts (``runner.replay_size``, ``impala`` only), seeded
    by the run's seed; None without one."""
    r = config.runner
    if r.replay_size == 0:
        return None
    return TrajectoryReplay(r.replay_size, r.replay_ratio, derived_seed(config.seed, 5))


def replay_stats(replay: TrajectoryReplay | None) -> dict[str, Any]:
    """``summary.json``'s record of the replay: its settings and the ages of what it replayed."""
    if replay is None:
        return {}
    return {
        "replay": {
            "capacity": replay.capacity,
            "ratio": replay.ratio,
            "replayed_rollouts": sum(replay.ages.values()),
            "age": histogram_summary(replay.ages),
        }
    }


def empty_rollout(model: ActorCritic, length: int, copies: int) -> RolloutBatch:
    """A zero :class:`RolloutBatch` of T = ``length`` steps of B = ``copies`` for ``model``."""
    head, t_b = model.policy, (length, copies)
    obs_dim = model.spec.obs_dim
    return RolloutBatch(
        obs=torch.zeros(*t_b, obs_dim),
        actions=torch.zeros(*t_b, *head.action_shape, dtype=head.action_dtype),
        behaviour_params=torch.zeros(*t_b, head.param_dim),
        rewards=torch.zeros(t_b),
        terminated=torch.zeros(t_b),
        truncated=torch.zeros(t_b),
        final_values=torch.zeros(t_b),
        starts=torch.zeros(t_b),
        h0=model.initial_state(copies),
        last_value=torch.zeros(copies),
        next_obs=torch.zeros(copies, obs_dim),
        next_start=torch.zeros(copies),
    )


class RolloutSlots:
    """Rollout batches preallocated in shared memory, ``per_actor`` slots for each actor.

    Actor ``i`` writes into its slots ``[i * per_actor, (i + 1) * per_actor)``; the learner
    reads them; only slot numbers travel. ``free[i]`` is the pipe of actor ``i``'s free slots:
    the learner (this process) its only writer, the actor its only reader, so neither can block
    the other by dying; it holds both ends, so a send never fails, and at most ``per_actor``
    numbers wait in it. A written slot goes to the learner through the actor's channel
    (:data:`~uavrl.runners.ipc.ROLLOUT`).
    """

    def __init__(self, template: RolloutBatch, n_actors: int, per_actor: int, ctx: Any) -> None:
        self.per_actor = per_actor
        self.ctx = ctx
        n = n_actors * per_actor
        self.buffers = [
            {name: torch.zeros_like(getattr(template, name)).share_memory_() for name in TENSOR_FIELDS}
            for _ in range(n)
        ]
        self.versions = torch.zeros(n, dtype=torch.int64).share_memory_()
        self.free = [self._free_pipe(actor, held=set()) for actor in range(n_actors)]

    def __getstate__(self) -> dict[str, Any]:
        # an actor gets the buffers; its free slots come on its own pipe (free_slots_of)
        return {k: v for k, v in self.__dict__.items() if k not in ("free", "ctx")}

    def _free_pipe(self, actor: int, held: set[int]) -> tuple[Any, Any]:
        reader, writer = self.ctx.Pipe(duplex=False)
        for slot in range(actor * self.per_actor, (actor + 1) * self.per_actor):
            if slot not in held:
                writer.send(slot)
        return reader, writer

    def write(self, slot: int, batch: RolloutBatch) -> None:
        buffer = self.buffers[slot]
        for name in TENSOR_FIELDS:
            buffer[name].copy_(getattr(batch, name))
        self.versions[slot] = batch.policy_version

    def read(self, slot: int) -> RolloutBatch:
        """A copy of the slot's rollout (the slot can be handed back right after)."""
        buffer = self.buffers[slot]
        return RolloutBatch(
            **{name: buffer[name].clone() for name in TENSOR_FIELDS},
            policy_version=int(self.versions[slot]),
        )

    def release(self, slot: int) -> None:
        self.free[self.owner(slot)][1].send(slot)

    def owner(self, slot: int) -> int:
        return slot // self.per_actor

    def free_slots_of(self, actor: int, incarnation: int, held: set[int]) -> Any:
        """The reading end of ``actor``'s free slots for its ``incarnation``: a restarted actor
        gets a fresh pipe with all its slots but those ``held`` by the learner (a slot the dead
        one wrote and the learner has not read arrives stale and is discarded, so handing it out
        again is safe; a number it was reading when it died is not lost with its pipe)."""
        if incarnation > 0:
            for end in self.free[actor]:
                end.close()
            self.free[actor] = self._free_pipe(actor, held)
        return self.free[actor][0]


class WeightBroadcast:
    """The learner's latest weights in one shared model, with a version (learner updates)."""

    def __init__(self, model: ActorCritic, ctx: Any) -> None:
        self.model = local_copy(model).share_memory()
        self.version = ctx.Value("q", 0, lock=False)
        self.lock = ProcessLock()  # an actor killed while it copies the weights releases it

    def publish(self, model: ActorCritic, version: int) -> None:
        with self.lock:
            self.model.load_state_dict(model.state_dict())
            self.version.value = version

    def fetch(self, into: ActorCritic, have: int) -> int:
        """Copy the weights into ``into`` if they are newer than version ``have``; the version held."""
        with self.lock:
            version = int(self.version.value)
            if version != have:
                into.load_state_dict(self.model.state_dict())
        return version


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
        torch.manual_seed(derived_seed(config.seed, 3, actor_id, env_seed))
        local = local_copy(weights.model)
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
    torch.manual_seed(derived_seed(config.seed, 3, env_seed))
    local = local_copy(central.learner.model)
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
