"""The learner role: turns rollouts into optimizer steps of one model.

Every runner updates its models through :class:`Learner`. It owns the optimizer, the loss
(on-policy returns, or V-trace for ``impala``), clipping, the learning-rate schedule and the
non-finite guard. The gradient is computed on whichever model re-evaluates the rollout: an A3C
worker's private copy (the gradient is then handed to the shared model under the lock, as
Hogwild A3C does), or the learner's own model (``a3c_data``, ``impala``, ``a2c``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.algo.loss import LossTerms, rollout_loss, vtrace_loss
from uavrl.algo.optim import SharedAdam
from uavrl.algo.replay import TrajectoryReplay
from uavrl.config import A3CRunner, Config, ImpalaRunner
from uavrl.nn.models import ActorCritic, model_device
from uavrl.runners.device import DeviceBatches
from uavrl.runners.metrics import histogram_summary
from uavrl.runners.seeds import SeedPurpose, derived_seed


class LossFunction(Protocol):
    """The runner's loss of one rollout on ``model``, at an entropy coefficient that may follow
    a schedule."""

    def __call__(self, model: ActorCritic, batch: RolloutBatch, *, entropy_coef: float) -> LossTerms: ...


class NonFiniteError(RuntimeError):
    """Too many updates in a row had a NaN or infinite loss or gradient."""


@dataclass
class UpdateStats:
    env_steps: int
    applied: bool
    policy_loss: float
    value_loss: float
    entropy: float
    grad_norm: float
    lr: float
    entropy_coef: float

    @classmethod
    def of(
        cls, terms: LossTerms, env_steps: int, applied: bool, grad_norm: float, lr: float, entropy_coef: float
    ) -> UpdateStats:
        """The stats of one update from its loss terms (read from their device at once)."""
        policy, value, entropy = torch.stack([terms.policy, terms.value, terms.entropy]).tolist()
        return cls(env_steps, applied, policy, value, entropy, grad_norm, lr, entropy_coef)


def loss_function(config: Config) -> LossFunction:
    """The run's loss, by its targets (:attr:`Config.targets`), whatever the runner: V-trace
    (by default for ``impala``, whose actors act with older weights), n-step or GAE(lambda)
    returns."""
    algo = config.algo
    if config.targets == "vtrace":
        return partial(
            vtrace_loss,
            gamma=algo.gamma,
            rho_bar=algo.rho_bar,
            c_bar=algo.c_bar,
            value_coef=algo.value_coef,
            normalize_advantages=algo.normalize_advantages,
            hidden_coef=algo.hidden_coef,
        )
    return partial(
        rollout_loss,
        gamma=algo.gamma,
        gae_lambda=algo.gae_lambda,
        value_coef=algo.value_coef,
        normalize_advantages=algo.normalize_advantages,
        hidden_coef=algo.hidden_coef,
    )


def learner_optimizer(config: Config, model: ActorCritic) -> SharedAdam:
    """The run's Adam (``algo.lr``, ``algo.adam_eps``) over ``model``'s parameters, wherever
    they live."""
    return SharedAdam(model.parameters(), lr=config.algo.lr, eps=config.algo.adam_eps)


def linear_schedule(start: float, end: float, progress: float) -> float:
    """``start`` at progress 0, ``end`` at progress 1, linear between (``end = 0`` gives
    exactly ``start * (1 - progress)``)."""
    return start * (1.0 - progress) + end * progress


def _progress(config: Config, env_steps: int) -> float:
    return min(1.0, env_steps / config.runner.total_env_steps)


def scheduled_lr(config: Config, env_steps: int) -> float:
    """The configured learning rate at ``env_steps`` run-wide env steps."""
    algo = config.algo
    if algo.lr_schedule == "linear":
        return linear_schedule(algo.lr, 0.0, _progress(config, env_steps))
    return algo.lr


def scheduled_entropy_coef(config: Config, env_steps: int) -> float:
    """The configured entropy coefficient at ``env_steps`` run-wide env steps."""
    algo = config.algo
    if algo.entropy_schedule == "linear":
        return linear_schedule(algo.entropy_coef, algo.entropy_coef_final, _progress(config, env_steps))
    return algo.entropy_coef


def loss_gradient(
    loss: LossFunction,
    grad_model: ActorCritic,
    batch: RolloutBatch,
    max_grad_norm: float,
    entropy_coef: float,
) -> tuple[LossTerms, float, bool]:
    """Zero ``grad_model``'s gradients, loss, backward, clip to ``max_grad_norm``: the loss
    terms, the gradient norm before clipping (NaN when the loss is not finite), and whether loss
    and gradient are finite (the gradient is left in ``grad_model``'s ``.grad``).

    Loss, backward and clipping are queued on the model's device before the one read back that
    decides the step (a non-finite loss's gradient is computed and then dropped)."""
    grad_model.zero_grad(set_to_none=True)
    terms = loss(grad_model, batch, entropy_coef=entropy_coef)
    terms.total.backward()
    norm = torch.nn.utils.clip_grad_norm_(grad_model.parameters(), max_grad_norm)
    loss_finite, grad_norm = torch.stack([torch.isfinite(terms.total).to(norm.dtype), norm]).tolist()
    if not loss_finite:
        return terms, math.nan, False
    return terms, grad_norm, math.isfinite(grad_norm)


def transfer_gradients(local: ActorCritic, learner: ActorCritic) -> None:
    """Point the learner's ``.grad`` at the local gradients (fresh tensors every update).

    The optimizer step that follows reads them and ``zero_grad(set_to_none=True)`` drops them,
    so nothing can accumulate across updates.
    """
    for local_p, learner_p in zip(local.parameters(), learner.parameters(), strict=True):
        learner_p.grad = local_p.grad


class Learner:
    """Turns a rollout into one optimizer step of ``model`` through ``optimizer``.

    ``learn(grad_model, batch, env_steps)`` computes the loss and gradient on ``grad_model``:
    the model itself, or a worker's private copy holding the weights that collected the batch,
    whose gradient is then applied to ``model`` under ``lock``. A3C hands every worker a learner
    of the same shared model and SharedAdam; individual learning hands each its own.
    ``name`` says whose updates these are in errors. A central learner (``a3c_data``,
    ``impala``) takes its actors' rollouts through :meth:`learn_rollouts`, which mixes in
    ``replay``'s rollouts when it has one (``impala`` with ``runner.replay_size``).
    """

    def __init__(
        self,
        config: Config,
        model: ActorCritic,
        optimizer: SharedAdam,
        lock: Any = None,
        name: str = "learner",
        replay: TrajectoryReplay | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.optimizer = optimizer
        unlocked = lock is None or (isinstance(config.runner, A3CRunner) and not config.runner.lock_updates)
        self.lock = contextlib.nullcontext() if unlocked else lock
        self.name = name
        self.loss = loss_function(config)
        self.replay = replay
        self.on_device = DeviceBatches(model_device(model))
        self.nonfinite_streak = 0

    def learning_rate(self, env_steps: int) -> float:
        return scheduled_lr(self.config, env_steps)

    def entropy_coef(self, env_steps: int) -> float:
        return scheduled_entropy_coef(self.config, env_steps)

    def gradient(
        self, grad_model: ActorCritic, batch: RolloutBatch, env_steps: int
    ) -> tuple[LossTerms, float, bool]:
        """:func:`loss_gradient` with this learner's loss (at the scheduled entropy coefficient
        for ``env_steps`` run-wide env steps) and clipping."""
        algo = self.config.algo
        return loss_gradient(self.loss, grad_model, batch, algo.max_grad_norm, self.entropy_coef(env_steps))

    def step(self, grad_model: ActorCritic, env_steps: int) -> float:
        """(Under the lock) hand ``grad_model``'s gradients to the learner's model if they are
        not its own, optimizer step at the scheduled learning rate, set the model's grads to
        None. Returns the learning rate used."""
        lr = self.learning_rate(env_steps)
        with self.lock:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            if grad_model is not self.model:
                transfer_gradients(grad_model, self.model)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return lr

    def check_finite(self, finite: bool, detail: Callable[[], str]) -> None:
        """Count non-finite updates in a row; raise :class:`NonFiniteError` at
        ``runner.max_nonfinite`` of them, saying ``detail()``."""
        self.nonfinite_streak = 0 if finite else self.nonfinite_streak + 1
        if self.nonfinite_streak >= self.config.runner.max_nonfinite:
            raise NonFiniteError(
                f"{self.name}: {self.nonfinite_streak} updates in a row had a non-finite "
                f"loss or gradient ({detail()}); runner.max_nonfinite={self.config.runner.max_nonfinite}"
            )

    def learn(
        self, grad_model: ActorCritic, batch: RolloutBatch, env_steps: int, booked_steps: int | None = None
    ) -> UpdateStats:
        """:meth:`gradient`, then :meth:`step` if it is finite; a non-finite loss or gradient
        skips the step. The stats book ``booked_steps`` env steps (default: the batch's)."""
        terms, grad_norm, applied = self.gradient(grad_model, batch, env_steps)
        if applied:
            lr = self.step(grad_model, env_steps)
        else:
            grad_model.zero_grad(set_to_none=True)
            lr = self.learning_rate(env_steps)
        self.check_finite(applied, lambda: f"loss {terms.total.item()}, grad norm {grad_norm}")
        booked = batch.env_steps if booked_steps is None else booked_steps
        return UpdateStats.of(terms, booked, applied, grad_norm, lr, self.entropy_coef(env_steps))

    def learn_rollouts(self, rollouts: list[RolloutBatch], env_steps: int) -> UpdateStats:
        """One update of the learner's own model on ``rollouts`` side by side (B = their copies),
        and on the replayed rollouts the replay adds. The stats count the fresh rollouts' env
        steps only: a replayed step was booked when it was fresh."""
        batch = self.on_device(rollouts if self.replay is None else self.replay.mix(rollouts))
        return self.learn(self.model, batch, env_steps, booked_steps=sum(r.env_steps for r in rollouts))


def learner_batch(config: Config) -> int:
    """Rollouts per learner update: every actor's for ``a3c_data``, ``learner_batch`` (default
    all N) for ``impala``."""
    r = config.runner
    return r.learner_batch if isinstance(r, ImpalaRunner) and r.learner_batch is not None else r.n_workers


def trajectory_replay(config: Config) -> TrajectoryReplay | None:
    """The learner's replay of recent rollouts (``runner.replay_size``, ``impala`` only), seeded
    by the run's seed; None without one."""
    r = config.runner
    if not isinstance(r, ImpalaRunner) or r.replay_size == 0:
        return None
    return TrajectoryReplay(r.replay_size, r.replay_ratio, derived_seed(config.seed, SeedPurpose.REPLAY))


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
