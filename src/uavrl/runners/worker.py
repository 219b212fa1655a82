"""The actor-learner worker shared by A3C and individual learning.

A worker owns a private ``local`` model and K envs, and updates a ``learner`` model through
``optimizer``. A3C hands every worker the same shared learner and SharedAdam; individual learning
hands each worker its own. The worker code cannot tell the two apart: that is the point.

One update: sync local <- learner; collect T steps from K envs (the actor part); then the
:class:`~uavrl.runners.learner.Learner` zeroes the local gradients, re-evaluates the rollout with gradients,
computes the loss, backward, clip, and (under the lock) points the learner's ``.grad`` at the
local gradients, optimizer step, set the learner's grads to None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from uavrl.algo.normalize import RewardScaler
from uavrl.algo.optim import SharedAdam
from uavrl.config import Config
from uavrl.envs.cloud import CloudPool
from uavrl.envs.paper.core import PaperCore, PaperParams
from uavrl.envs.scenarios import Cell, resolve_cells
from uavrl.envs.vector import (
    CoreVecEnv,
    HiddenStateObservations,
    PoolMateRewards,
    PoolPrice,
    TeamStateObservations,
    VecEnv,
    concat_envs,
    make_vec_env,
)
from uavrl.errors import ConfigError
from uavrl.nn.models import Actor, ActorCritic, ModelTeam, clone_model
from uavrl.runners.bookkeeping import EpisodeRecord, SharedCounters, book_update, episode_records
from uavrl.runners.inference import ServedPolicy
from uavrl.runners.learner import Learner, UpdateStats
from uavrl.runners.rollout import RolloutCollector


def copy_cells(config: Config, worker_id: int) -> list[Cell] | None:
    """With ``env.cells_by: copy``, the cell of each of worker ``worker_id``'s K copies: copy
    ``j`` in ``worker_cells[(i + j) mod n]``, so the worker steps every cell and pool ``j`` still
    holds one agent of each; None when every copy sits in the worker's own cell."""
    names = config.env.worker_cells
    if config.env.cells_by != "copy" or not names:
        return None
    cells = [resolve_cells(name)[0] for name in names]
    return [cells[(worker_id + j) % len(cells)] for j in range(config.runner.envs_per_worker)]


def make_worker_env(config: Config, worker_id: int, pool: CloudPool | None) -> VecEnv:
    """Worker ``worker_id``'s K envs with its training reward (``env.pool_price``) and, for a
    privileged critic, the hidden state in its observations."""
    return _critic_view(config, _priced(config, _worker_part(config, worker_id, pool)))


def _worker_part(config: Config, worker_id: int, pool: CloudPool | None) -> VecEnv:
    env = make_vec_env(
        config.env.id, config.runner.envs_per_worker, config.env.worker_params(worker_id), pool
    )
    cells = copy_cells(config, worker_id)
    if cells is not None:
        # the config allows cells_by: copy on the paper preset only
        assert isinstance(env, CoreVecEnv) and isinstance(env.core, PaperCore)
        env.core.place_in_cells(
            np.array([c.velocity for c in cells]), np.array([c.local_capacity for c in cells])
        )
    return env


def _priced(config: Config, env: VecEnv) -> VecEnv:
    if config.env.pool_price <= 0:
        return env
    reward_scale = float(config.env.params.get("reward_scale", PaperParams().reward_scale))
    return PoolPrice(env, config.env.pool_price, reward_scale)


def _critic_view(config: Config, env: VecEnv) -> VecEnv:
    return HiddenStateObservations(env) if config.model.privileged_critic else env


def make_all_worker_envs(config: Config, pool: CloudPool | None) -> VecEnv:
    """Every worker's envs as one batch: copy ``j`` belongs to worker ``j // envs_per_worker``
    (rewards averaged over pool mates with ``env.team_reward``, priced with ``env.pool_price``,
    observations extended for a privileged or a central critic)."""
    n = config.runner.n_workers
    env: VecEnv = _priced(config, concat_envs([_worker_part(config, i, pool) for i in range(n)]))
    env = _critic_view(config, env)
    if config.model.central_critic:
        if pool is None:
            raise ConfigError("model.central_critic needs env.shared_pool: true (it sees a pool's world)")
        env = TeamStateObservations(env, n, pool.capacity)
    if not config.env.team_reward:
        return env
    return PoolMateRewards(env, n, config.env.team_spirit)


def make_collector(
    config: Config, actor: Actor | ServedPolicy, env: VecEnv, env_seed: int, first_copy: int
) -> RolloutCollector:
    """The collector that steps ``env`` with ``actor`` (streams ``first_copy + [0, env.n)``,
    rewards scaled when ``algo.normalize_rewards``)."""
    scaler = RewardScaler(env.n, config.algo.gamma) if config.algo.normalize_rewards else None
    return RolloutCollector(env, actor, env_seed, first_copy, scaler)


