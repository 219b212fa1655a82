"""Episodes of the `mec` core with per-task records, and the metrics of an evaluation cell.

Latency percentiles are computed exactly from the per-task latencies (``np.percentile`` over
every completed task), never from bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from uavrl.envs.mec.core import COMPLETED, DISCARDED, DROPPED, SLOT_S, MecCore, MecParams
from uavrl.envs.worlds import agent_streams

PolicyFn = Any

# The task metrics of an evaluation cell (:func:`task_metrics`), in the order tables show them.
MEC_METRICS = (
    "completion_rate",
    "drop_rate",
    "discard_rate",
    "latency_mean",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "energy_per_task",
    "cloud_utilisation",
    "fairness",
)


@dataclass
class MecEpisodes:
    """One episode per copy: returns and the record of every task that finished in it.

    Attributes:
        returns: (B,) undiscounted returns (scalar reward mode).
        copy, outcome, latency, energy: (F,) per finished task (``outcome`` indexes ``OUTCOMES``).
        arrivals: (B,) tasks that arrived in each copy's episode.
        cut: (B,) tasks still in flight when the episode ended (no outcome).
        slots: (B,) slots each episode lasted.
        cloud_busy_s: (G,) time each cloud group served at least one task.
        group: (B,) the cloud group of each copy.
    """

    returns: np.ndarray
    copy: np.ndarray
    outcome: np.ndarray
    latency: np.ndarray
    energy: np.ndarray
    arrivals: np.ndarray
    cut: np.ndarray
    slots: np.ndarray
    cloud_busy_s: np.ndarray
    group: np.ndarray

    def select(self, copies: np.ndarray) -> MecEpisodes:
        """The episodes of ``copies`` (whole cloud groups, in increasing order) as a run of
        their own: copies and groups renumbered in order, as a core of just these would."""
        copies = np.asarray(copies)
        renumber = np.full(self.returns.size, -1)
        renumber[copies] = np.arange(copies.size)
        kept = renumber[self.copy] >= 0
        groups, group = np.unique(self.group[copies], return_inverse=True)
        return MecEpisodes(
            self.returns[copies],
            renumber[self.copy[kept]],
            self.outcome[kept],
            self.latency[kept],
            self.energy[kept],
            self.arrivals[copies],
            self.cut[copies],
            self.slots[copies],
            self.cloud_busy_s[groups],
            group,
        )


def run_episodes(
    policy: PolicyFn, core: MecCore, seed: int, copy_indices: np.ndarray, privileged: bool = False
) -> MecEpisodes:
    """Run the first episode of every copy of ``core`` (auto-reset on) with ``policy``.

    Copy ``j`` uses the stream ``(seed, copy_indices[j])`` (common random numbers).
    """
    if core.params.reward_mode != "scalar":
        raise ValueError("run_episodes scores the scalar reward: build the core with reward_mode='scalar'")
    n = core.n
    reset = getattr(policy, "reset", None)
    if reset is not None:
        reset(n)
    obs = core.reset(seed=seed, copy_indices=np.asarray(copy_indices))
    core.cloud_busy_s[:] = 0.0
    returns, arrivals, cut, slots = (
        np.zeros(n),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
    )
    running = np.ones(n, dtype=bool)
    parts: list[dict[str, np.ndarray]] = []
    while running.any():
        arrivals += core.pending & running
        actions = policy(obs, _hidden_state(core, policy) if privileged else None)
        obs, reward, terminated, truncated, info = core.step(actions)
        finished = info["finished"]
        keep = running[finished["copy"]]
        parts.append({k: v[keep] for k, v in finished.items()})
        returns += reward * running
        slots += running
        ended = running & (terminated | truncated)
        cut += info["cut"] * ended
        running &= ~ended
    records = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return MecEpisodes(
        returns,
        records["copy"],
        records["outcome"],
        records["latency"],
        records["energy"],
        arrivals,
        cut,
        slots,
        core.cloud_busy_s.copy(),
        core.group.copy(),
    )


def _hidden_state(core: MecCore, policy: PolicyFn) -> dict[str, np.ndarray]:
    """The core's hidden state, and the look-ahead costs for a policy that asks for them."""
    state = core.privileged()
    if getattr(policy, "needs_lookahead", False):
        state["option_costs"] = core.lookahead_costs(getattr(policy, "continuation", None))
    return state


