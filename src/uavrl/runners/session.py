"""What every runner needs around its workers: learners, counters, the metrics writer,
checkpoints, resume and a clean stop on failure."""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from uavrl.config import Config
from uavrl.envs.cloud import BookedPool, CloudPool, PerCopyPools
from uavrl.envs.vector import hidden_state_dim, make_vec_env, team_state_dim
from uavrl.errors import ConfigError, RunInterrupted
from uavrl.nn.heads import describe_action_space
from uavrl.nn.models import ActorCritic, ModelSpec, build_model
from uavrl.runners.bookkeeping import SharedCounters
from uavrl.runners.checkpoint import restore_training_state, save_checkpoint
from uavrl.runners.device import actor_device, learner_device
from uavrl.runners.ipc import ROWS
from uavrl.runners.learner import learner_optimizer
from uavrl.runners.metrics import EVAL_ITEM, EVAL_LOG_FILE, LOG_FILE, MetricsWriter, cut_eval_log, cut_log
from uavrl.runners.seeds import SeedPurpose, derived_seed
from uavrl.runners.supervise import Supervisor
from uavrl.runners.worker import copy_cells

CHECKPOINT_DIR = "checkpoints"
EVENTS_FILE = "events.log"
LAST = "last"
ENVIRONMENT_FILE = "environment.json"


@dataclass
class HookOutcome:
    """What a progress hook asks of the runner: log an evaluation row, stop the run."""

    eval_row: dict[str, Any] | None = None
    stop: bool = False


ProgressHook = Callable[[int, list[ActorCritic]], HookOutcome | None]
"""Called by the runner's own process with the run-wide env steps and the learner models, after
every round of updates (periodic evaluation, a tuner's pruning); it may return a
:class:`HookOutcome`, or raise to stop the run."""


@dataclass
class RunResult:
    """Counters and models at the end of a session.

    ``wall_time_s`` counts every session of the run (resumes included); ``session_*`` only this one.
    """

    counters: dict[str, Any]
    wall_time_s: float
    session_wall_time_s: float
    session_env_steps: int
    models: list[ActorCritic]
    stats: dict[str, Any] = field(default_factory=dict)
    first_update_at: float | None = None


def env_spaces(config: Config) -> tuple[int, Any, int]:
    """Observation size D, action space and hidden-state size G (0 without a privileged critic)
    of the configured env (read from one probe copy)."""
    probe = make_vec_env(config.env.id, 1, config.env.worker_params(0))
    try:
        hidden_dim = hidden_state_dim(probe) if config.model.privileged_critic else 0
        return probe.obs_dim, probe.action_space, hidden_dim
    finally:
        probe.close()


def model_spec(config: Config) -> ModelSpec:
    """The architecture for the configured env: the policy reads the D observation columns;
    a privileged critic also reads G hidden-state columns, a central one the team's state."""
    obs_dim, action_space, hidden_dim = env_spaces(config)
    state_dim = hidden_dim
    if config.model.central_critic:
        state_dim += team_state_dim(obs_dim + hidden_dim, config.runner.n_workers)
    return ModelSpec(
        obs_dim=obs_dim + state_dim,
        critic_state_dim=state_dim,
        action=describe_action_space(action_space),
        hidden_size=config.model.hidden_size,
        recurrent=config.model.recurrent,
        layer_norm=config.model.layer_norm,
        squash=config.model.squash,
        separate_critic=config.model.separate_critic,
        hidden_target_dim=hidden_dim if config.model.predict_hidden else 0,
        belief=config.model.belief,
    )


def check_envs(config: Config) -> None:
    """Make one copy of every worker's env and the model's spec, and find the learner's and
    the actors' devices: bad env parameters, an env id that cannot be imported, spaces no model
    takes, or a CUDA device on a machine without one fail here, before a run directory is
    created (on Ray the learner's GPU is looked for in the cluster instead)."""
    if config.runner.backend != "ray":
        learner_device(config)
        actor_device(config)
    distinct = {
        json.dumps(config.env.worker_params(i), sort_keys=True) for i in range(config.runner.n_workers)
    }
    for params in sorted(distinct):
        make_vec_env(config.env.id, 1, json.loads(params)).close()
    make_pool(config, cross_process=False)
    model_spec(config)


def make_pool(config: Config, cross_process: bool) -> CloudPool | None:
    """With ``env.shared_pool``: pool ``j`` shared by copy ``j`` of every worker.

    So each pool serves N agents (one per worker), as in the design, whatever the number of
    envs per worker.
    """
    if not config.env.shared_pool:
        return None
    capacities = {
        config.env.worker_params(i).get("cloud_capacity", 1000) for i in range(config.runner.n_workers)
    }
    if len(capacities) != 1:
        raise ConfigError(
            f"env.shared_pool needs one cloud_capacity across worker cells, got {sorted(capacities)}"
        )
    capacity = int(capacities.pop())
    return PerCopyPools(capacity, config.runner.envs_per_worker, cross_process)


