"""The Ray backend (``runner.backend: ray``): the actor and learner roles as Ray actors.

This process is a thin driver: run counters, the metrics writer, checkpoints and the progress
hook stay here, as on one machine. One learner actor owns the model and Adam; N rollout actors
own their envs. Each actor asks for ``num_cpus=1``, runs one torch thread and never forks.
Rollouts and gradients go from the rollout actors to the learner as object references (the
driver passes the references on, not the data); weights come back as one object per version.

- ``impala`` and ``a3c_data``: rollout actors collect T steps and hand the rollout to the
  learner, which updates on ``learner_batch`` of them (``a3c_data``: one from every actor,
  then every actor acts with the new weights; ``impala``: an actor starts its next rollout
  with the latest weights at once, and V-trace corrects the lag).
- ``a3c``: gradient parallelism. A rollout actor computes the loss gradient on its own copy
  and sends it flat, stamped with the version of the weights it used; the learner applies it
  with Adam as it arrives, unless it is more than ``runner.max_grad_staleness`` versions old,
  in which case it is dropped and counted.

Faults. A rollout actor that dies is restarted by Ray (``max_restarts``) and acts on new env
streams; its rollout in flight is dropped and counted, and the run still trains its full
env-step budget. A learner that dies is restarted by Ray and loaded from the last checkpoint;
the run goes back to that checkpoint (counters and logs cut as ``--resume`` does) and trains
its full budget from there. An actor (rollout or learner) that leaves a ping or a call
unanswered for ``runner.heartbeat_timeout_s`` (stopped, stuck) is killed through Ray, which
restarts it as above; one that Ray is restarting may take ``STARTUP_TIMEOUT_S`` to answer.
Every fault is written to ``events.log``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.config import A3CRunner, Config, ImpalaRunner
from uavrl.errors import ConfigError
from uavrl.nn.models import ModelSpec, build_model
from uavrl.runners.bookkeeping import EpisodeRecord, book_update, episode_records
from uavrl.runners.checkpoint import load_training_tensors, training_tensors
from uavrl.runners.device import host_copy, learner_device
from uavrl.runners.learner import (
    Learner,
    UpdateStats,
    learner_optimizer,
    loss_function,
    loss_gradient,
    replay_stats,
    scheduled_entropy_coef,
    trajectory_replay,
)
from uavrl.runners.metrics import histogram_summary
from uavrl.runners.seeds import SeedPurpose, derived_seed, incarnation_seed
from uavrl.runners.session import ProgressHook, RunResult, TrainingSession
from uavrl.runners.supervise import STARTUP_TIMEOUT_S, WorkerFailed
from uavrl.runners.transport import WorkerUpdate, gradient_loop, learner_loop
from uavrl.runners.worker import make_collector, make_worker_env

POLL_S = 0.2  # how long the driver waits on results before it looks at its actors again
RESTART_WAIT_S = 300.0  # how long an actor Ray is restarting may take to answer again
PING_S = 2.0  # how often the driver asks each actor which process answers for it


@dataclass
class Weights:
    """One version of the learner's weights, as it travels to the rollout actors."""

    version: int
    state: dict[str, torch.Tensor]


@dataclass
class RolloutInfo:
    """What the driver needs of a rollout or gradient (the data itself goes to the learner)."""

    actor_id: int
    version: int
    env_steps: int
    episodes: list[EpisodeRecord]
    stats: UpdateStats | None = None  # a3c: the loss terms of the gradient
    finite: bool = True


@dataclass
class Applied:
    """The learner's answer to a gradient: applied, dropped as stale, or skipped (non-finite)."""

    applied: bool
    staleness: int
    lr: float


