"""The transports and the two training loops that run unchanged over them on every backend.

- Gradient topologies (``a3c``, individual learning, ``a2c``): workers that compute and apply
  updates (:class:`GradientWorkers`), and :func:`gradient_loop`, which books what they applied
  and ends each round. :class:`InProcessWorkers` is their serial transport.
- Actor-learner topologies (``a3c_data``, ``impala``): how actors' rollouts reach the learner
  and its weights reach the actors (:class:`ActorTransport`), the learner's side
  (:class:`LearnerRole`), and :func:`learner_loop`, which joins them; below, the shared-memory
  parts the process transport is made of.

:class:`RolloutSlots`: rollouts are written into preallocated shared-memory slots and only slot
numbers travel, each actor's on pipes of its own (free slots from the learner, written slots to
it through its channel). :class:`WeightBroadcast`: weights are copied into one shared model under
a :class:`~uavrl.locking.ProcessLock`, with a version counter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import torch

from uavrl.algo.batch import TENSOR_FIELDS, RolloutBatch
from uavrl.locking import ProcessLock
from uavrl.nn.models import ActorCritic, clone_model
from uavrl.runners.bookkeeping import EpisodeRecord, book_update
from uavrl.runners.learner import UpdateStats, learner_batch
from uavrl.runners.session import ProgressHook, TrainingSession

WorkerUpdate = tuple[int, UpdateStats, list[EpisodeRecord]]  # worker id, its stats, its episodes


class GradientWorkers(Protocol):
    """What the gradient loop needs of its workers, wherever they run (:class:`InProcessWorkers`
    in this process, :class:`~uavrl.runners.a3c.WorkerProcesses` as Hogwild processes,
    :class:`~uavrl.runners.ray_backend.RayDriver` as Ray actors that send gradients to a learner
    actor).

    The loop: ``start()``; ``step()`` until ``finished()``; ``close()`` at the end, also on an
    error.
    """

    def start(self) -> None: ...

    def finished(self) -> bool:
        """Every worker has its updates (the run its env steps)."""
        ...

    def step(self) -> list[WorkerUpdate]:
        """Run until updates were applied or a short wait passed (supervising the workers);
        the updates this process books (workers that book their own return none)."""
        ...

    def close(self) -> None:
        """Stop every worker; record what happened to them."""


def gradient_loop(session: TrainingSession, workers: GradientWorkers, hook: ProgressHook | None) -> None:
    """The loop of ``a3c``, individual learning and ``a2c``, the same over every transport:
    step the workers, book the updates they hand back, end the round (checkpoint when due, the
    hook)."""
    counters = session.counters
    while not workers.finished():
        for worker_id, stats, episodes in workers.step():
            book_update(worker_id, stats, episodes, counters, session.metrics, session.clock_origin)
        if session.end_round(hook):
            return


class InProcessWorkers:
    """The serial transport of the gradient loop: ``update(env_steps)`` runs one round of every
    worker in this process (one rollout each, one update each, in worker order) and returns
    worker ``i``'s stats and episodes at ``i``; the workers are done when each has ``target``
    updates."""

    def __init__(
        self,
        session: TrainingSession,
        target: int,
        update: Callable[[int], list[tuple[UpdateStats, list[EpisodeRecord]]]],
    ) -> None:
        self.counters = session.counters
        self.target = target
        self.update = update

    def start(self) -> None:
        pass  # the workers act when the loop steps them

    def finished(self) -> bool:
        return min(self.counters.worker_updates[:]) >= self.target

    def step(self) -> list[WorkerUpdate]:
        results = self.update(int(self.counters.env_steps.value))
        return [(worker_id, stats, episodes) for worker_id, (stats, episodes) in enumerate(results)]

    def close(self) -> None:
        pass


class ActorTransport(Protocol):
    """What an actor-learner learner loop needs of its actors, wherever they run
    (:class:`~uavrl.runners.actor_learner.InProcessActors` in this process,
    :class:`~uavrl.runners.actor_learner.ActorProcesses` in supervised processes,
    :class:`~uavrl.runners.ray_backend.RayDriver` as Ray actors).

    The loop: ``start()``; then per update ``take(n)`` rollouts (T, K) with the episodes they
    finished, learn, ``publish(weights, version)``, ``update_done()``; ``close()`` at the end,
    also on an error.
    """

    def start(self) -> None: ...

    def publish(self, weights: Any, version: int) -> None:
        """Make ``weights`` (the learner's :meth:`LearnerRole.weights` after ``version``
        updates) the ones actors act with next."""

    def take(self, n: int) -> tuple[list[Any], list[EpisodeRecord]]:
        """``n`` rollouts (waiting for them), as the transport's learner takes them, and the
        episodes they finished."""
        ...

    def update_done(self) -> None:
        """The update on the taken rollouts is published: what it held can be reused."""

    def close(self) -> None:
        """Stop every actor; record what happened to them."""


class LearnerRole(Protocol):
    """The learner of an actor-learner run, wherever it runs: updates on the rollouts a
    transport hands it, and books each update it applies."""

    version: int  # updates applied, the version of the weights it publishes

    def update(self, rollouts: list[Any], episodes: list[EpisodeRecord]) -> bool:
        """One update on ``rollouts``; False when none was applied (the run went back to its
        last checkpoint: the transport's actors were started again)."""
        ...

    def weights(self) -> Any:
        """The latest weights, as the transport publishes them."""
        ...


def learner_loop(
    session: TrainingSession, learner: LearnerRole, actors: ActorTransport, hook: ProgressHook | None
) -> None:
    """The learner's loop of ``a3c_data`` and ``impala``, the same over every transport: take
    ``learner_batch`` rollouts, update, publish the new weights, end the round (checkpoint when
    due, the hook). ``summary.json``'s ``learner_loop`` says where its time went, in seconds:
    ``waiting`` for rollouts and taking them (the process transport copies them out of shared
    memory), ``updating``, ``publishing`` the weights, the rest of the ``round``."""
    per_update = learner_batch(session.config)
    seconds = dict.fromkeys(("waiting", "updating", "publishing", "round"), 0.0)
    session.stats["learner_loop"] = seconds  # filled as the loop runs: an error keeps what it saw
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] += now - clock
        clock = now

    while session.counters.env_steps.value < session.config.runner.total_env_steps:
        rollouts, episodes = actors.take(per_update)
        lap("waiting")
        updated = learner.update(rollouts, episodes)
        lap("updating")
        if updated:
            actors.publish(learner.weights(), learner.version)
        actors.update_done()
        lap("publishing")
        ended = session.end_round(hook)
        lap("round")
        if ended:
            return


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
        self.model = clone_model(model).share_memory()
        self.version = ctx.Value("q", 0, lock=False)
        self.lock = ProcessLock()  # an actor killed while it copies the weights releases it

    def publish(self, model: ActorCritic, version: int) -> None:
        with self.lock:
            self.model.load_state_dict(model.state_dict())
            self.version.value = version

    def fetch(self, into: ActorCritic, have: int) -> int:
        """Copy the weights into ``into`` if they are newer than version ``have``; the version held.
        An unchanged version is read without the lock (an inference server asks at every step;
        the version is written last, under the lock, so a newer one means newer weights)."""
        if int(self.version.value) == have:
            return have
        with self.lock:
            version = int(self.version.value)
            if version != have:
                into.load_state_dict(self.model.state_dict())
        return version