def run_clouds(
    policy: PolicyFn, params: MecParams, seed: int, base: np.ndarray, privileged: bool = False
) -> tuple[np.ndarray, MecEpisodes]:
    """Episodes of ``N = params.cloud_group_size`` UAVs per cloud: UAV ``i`` of episode ``j`` is
    row ``i * E + j`` of one core, on stream ``agent_streams(N, base)`` (as the evaluation
    worlds). Returns the (E,) per-episode mean return over the N UAVs, and the records."""
    n, e = params.cloud_group_size, len(base)
    run = run_episodes(policy, MecCore(n * e, params), seed, agent_streams(n, base), privileged)
    return run.returns.reshape(n, e).mean(axis=0), run


def run_cells(
    policy: PolicyFn,
    params: MecParams,
    cells: list[dict[str, float]],
    seed: int,
    base: np.ndarray,
    privileged: bool = False,
) -> list[tuple[np.ndarray, MecEpisodes]]:
    """:func:`run_clouds` in every cell of ``cells`` (each ``velocity``, ``distance``,
    ``cloud_ghz``) in one batch: the copies of all cells step together in one core
    (:meth:`~uavrl.envs.mec.core.MecCore.place_in_cells`), each on the stream it has in its own
    cell's run, so each cell's returns and records equal :func:`run_clouds`' there. Per cell,
    in order: the (E,) per-episode mean return over the N UAVs of a cloud, and the records."""
    n, e, c = params.cloud_group_size, len(base), len(cells)
    # copy (UAV i, cell k, episode j) is row i*C*E + k*E + j, so its cloud group is k*E + j
    core = MecCore(n * c * e, params)

    def per_copy(key: str) -> np.ndarray:
        return np.tile(np.repeat([float(cell[key]) for cell in cells], e), n)

    core.place_in_cells(per_copy("velocity"), per_copy("distance"), per_copy("cloud_ghz"))
    streams = np.tile(agent_streams(n, base).reshape(n, 1, e), (1, c, 1)).ravel()
    run = run_episodes(policy, core, seed, streams, privileged)
    out = []
    for k in range(c):
        part = run.select((np.arange(n)[:, None] * c * e + k * e + np.arange(e)).ravel())
        out.append((part.returns.reshape(n, e).mean(axis=0), part))
    return out


def jain_index(x: np.ndarray) -> float:
    """Jain's fairness ``(sum x)^2 / (n sum x^2)`` of non-negative values (1 when all are 0)."""
    x = np.asarray(x, dtype=np.float64)
    square_sum = float((x**2).sum())
    return 1.0 if square_sum == 0 else float(x.sum() ** 2 / (x.size * square_sum))


def task_metrics(episodes: MecEpisodes) -> dict[str, float]:
    """The metrics of one evaluation cell.

    Rates are over the tasks that reached an outcome; latency statistics over completed tasks;
    energy per finished task; cloud utilisation is the fraction of time a cloud served at least
    one task; fairness is Jain's index of the completion rates of the UAVs sharing a cloud,
    averaged over clouds.
    """
    outcome = episodes.outcome
    finished = max(outcome.size, 1)
    completed = outcome == COMPLETED
    latency = episodes.latency[completed]
    quantiles = np.percentile(latency, [50, 95, 99]) if latency.size else np.full(3, np.nan)
    per_copy_done = np.bincount(episodes.copy[completed], minlength=episodes.returns.size)
    per_copy_all = np.bincount(episodes.copy, minlength=episodes.returns.size)
    rate = np.divide(per_copy_done, per_copy_all, out=np.zeros(per_copy_all.size), where=per_copy_all > 0)
    groups = [rate[episodes.group == g] for g in range(episodes.cloud_busy_s.size)]
    elapsed = np.bincount(episodes.group, weights=episodes.slots).astype(np.float64)
    elapsed /= np.bincount(episodes.group).clip(1)
    return {
        "completion_rate": float(completed.sum() / finished),
        "drop_rate": float((outcome == DROPPED).sum() / finished),
        "discard_rate": float((outcome == DISCARDED).sum() / finished),
        "latency_mean": float(latency.mean()) if latency.size else float("nan"),
        "latency_p50": float(quantiles[0]),
        "latency_p95": float(quantiles[1]),
        "latency_p99": float(quantiles[2]),
        "energy_per_task": float(episodes.energy.sum() / finished),
        "cloud_utilisation": float(np.mean(episodes.cloud_busy_s / np.maximum(elapsed * SLOT_S, 1e-12))),
        "fairness": float(np.mean([jain_index(r) for r in groups])),
    }