class RolloutActor:
    """N of these: K envs of worker ``actor_id`` and a copy of the model.

    ``incarnation`` (the driver's count of this actor's deaths) comes with every call; a
    restarted actor sees a new one and builds its envs on new streams.
    """

    def __init__(self, config: Config, spec: ModelSpec, actor_id: int, env_seed: int) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.actor_id = actor_id
        self.env_seed = env_seed
        self.local = build_model(spec)
        self.incarnation: int | None = None
        self.collector: Any = None
        self.loss = loss_function(self.config)

    def where(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def collect(self, weights: Weights, incarnation: int) -> tuple[RolloutBatch, RolloutInfo]:
        """One T-step rollout with ``weights`` (two returns: the batch for the learner, the
        info for the driver)."""
        if incarnation != self.incarnation:
            seed = incarnation_seed(self.env_seed, self.actor_id, incarnation)
            torch.manual_seed(derived_seed(self.config.seed, SeedPurpose.ACTOR_SAMPLING, self.actor_id, seed))
            k = self.config.runner.envs_per_worker
            env = make_worker_env(self.config, self.actor_id, None)
            self.collector = make_collector(self.config, self.local, env, seed, self.actor_id * k)
            self.incarnation = incarnation
        self.local.load_state_dict(weights.state)
        batch, finished = self.collector.collect(self.local, self.config.algo.rollout_length)
        batch.policy_version = weights.version
        k = self.config.runner.envs_per_worker
        episodes = episode_records(finished, self.actor_id, k)
        return batch, RolloutInfo(self.actor_id, weights.version, batch.env_steps, episodes)

    def gradient(
        self, weights: Weights, incarnation: int, env_steps: int
    ) -> tuple[torch.Tensor | None, RolloutInfo]:
        """One rollout, then the clipped loss gradient on it (at the entropy coefficient scheduled
        for ``env_steps`` run-wide env steps), flat (None if non-finite)."""
        batch, info = self.collect(weights, incarnation)
        entropy_coef = scheduled_entropy_coef(self.config, env_steps)
        max_norm = self.config.algo.max_grad_norm
        terms, grad_norm, finite = loss_gradient(self.loss, self.local, batch, max_norm, entropy_coef)
        flat = None
        if finite:
            flat = torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in self.local.parameters()
                ]
            )
        info.finite = finite
        # the learner fills in the learning rate it applied the gradient with
        info.stats = UpdateStats.of(terms, info.env_steps, finite, grad_norm, 0.0, entropy_coef)
        return flat, info


class LearnerNotLoaded(RuntimeError):
    """A learner actor was asked for its model before the driver loaded one into it: Ray
    restarted it after its process died between two calls, and it holds fresh weights."""


class LearnerActor:
    """The model and Adam of the run, updated on rollouts or on gradients, on the learner's
    device (``runner.learner_device``: with ``cuda``, the GPU Ray gave this actor); weights and
    state leave it as host copies."""

    def __init__(self, config: Config, spec: ModelSpec) -> None:
        torch.set_num_threads(1)
        self.config = config
        self.model = build_model(spec).to(learner_device(config))
        self.optimizer = learner_optimizer(config, self.model)
        self.learner = Learner(self.config, self.model, self.optimizer, replay=trajectory_replay(self.config))
        self.version = 0
        self.loaded = False

    def _check_loaded(self) -> None:
        if not self.loaded:
            raise LearnerNotLoaded(f"learner pid {os.getpid()} holds no loaded model (a restart)")

    def where(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}

    def load(self, tensors: dict[str, torch.Tensor], version: int) -> Weights:
        """Take weights and Adam state (a checkpoint's); returns the weights."""
        load_training_tensors(tensors, [self.model], [self.optimizer])
        self.version = version
        self.loaded = True
        return self.weights()

    def weights(self) -> Weights:
        return Weights(self.version, {k: host_copy(v) for k, v in self.model.state_dict().items()})

    def state(self) -> tuple[dict[str, torch.Tensor], int]:
        self._check_loaded()
        return training_tensors([self.model], [self.optimizer]), self.version

    def update(self, env_steps: int, *batches: RolloutBatch) -> tuple[UpdateStats, Weights]:
        """One update on the rollouts side by side; the stats and the new weights."""
        self._check_loaded()
        stats = self.learner.learn_rollouts(list(batches), env_steps)
        self.version += 1
        return stats, self.weights()

    def replay_stats(self) -> dict[str, Any]:
        """The replay's record (empty without one); a restarted learner starts a new replay."""
        return replay_stats(self.learner.replay)

    def apply(
        self, flat: torch.Tensor | None, version: int, env_steps: int, max_staleness: int
    ) -> tuple[Applied, Weights | None]:
        """Apply a gradient computed with weights ``version``; the new weights, or None when
        it was dropped (more than ``max_staleness`` versions old) or non-finite."""
        self._check_loaded()
        staleness = self.version - version
        lr = self.learner.learning_rate(env_steps)
        self.learner.check_finite(flat is not None, lambda: "a rollout actor's gradient")
        if flat is None or staleness > max_staleness:
            return Applied(False, staleness, lr), None
        offset = 0
        for p in self.model.parameters():
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        self.learner.step(self.model, env_steps)
        self.version += 1
        return Applied(True, staleness, lr), self.weights()


