"""Run bookkeeping: the run-wide counters, the booking of one update and its episodes, and the
training log's rows.

Every topology books its updates through :func:`book_update`, so the counters, the episode
numbers and ``training_log.csv`` mean the same whatever runs the workers.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import dataclass
from typing import Any

from uavrl.config import Config
from uavrl.locking import ProcessLock
from uavrl.runners.learner import UpdateStats
from uavrl.runners.rollout import FinishedEpisode


class SharedCounters:
    """Run-wide counters in shared memory (work the same in one process).

    Episodes are numbered here, per worker, under the same lock as the env-step count, so a
    :meth:`snapshot` (a checkpoint's counters) is consistent: every logged episode booked
    before it has a number at most the snapshot's count and a step at most its env steps.
    """

    def __init__(self, n_slots: int, n_workers: int, context: Any = None) -> None:
        ctx = context or mp.get_context("spawn")
        self.lock = ProcessLock()  # one lock for all; a worker killed inside it releases it by dying
        self.env_steps = ctx.Value("q", 0, lock=False)
        self.updates = ctx.Value("q", 0, lock=False)
        self.skipped_updates = ctx.Value("q", 0, lock=False)
        self.episodes = ctx.Value("q", 0, lock=False)
        self.worker_updates = ctx.Array("q", n_slots, lock=False)
        self.worker_episodes = ctx.Array("q", n_workers, lock=False)
        # wall clock (epoch s) of this session's first booked update: start-up ends by then
        self.first_update_at = ctx.Value("d", 0.0, lock=False)

    def add(self, env_steps: int, applied: bool, owners: list[int], worker_id: int) -> tuple[int, list[int]]:
        """Book one update of slot ``worker_id`` and the episodes it finished (their owners).

        Returns the run's env steps after it and each episode's number within its owner.
        """
        with self.lock:
            if self.first_update_at.value == 0.0:
                self.first_update_at.value = time.time()
            self.env_steps.value += env_steps
            total = int(self.env_steps.value)
            numbers = []
            for owner in owners:
                self.worker_episodes[owner] += 1
                numbers.append(int(self.worker_episodes[owner]))
            if applied:
                self.updates.value += 1
            else:
                self.skipped_updates.value += 1
            self.episodes.value += len(owners)
            self.worker_updates[worker_id] += 1
        return total, numbers

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "env_steps": int(self.env_steps.value),
                "updates": int(self.updates.value),
                "skipped_updates": int(self.skipped_updates.value),
                "episodes": int(self.episodes.value),
                "worker_updates": list(self.worker_updates[:]),
                "worker_episodes": list(self.worker_episodes[:]),
            }

    def restore(self, saved: dict[str, Any]) -> None:
        self.env_steps.value = saved["env_steps"]
        self.updates.value = saved["updates"]
        self.skipped_updates.value = saved.get("skipped_updates", 0)
        self.episodes.value = saved.get("episodes", 0)
        self.worker_updates[:] = saved["worker_updates"]
        counts = list(saved.get("worker_episodes", []))
        self.worker_episodes[:] = counts + [0] * (len(self.worker_episodes) - len(counts))


@dataclass
class EpisodeRecord:
    """A finished episode of worker ``owner`` (its number is given when it is booked)."""

    owner: int
    episode_return: float
    length: int


def episode_records(
    finished: list[FinishedEpisode], first_worker: int, copies_per_worker: int
) -> list[EpisodeRecord]:
    """Owners of finished episodes: copy ``j`` of a batch of several workers' envs belongs to
    worker ``first_worker + j // copies_per_worker``."""
    return [
        EpisodeRecord(first_worker + ep.copy // copies_per_worker, ep.episode_return, ep.length)
        for ep in finished
    ]


def updates_per_worker(config: Config) -> int:
    """Equal share of ``total_env_steps`` per worker, in whole rollouts."""
    r = config.runner
    per_update = r.n_workers * r.envs_per_worker * config.algo.rollout_length
    return max(1, math.ceil(r.total_env_steps / per_update))


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


def metric_rows(
    stats: UpdateStats,
    episodes: list[EpisodeRecord],
    numbers: list[int],
    env_steps: int,
    worker_updates: int,
    clock_origin: float,
) -> list[dict[str, Any]]:
    """``training_log.csv`` rows, one per finished episode (``numbers``: each one's number
    within its worker); ``wall_time`` counts from ``clock_origin``, the run's start. The update's
    columns (losses, entropy, grad norm, lr, entropy coefficient) fill the first row only and
    are blank on the others, which it would repeat."""
    wall = time.time() - clock_origin
    update = {
        "policy_loss": stats.policy_loss,
        "value_loss": stats.value_loss,
        "entropy": stats.entropy,
        "grad_norm": stats.grad_norm,
        "lr": stats.lr,
        "entropy_coef": stats.entropy_coef,
    }
    return [
        {
            "step": env_steps,
            "worker_id": ep.owner,
            "episode": number,
            "return": ep.episode_return,
            "length": ep.length,
            **(update if i == 0 else dict.fromkeys(update, "")),
            "updates": worker_updates,
            "wall_time": wall,
        }
        for i, (ep, number) in enumerate(zip(episodes, numbers, strict=True))
    ]