class Worker:
    """One actor-learner. ``update()`` runs one rollout and one optimizer step.

    It owns a private ``local`` model and K envs; sync local <- learner, collect T steps from K
    envs, then :class:`~uavrl.runners.learner.Learner` applies the gradient. The worker cannot tell A3C from
    individual learning apart: that is the point.
    """

    def __init__(
        self,
        config: Config,
        worker_id: int,
        learner: ActorCritic,
        optimizer: SharedAdam,
        lock: Any,
        env: VecEnv,
        env_seed: int,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.learner = learner
        self.learner_role = Learner(config, learner, optimizer, lock, f"worker {worker_id}")
        self.env = env
        self.local = clone_model(learner)
        self.collector = make_collector(
            config, self.local, env, env_seed, worker_id * config.runner.envs_per_worker
        )

    @classmethod
    def build(
        cls,
        config: Config,
        worker_id: int,
        learner: ActorCritic,
        optimizer: SharedAdam,
        lock: Any,
        pool: CloudPool | None,
        env_seed: int,
    ) -> Worker:
        """Worker ``worker_id`` of a run: its K envs in its cell (on ``pool`` if shared)."""
        return cls(
            config, worker_id, learner, optimizer, lock, make_worker_env(config, worker_id, pool), env_seed
        )

    def update_and_book(self, counters: SharedCounters, metrics: Any, clock_origin: float) -> None:
        """One rollout + update at the run's env steps so far, booked in ``counters`` and sent
        to ``metrics``."""
        stats, episodes = self.update(int(counters.env_steps.value))
        book_update(self.worker_id, stats, episodes, counters, metrics, clock_origin)

    def update(self, env_steps: int = 0) -> tuple[UpdateStats, list[EpisodeRecord]]:
        """One rollout + update.

        ``env_steps``: run-wide env steps so far (sets a scheduled learning rate).
        Returns its stats and the finished episodes (A2C steps every worker's envs in one batch,
        so its episodes belong to several workers).
        """
        self.local.load_state_dict(self.learner.state_dict())
        batch, finished = self.collector.collect(self.local, self.config.algo.rollout_length)
        stats = self.learner_role.learn(self.local, batch, env_steps)
        return stats, episode_records(finished, self.worker_id, self.config.runner.envs_per_worker)


class BatchedWorkers:
    """N workers stepped as one batch in one process (serial A3C and individual learning).

    Worker ``i`` owns copies ``[i K, (i + 1) K)``, its own cell and streams, as in the parallel
    runner. One env step acts for all N x K envs: with one shared model in one forward, with N
    individual models as a :class:`~uavrl.nn.models.ModelTeam`. Then every worker's slice of
    the rollout becomes one update of its learner, in worker order, each gradient computed with
    the weights that collected the rollout: with a shared model later workers' gradients are up
    to N - 1 updates stale, as in Hogwild A3C. Stepping together keeps the workers' copies in
    step on their shared pools, and lets pool mates share a reward (``env.team_reward``).
    """

    def __init__(
        self,
        config: Config,
        learners: Sequence[ActorCritic],
        optimizers: Sequence[SharedAdam],
        locks: Sequence[Any],
        env: VecEnv,
        env_seed: int,
    ) -> None:
        self.config = config
        n = config.runner.n_workers
        if len(learners) not in (1, n):
            raise ValueError(f"{n} workers need 1 shared learner or {n} learners, got {len(learners)}")
        self.learners = list(learners)
        self.learner_of = [i if len(learners) > 1 else 0 for i in range(n)]
        self.learner_roles = [
            Learner(config, learners[k], optimizers[k], locks[k], f"worker {i}")
            for i, k in enumerate(self.learner_of)
        ]
        self.locals = [clone_model(m) for m in learners]
        self.actor: Actor = self.locals[0] if len(learners) == 1 else ModelTeam(self.locals)
        self.collector = make_collector(config, self.actor, env, env_seed, 0)

    def update(self, env_steps: int) -> list[tuple[UpdateStats, list[EpisodeRecord]]]:
        """One batched rollout, then one update per worker; per worker its stats and episodes."""
        k = self.config.runner.envs_per_worker
        for local, learner in zip(self.locals, self.learners, strict=True):
            local.load_state_dict(learner.state_dict())
        batch, finished = self.collector.collect(self.actor, self.config.algo.rollout_length)
        records = episode_records(finished, 0, k)
        results = []
        for i, learner_role in enumerate(self.learner_roles):
            local = self.locals[self.learner_of[i]]
            stats = learner_role.learn(local, batch.columns(i * k, (i + 1) * k), env_steps)
            results.append((stats, [r for r in records if r.owner == i]))
        return results