def actor_name(run_dir: Path, role: str) -> str:
    """The Ray name of a run's ``role`` actor (``learner``), unique per run directory."""
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
    return f"uavrl-{role}-{digest}"


def connect(address: str | None, local_cpus: int) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start Ray on this machine
    with ``local_cpus`` logical CPUs; True if this call started it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # Ray nices its workers (15) by default: on a busy machine the actors, which do all the
        # work, would starve behind everything else
        os.environ.setdefault("RAY_worker_niceness", "0")
        # "local": a new instance, owned by this driver (without it ray.init would join a cluster
        # left by an earlier `ray start` on this machine)
        ray.init(address="local", num_cpus=local_cpus, include_dashboard=False)
    return True


def check_resources(config: Config) -> None:
    import ray

    need = config.runner.n_workers + 1
    have = ray.cluster_resources().get("CPU", 0)
    if have < need:
        raise ConfigError(
            f"runner.backend: ray needs {need} CPUs (runner.n_workers={config.runner.n_workers} rollout "
            f"actors and one learner, num_cpus=1 each), the cluster has {have:g}"
        )
    if learner_gpus(config) > ray.cluster_resources().get("GPU", 0):
        raise ConfigError(
            f"runner.learner_device={config.runner.learns_on!r} on runner.backend: ray needs a GPU for "
            "the learner actor, and the cluster has none"
        )


def learner_gpus(config: Config) -> int:
    """GPUs the learner actor asks Ray for: one for a ``cuda`` learner device, else none."""
    return 0 if config.runner.learns_on == "cpu" else 1


@dataclass
class FaultLog:
    restarts: list[int]
    rollouts_dropped: int = 0
    learner_restarts: int = 0
    env_steps_rolled_back: int = 0
    stale_gradients_dropped: int = 0
    lag: Counter[int] = field(default_factory=Counter)