class TrainingSession:
    """Learners, counters and the writer process of one run; checkpoints on demand.

    Args:
        n_learners: 1 for a shared model (A3C, A2C), ``n_workers`` for individual learning.
        n_slots: how many workers keep an update counter.
    """

    def __init__(self, config: Config, run_dir: Path, n_learners: int, n_slots: int, resume: bool) -> None:
        self.config = config
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ctx = mp.get_context("spawn")
        self.spec = model_spec(config)
        self.models = []
        for i in range(n_learners):
            # learner i starts alike in every arm
            torch.manual_seed(derived_seed(config.seed, SeedPurpose.LEARNER_INIT, i))
            self.models.append(build_model(self.spec).share_memory())
        self.optimizers = [learner_optimizer(config, m) for m in self.models]
        self.counters = SharedCounters(n_slots, config.runner.n_workers, self.ctx)
        self.resumes = 0
        self.prior_wall_time_s = 0.0
        self.stats: dict[str, Any] = {}  # runner-specific figures for summary.json
        # where the models live elsewhere (a Ray learner): copies them here, False if it cannot
        self.sync_models: Callable[[], bool] | None = None
        if resume:
            saved = self._restore_last_checkpoint()
            self.resumes = int(saved.get("resumes", 0)) + 1
            self.prior_wall_time_s = float(saved.get("wall_time_s", 0.0))
        self.start_env_steps = self.counters.snapshot()["env_steps"]
        self.start_time = time.time()
        self._writer: MetricsWriter | None = None
        self._booked: list[BookedPool] = []  # per worker process, on a cross-process pool
        self._last_checkpoint_updates = self.counters.snapshot()["updates"]
        self._checkpointed_steps: int | None = None  # env steps of this session's last checkpoint

    def _restore_last_checkpoint(self) -> dict[str, Any]:
        """Models, Adam state and counters from the last checkpoint; the logs cut back to it
        (rows logged after it are trained again). Returns its counters."""
        meta = restore_training_state(self.checkpoint_dir, LAST, self.models, self.optimizers)
        saved = meta["counters"]
        saved["worker_episodes"] = cut_log(
            self.run_dir / LOG_FILE, int(saved["env_steps"]), saved.get("worker_episodes")
        )
        cut_eval_log(self.run_dir / EVAL_LOG_FILE, int(saved["env_steps"]))
        self.counters.restore(saved)
        return dict(saved)

    def rollback_to_checkpoint(self) -> None:
        """Go back to the last checkpoint in a running session (a Ray learner that died): the
        writer is flushed and stopped, logs cut, counters and models restored, writer restarted."""
        self.stop_writer()
        saved = self._restore_last_checkpoint()
        self._last_checkpoint_updates = int(saved["updates"])
        self._checkpointed_steps = int(saved["env_steps"])
        self.start_writer()

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR

    def open_pool(self, cross_process: bool) -> CloudPool | None:
        """The run's cloud pool (or None), recorded with every worker's env parameters.

        ``environment.json`` is written from the objects the workers will use, so a run
        directory shows which cells and which pool capacity actually reached the envs.
        """
        pool = make_pool(self.config, cross_process)
        r = self.config.runner
        record = {
            "env_id": self.config.env.id,
            "shared_pool": pool is not None,
            "pool_capacity": None if pool is None else pool.capacity,
            "workers": [
                {
                    "worker_id": i,
                    "envs": r.envs_per_worker,
                    "params": self.config.env.worker_params(i),
                    "copy_cells": None if cells is None else [c.name for c in cells],
                }
                for i, cells in ((i, copy_cells(self.config, i)) for i in range(r.n_workers))
            ],
        }
        (self.run_dir / ENVIRONMENT_FILE).write_text(json.dumps(record, indent=2))
        if isinstance(pool, PerCopyPools) and cross_process:
            self._booked = [BookedPool(pool, r.envs_per_worker) for _ in range(r.n_workers)]
        return pool

    def worker_pool(self, worker_id: int, incarnation: int, pool: CloudPool | None) -> CloudPool | None:
        """The pool to hand worker process ``worker_id``: with worker processes, its
        :class:`~uavrl.envs.cloud.BookedPool`, which first gets back, when the worker is a
        restart, the units its dead predecessor's tasks held."""
        if not self._booked:
            return pool
        booked = self._booked[worker_id]
        if incarnation > 0 and (returned := booked.release()):
            self.record_event(f"worker {worker_id}: {returned} cloud units its dead tasks held, returned")
        return booked

    def env_seed(self) -> int:
        """Env seed of this (possibly resumed) session: a resumed run does not replay its streams."""
        if self.resumes == 0:
            return self.config.seed
        return derived_seed(self.config.seed, SeedPurpose.RESUMED_ENVS, self.resumes)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Start the writer; on the way out (finished, failed or Ctrl-C) write a checkpoint and
        flush every logged row. Ctrl-C becomes :class:`RunInterrupted` once that is done."""
        self.start_writer()
        interrupted = False
        try:
            yield
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if self._checkpointed_steps != self.counters.snapshot()["env_steps"]:
                self.checkpoint()
            self.stop_writer()
        if interrupted:
            raise RunInterrupted(self.counters.snapshot()["env_steps"], str(self.run_dir))

    def record_event(self, message: str) -> None:
        """A fault and what the run did about it: one line in ``events.log`` (appended, with the
        time and the run's env steps) and on stderr."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp} env_steps={int(self.counters.env_steps.value)} {message}"
        with (self.run_dir / EVENTS_FILE).open("a") as log:
            log.write(line + "\n")
        print(f"uavrl: {line}", file=sys.stderr, flush=True)

    def record_restarts(self, supervisor: Supervisor, stale_rollouts: int = 0) -> None:
        """Restarts per worker, and rollouts of dead actors that arrived after their restart
        and were discarded, into ``summary.json``. (A dead worker's update in progress is lost
        too; it was never booked, so the run's env-step budget is still trained in full.)"""
        self.stats["faults"] = {
            "restarts": list(supervisor.restarts),
            "stale_rollouts_discarded": stale_rollouts,
        }

    def end_round(self, hook: ProgressHook | None) -> bool:
        """The end of every training loop's round, whatever the topology: a checkpoint when
        ``runner.checkpoint_every`` updates have passed, then ``hook`` (if any) with the env
        steps and models, its evaluation row logged through the writer. True if the hook asks
        the run to stop."""
        self._maybe_checkpoint()
        if hook is None:
            return False
        if self.sync_models is not None:
            self.sync_models()
        outcome = hook(int(self.counters.env_steps.value), self.models)
        if outcome is None:
            return False
        if outcome.eval_row is not None:
            self.metrics.put((EVAL_ITEM, outcome.eval_row))
        return outcome.stop

    @property
    def metrics(self) -> MetricsWriter:
        """The writer of the run's logs (``put(rows)``, ``put(("eval", row))``), while running."""
        if self._writer is None:
            raise RuntimeError("the metrics writer runs only inside TrainingSession.running()")
        return self._writer

    def log_message(self, child: int, message: tuple[Any, ...]) -> None:
        """Hand a child's logged rows (:data:`~uavrl.runners.ipc.ROWS`) to the writer."""
        if message[0] != ROWS:
            raise ValueError(f"child {child} sent a message the run does not take: {message[0]!r}")
        self.metrics.put(message[1])

    def start_writer(self) -> None:
        log = self.config.log
        self._writer = MetricsWriter(
            self.run_dir,
            self.config.runner.total_env_steps,
            self.start_env_steps,
            log.tensorboard,
            log.progress,
        )

    def stop_writer(self) -> None:
        """Write every row put so far and stop the writer; raise if it had failed."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()

    def check_writer(self) -> None:
        if self._writer is not None:
            self._writer.check()

    def _maybe_checkpoint(self) -> None:
        self.check_writer()
        updates = self.counters.snapshot()["updates"]
        if updates - self._last_checkpoint_updates >= self.config.runner.checkpoint_every:
            self.checkpoint()
            self._last_checkpoint_updates = updates

    def checkpoint(self, tag: str = LAST) -> Path | None:
        """Save models, Adam state and counters; None (said on stderr) if the models could not
        be fetched from where they live (the last checkpoint stays as it was)."""
        if self.sync_models is not None and not self.sync_models():
            print(f"uavrl: {self.run_dir}: learner gone, checkpoint {tag} not updated", file=sys.stderr)
            return None
        if self._writer is not None:
            self._writer.flush()  # every row of the episodes counted below is on disk
        counters = {**self.counters.snapshot(), "resumes": self.resumes, "wall_time_s": self._wall_time()}
        self._checkpointed_steps = counters["env_steps"]
        return save_checkpoint(
            self.checkpoint_dir,
            tag,
            self.models,
            list(self.optimizers),
            self.config.to_dict(),
            counters,
        )

    @property
    def clock_origin(self) -> float:
        """When the run would have started had it never stopped: log wall times count from it."""
        return self.start_time - self.prior_wall_time_s

    def _wall_time(self) -> float:
        return self.prior_wall_time_s + time.time() - self.start_time

    def result(self) -> RunResult:
        counters = self.counters.snapshot()
        return RunResult(
            counters,
            self._wall_time(),
            time.time() - self.start_time,
            counters["env_steps"] - self.start_env_steps,
            self.models,
            self.stats,
            self.counters.first_update_at.value or None,
        )