class RayDriver:
    """The driver of a Ray run: keeps every rollout actor busy, feeds the learner actor.

    It runs the loops every backend runs: for ``a3c``, :func:`~uavrl.runners.transport.gradient_loop`
    over it as the workers (rollout actors send gradients, the learner actor applies them); for
    ``a3c_data`` and ``impala``, :func:`~uavrl.runners.transport.learner_loop` over it as both
    sides, the transport of the rollout actors (rollouts travel as object references) and the
    driver's side of the remote learner. A learner call that finds the learner dead rolls the
    run back to its last checkpoint."""

    def __init__(self, config: Config, session: TrainingSession, hook: ProgressHook | None) -> None:
        import ray

        self.ray = ray
        self.config = config
        self.session = session
        self.hook = hook
        r = config.runner
        options = {"num_cpus": 1, "max_restarts": r.max_restarts, "max_task_retries": 0}
        self.learner: Any = (
            ray.remote(LearnerActor)
            .options(name=actor_name(session.run_dir, "learner"), num_gpus=learner_gpus(config), **options)
            .remote(config, session.spec)
        )
        env_seed = session.env_seed()
        remote_actor = ray.remote(RolloutActor).options(scheduling_strategy="SPREAD", **options)
        self.actors: list[Any] = [
            remote_actor.remote(config, session.spec, i, env_seed) for i in range(r.n_workers)
        ]
        self.faults = FaultLog([0] * r.n_workers)
        staleness = r.max_grad_staleness if isinstance(r, A3CRunner) else None
        self.max_staleness = r.n_workers if staleness is None else staleness
        self.acting_weights: Any = None  # the weights actors act with (an object reference)
        self.latest: Any = None  # the learner's latest weights, published after its update
        self.version = 0
        self.taken: list[int] = []  # actors whose rollouts the learner took last
        self.inflight: dict[Any, tuple[int, Any]] = {}  # info ref -> (actor, data ref)
        self.learner_pid, self.pids = 0, [0] * r.n_workers  # which process answers for each
        self.pings: dict[Any, int] = {}  # ping ref -> actor
        self.interrupted = False  # set by the SIGINT handler of run_ray
        self.last_ping = [time.monotonic()] * r.n_workers
        self.restarting: set[int] = set()  # rollout actors killed for silence, not yet answering
        session.sync_models = self._pull_models

    def placement(self) -> dict[str, Any]:
        """Node ids of the learner and of every rollout actor (waits for them to start; one that
        dies while it starts is waited for while Ray restarts it)."""
        handles = {"learner": self.learner, **{f"rollout actor {i}": a for i, a in enumerate(self.actors)}}
        asked = {who: handle.where.remote() for who, handle in handles.items()}  # they start together
        where = [self._where_at_start(handles[who], who, ref) for who, ref in asked.items()]
        self.learner_pid = int(where[0]["pid"])
        self.pids = [int(w["pid"]) for w in where[1:]]
        return {"learner": where[0]["node_id"], "actors": [w["node_id"] for w in where[1:]]}

    def _where_at_start(self, handle: Any, who: str, ref: Any) -> dict[str, Any]:
        """The answer to ``ref`` (``handle.where``), asked again while Ray restarts an actor that
        died in its start-up (up to ``RESTART_WAIT_S``); the run stops if it does not start."""
        deadline, told = time.monotonic() + RESTART_WAIT_S, False
        while True:
            try:
                answer: dict[str, Any] = self.ray.get(ref, timeout=STARTUP_TIMEOUT_S)
                return answer
            except self.ray.exceptions.GetTimeoutError:
                raise WorkerFailed(f"{who} did not start within {STARTUP_TIMEOUT_S:g} s") from None
            except self.ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"{who} did not start within {RESTART_WAIT_S:g} s") from None
                if not told:
                    self.session.record_event(f"{who} died while it started; waiting for Ray to restart it")
                    told = True
                time.sleep(POLL_S)
                ref = handle.where.remote()
            except self.ray.exceptions.RayActorError:
                raise WorkerFailed(f"{who} died while it started, its restarts used up") from None

    def _pull_models(self) -> bool:
        asked = time.monotonic()
        try:
            tensors, _ = self.ray.get(self.learner.state.remote(), timeout=self.heartbeat_s)
        except self.ray.exceptions.GetTimeoutError:
            self._kill_silent(self.learner, "learner", asked)
            return False  # the next learner call finds it restarted and rolls the run back
        except self.ray.exceptions.RayActorError:
            return False
        except self.ray.exceptions.RayTaskError as err:
            self._raise_unless_restarted(err)
            return False  # restarted: the next learner call rolls the run back
        load_training_tensors(tensors, self.session.models, self.session.optimizers)
        return True

    def _push_models(self) -> None:
        """The session's models and Adam state (start, resume, or a restarted learner) to the
        learner; its weights become the current version."""
        version = int(self.session.counters.snapshot()["updates"])
        tensors = training_tensors(self.session.models, self.session.optimizers)
        while True:
            asked = time.monotonic()
            self.acting_weights = self.learner.load.remote(tensors, version)
            try:
                self.ray.get(self.acting_weights, timeout=self.heartbeat_s)
                break
            except self.ray.exceptions.GetTimeoutError:
                self._kill_silent(self.learner, "learner", asked)
            except self.ray.exceptions.RayActorError:
                pass
            self._learner_restarted("it died while loading the models")
        self.version = version

    @property
    def heartbeat_s(self) -> float:
        return self.config.runner.heartbeat_timeout_s

    def _kill_silent(self, handle: Any, who: str, since: float) -> None:
        """Kill ``handle``'s process, silent since ``since``; Ray restarts it (if restarts are left)."""
        self.session.record_event(
            f"{who} silent for {time.monotonic() - since:.0f} s "
            f"(runner.heartbeat_timeout_s={self.heartbeat_s:g}); killing it"
        )
        self.ray.kill(handle, no_restart=False)

    # --- rollout actors -------------------------------------------------------------------

    def _submit(self, actor_id: int) -> None:
        actor, incarnation = self.actors[actor_id], self.faults.restarts[actor_id]
        if self.config.runner.kind == "a3c":
            env_steps = int(self.session.counters.env_steps.value)
            data, info = actor.gradient.options(num_returns=2).remote(
                self.acting_weights, incarnation, env_steps
            )
        else:
            data, info = actor.collect.options(num_returns=2).remote(self.acting_weights, incarnation)
        self.inflight[info] = (actor_id, data)

    def _next_result(self) -> tuple[RolloutInfo, Any] | None:
        """The next finished rollout (its info and data ref), or None after ``POLL_S``. A
        failed call, or a ping answered by a new process, means Ray restarted the actor: its
        rollout is dropped and it acts again."""
        if self.interrupted:
            raise KeyboardInterrupt
        self._check_actors()
        ready, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=POLL_S)
        if not ready:
            return None
        actor_id, data = self.inflight.pop(ready[0])
        try:
            info: RolloutInfo = self.ray.get(ready[0])
        except self.ray.exceptions.RayActorError as err:
            pid = self._answering_pid(self.actors[actor_id], f"rollout actor {actor_id}")
            self._actor_answered(actor_id, pid, f"{type(err).__name__}")
            if actor_id not in {i for i, _ in self.inflight.values()}:
                self._submit(actor_id)
            return None
        return info, data

    def _check_actors(self) -> None:
        """Ping every rollout actor at most every ``PING_S``: the error of a task whose actor
        died does not always reach ``ray.wait`` (seen across nodes), a new pid always tells.
        One that leaves its ping unanswered for the heartbeat timeout (``STARTUP_TIMEOUT_S``
        while Ray restarts it) is killed."""
        now = time.monotonic()
        for i, actor in enumerate(self.actors):
            waiting = i in self.pings.values()
            limit = STARTUP_TIMEOUT_S if i in self.restarting else self.heartbeat_s
            if waiting and now - self.last_ping[i] > limit:
                self._kill_silent(actor, f"rollout actor {i}", self.last_ping[i])
                self.restarting.add(i)
                self._forget_pings(i)
                waiting = False
            if not waiting and now - self.last_ping[i] > PING_S:
                self.pings[actor.where.remote()] = i
                self.last_ping[i] = now
        if not self.pings:
            return
        ready, _ = self.ray.wait(list(self.pings), num_returns=len(self.pings), timeout=0)
        for ref in ready:
            i = self.pings.pop(ref)
            try:
                pid: int | None = int(self.ray.get(ref)["pid"])
            except self.ray.exceptions.ActorUnavailableError:
                continue  # being restarted: the next ping tells
            except self.ray.exceptions.RayActorError:
                pid = None
            self.restarting.discard(i)
            if pid != self.pids[i]:
                self._actor_answered(i, pid, "a new process answered its ping")
                for ref_i in [r for r, (owner, _) in self.inflight.items() if owner == i]:
                    del self.inflight[ref_i]
                self._submit(i)

    def _forget_pings(self, actor_id: int) -> None:
        self.pings = {ref: owner for ref, owner in self.pings.items() if owner != actor_id}

    def _count_late_deaths(self) -> None:
        """At the end of the run: an actor that died in its last rollout, which the run did
        not wait for, is counted too (each actor answers once Ray has restarted it)."""
        for i, actor in enumerate(self.actors):
            pid: int | None
            # one stopped now is not waited for (the run is over, and close() kills it); one
            # being restarted is
            limit = STARTUP_TIMEOUT_S if i in self.restarting else self.heartbeat_s
            try:
                pid = int(self.ray.get(actor.where.remote(), timeout=limit)["pid"])
            except self.ray.exceptions.GetTimeoutError:
                self.session.record_event(f"rollout actor {i} did not answer at the end of the run")
                continue
            except self.ray.exceptions.ActorUnavailableError:  # Ray is restarting it
                pid = self._answering_pid(actor, f"rollout actor {i}")
            except self.ray.exceptions.RayActorError:
                pid = None
            if pid is not None and pid != self.pids[i]:
                self._actor_answered(i, pid, "found at the end of the run")

    def _answering_pid(self, handle: Any, who: str) -> int | None:
        """The pid of ``handle``'s process once it answers (Ray may be restarting it); None if
        it is dead for good (its restarts used up). One silent for ``STARTUP_TIMEOUT_S`` (time
        for a restart) is killed, and asked again."""
        deadline = time.monotonic() + RESTART_WAIT_S
        while True:
            asked = time.monotonic()
            try:
                return int(self.ray.get(handle.where.remote(), timeout=STARTUP_TIMEOUT_S)["pid"])
            except self.ray.exceptions.GetTimeoutError:
                self._kill_silent(handle, who, asked)
            except self.ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(POLL_S)
            except self.ray.exceptions.RayActorError:
                return None

    def _actor_answered(self, actor_id: int, pid: int | None, what: str) -> None:
        """Rollout actor ``actor_id`` lost a rollout (``what`` happened) and ``pid`` answers for
        it now: a new pid is a restart (counted), None means dead for good (the run stops)."""
        r = self.config.runner
        self.faults.rollouts_dropped += 1
        n = self.faults.restarts[actor_id]
        if pid is None:
            self.session.record_event(
                f"rollout actor {actor_id} died after {n} restarts (runner.max_restarts={r.max_restarts}); "
                "stopping the run"
            )
            raise WorkerFailed(f"rollout actor {actor_id} failed for good ({what})")
        if pid == self.pids[actor_id]:
            self.session.record_event(f"rollout actor {actor_id}: {what}; its rollout is dropped")
            return
        self.pids[actor_id] = pid
        self.faults.restarts[actor_id] = n + 1
        self._forget_pings(actor_id)  # a ping still out went to the dead process
        self.last_ping[actor_id] = time.monotonic()
        self.restarting.discard(actor_id)
        self.session.record_event(
            f"rollout actor {actor_id} died ({what}); its rollout in flight is dropped; "
            f"restart {n + 1} of {r.max_restarts}"
        )

    # --- learner ----------------------------------------------------------------------------

    def _learner_call(self, ref: Any) -> Any:
        """The learner's result; a dead learner is restarted from the last checkpoint (returns
        None: everything in flight was dropped and resubmitted). While waiting, the learner is
        pinged: a new pid means it died though the call's error has not arrived; no answer for
        the heartbeat timeout, that it is stopped or stuck: it is killed."""
        answered = time.monotonic()
        while True:
            ready, _ = self.ray.wait([ref], timeout=PING_S)
            if ready:
                try:
                    return self.ray.get(ref)
                except self.ray.exceptions.RayActorError as err:
                    self._learner_died(type(err).__name__)
                    return None
                except self.ray.exceptions.RayTaskError as err:
                    # it died between two calls, and this one reached its restarted process
                    self._raise_unless_restarted(err)
                    self._learner_died("its restarted process answered")
                    return None
            try:  # alive and busy: the ping answers after the call, which is then ready
                pid = int(self.ray.get(self.learner.where.remote(), timeout=PING_S)["pid"])
            except (self.ray.exceptions.GetTimeoutError, self.ray.exceptions.ActorUnavailableError):
                if time.monotonic() - answered > self.heartbeat_s:
                    self._kill_silent(self.learner, "learner", answered)
                    self._learner_died("killed for its silence")
                    return None
                continue
            except self.ray.exceptions.RayActorError as err:
                self._learner_died(type(err).__name__)
                return None
            answered = time.monotonic()
            if pid != self.learner_pid:
                self._learner_died("a new process answered its ping")
                return None

    @staticmethod
    def _raise_unless_restarted(err: Exception) -> None:
        """Re-raise a learner call's error unless it is a restarted learner's refusal."""
        if not isinstance(getattr(err, "cause", None), LearnerNotLoaded):
            raise err

    def _learner_restarted(self, what: str) -> None:
        """Wait for the learner's process to answer again after ``what``; count a new one as a
        restart, and stop the run if it is dead for good."""
        r = self.config.runner
        pid = self._answering_pid(self.learner, "learner")
        if pid is None:
            self.session.record_event(
                f"learner died after {self.faults.learner_restarts} restarts "
                f"(runner.max_restarts={r.max_restarts}); stopping the run"
            )
            raise WorkerFailed(f"the learner failed for good ({what})")
        if pid != self.learner_pid:
            self.learner_pid = pid
            self.faults.learner_restarts += 1

    def _learner_died(self, what: str) -> None:
        r, session = self.config.runner, self.session
        self._learner_restarted(what)
        before = int(session.counters.env_steps.value)
        session.rollback_to_checkpoint()
        after = int(session.counters.env_steps.value)
        self.faults.env_steps_rolled_back += before - after
        self._push_models()
        dropped = len(self.inflight)
        self.faults.rollouts_dropped += dropped
        self.inflight.clear()
        session.record_event(
            f"learner died ({what}); restarted from the last checkpoint: env steps "
            f"{before} -> {after}, {dropped} rollouts in flight dropped "
            f"(learner restart {self.faults.learner_restarts} of {r.max_restarts})"
        )
        for i in range(len(self.actors)):
            self._submit(i)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        self._push_models()
        if not (self.session.checkpoint_dir / "last.json").exists():
            self.session.checkpoint()  # a restarted learner always has a checkpoint to go back to
        self.start()
        if self.config.runner.kind == "a3c":
            gradient_loop(self.session, self, self.hook)
        else:
            learner_loop(self.session, self, self, self.hook)
        self._count_late_deaths()

    # --- the actor-learner loop's transport (ActorTransport) and learner (LearnerRole) ------

    def start(self) -> None:
        for i in range(len(self.actors)):
            self._submit(i)

    def publish(self, weights: Any, version: int) -> None:
        self.acting_weights, self.version = weights, version

    def take(self, n: int) -> tuple[list[tuple[RolloutInfo, Any]], list[EpisodeRecord]]:
        """``n`` finished rollouts (info, data reference); ``impala``'s actors act again at once."""
        taken: list[tuple[RolloutInfo, Any]] = []
        while len(taken) < n:
            result = self._next_result()
            if result is None:
                continue
            taken.append(result)
            if self.config.runner.kind == "impala":  # never waits for the learner
                self._submit(result[0].actor_id)
        self.taken = [info.actor_id for info, _ in taken]
        return taken, [episode for info, _ in taken for episode in info.episodes]

    def update(self, rollouts: list[tuple[RolloutInfo, Any]], episodes: list[EpisodeRecord]) -> bool:
        counters = self.session.counters
        stats_ref, self.latest = self.learner.update.options(num_returns=2).remote(
            int(counters.env_steps.value), *(data for _, data in rollouts)
        )
        stats = self._learner_call(stats_ref)
        if stats is None:
            return False  # rolled back to the checkpoint; every actor was resubmitted
        self.faults.lag.update(self.version - info.version for info, _ in rollouts)
        self.version += 1
        book_update(0, stats, episodes, counters, self.session.metrics, self.session.clock_origin)
        return True

    def weights(self) -> Any:
        return self.latest

    def update_done(self) -> None:
        """``a3c_data``: the actors the update took from act again, with its weights (those
        resubmitted already, after a learner restart, are not)."""
        if self.config.runner.kind != "a3c_data":
            return
        acting = {actor_id for actor_id, _ in self.inflight.values()}
        for actor_id in self.taken:
            if actor_id not in acting:
                self._submit(actor_id)

    # --- the gradient loop's workers (GradientWorkers), for a3c ----------------------------

    def finished(self) -> bool:
        return self.session.counters.env_steps.value >= self.config.runner.total_env_steps

    def step(self) -> list[WorkerUpdate]:
        """The next gradient a rollout actor sent, applied by the learner (or dropped as stale
        or non-finite) and its actor started on the next; none after ``POLL_S`` or when the
        learner died (the run went back to its checkpoint)."""
        result = self._next_result()
        if result is None:
            return []
        info, flat = result
        env_steps = int(self.session.counters.env_steps.value)
        applied_ref, weights = self.learner.apply.options(num_returns=2).remote(
            flat, info.version, env_steps, self.max_staleness
        )
        applied: Applied | None = self._learner_call(applied_ref)
        if applied is None:
            return []
        self.faults.lag[applied.staleness] += 1
        if applied.applied:
            self.acting_weights, self.version = weights, self.version + 1
        elif info.finite:
            self.faults.stale_gradients_dropped += 1
        assert info.stats is not None
        info.stats.applied, info.stats.lr = applied.applied, applied.lr
        self._submit(info.actor_id)
        return [(info.actor_id, info.stats, info.episodes)]

    def stats(self) -> dict[str, Any]:
        f = self.faults
        name = "gradient_staleness" if self.config.runner.kind == "a3c" else "policy_lag"
        r = self.config.runner
        replays = isinstance(r, ImpalaRunner) and r.replay_size > 0
        replay = self.ray.get(self.learner.replay_stats.remote()) if replays else {}
        return {
            name: histogram_summary(f.lag),
            **replay,
            "faults": {
                "restarts": f.restarts,
                "rollouts_dropped": f.rollouts_dropped,
                "learner_restarts": f.learner_restarts,
                "env_steps_rolled_back": f.env_steps_rolled_back,
                "stale_gradients_dropped": f.stale_gradients_dropped,
            },
        }

    def close(self) -> None:
        for actor in [self.learner, *self.actors]:
            self.ray.kill(actor, no_restart=True)


def run_ray(
    config: Config, run_dir: Path, resume: bool = False, hook: ProgressHook | None = None
) -> RunResult:
    """Train ``config`` on Ray; writes logs and checkpoints under ``run_dir`` (on this machine)."""
    torch.set_num_threads(1)
    r = config.runner
    n_slots = r.n_workers if r.kind == "a3c" else 1
    session = TrainingSession(config, run_dir, n_learners=1, n_slots=n_slots, resume=resume)
    session.open_pool(cross_process=False)
    # one CPU per actor: where the machine has fewer cores, the actors share them
    started = connect(r.ray_address, max(os.cpu_count() or 1, r.n_workers + 1))
    driver = None
    try:
        check_resources(config)
        driver = RayDriver(config, session, hook)
        session.stats["ray"] = driver.placement()
        # Ctrl-C raised inside a Ray call can be lost there; the loop raises it instead
        main = threading.current_thread() is threading.main_thread()
        previous = (
            signal.signal(signal.SIGINT, lambda signum, frame: setattr(driver, "interrupted", True))
            if main
            else None
        )
        try:
            with session.running():
                driver.run()
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        session.stats.update(driver.stats())
    finally:
        if driver is not None:
            driver.close()
        if started:
            import ray

            ray.shutdown()
    return session.result()
