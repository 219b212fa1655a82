"""Reference policies for the `paper` preset, all with one call signature.

``policy(obs, privileged) -> actions``: ``obs`` (B, 48) float32 observations, ``privileged``
the core's hidden state (``PaperCore.privileged()``) or ``None``; returns (B,) int64 actions.
Only a policy with ``needs_privileged = True`` (the oracle) is ever handed the hidden state, and
only through that explicit argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uavrl.envs.paper import DISCARD, LOCAL, MAX_TASK_TIME, OFFLOAD, UNIT_NORM, Obs
from uavrl.envs.scenarios import Cell
from uavrl.envs.worlds import World

THETA_GRID = tuple(range(1, MAX_TASK_TIME + 1))
# Tuning episodes use streams far from evaluation streams (same seed, disjoint copy indices).
TUNING_FIRST_COPY = 1_000_000


def _units(x: np.ndarray) -> np.ndarray:
    return np.rint(x * UNIT_NORM).astype(np.int64)


def local_feasible(obs: np.ndarray) -> np.ndarray:
    """(B,) bool: LOCAL would succeed (enough free units and a free local slot)."""
    free_slot = (obs[:, Obs.LOCAL_UNITS] == 0).any(axis=1)
    return free_slot & (_units(obs[:, Obs.FREE_LOCAL]) >= _units(obs[:, Obs.TASK_UNITS]))


def task_time(obs: np.ndarray) -> np.ndarray:
    """(B,) processing steps T_q of the pending task."""
    return np.rint(obs[:, Obs.TASK_TIME] * MAX_TASK_TIME).astype(np.int64)


@dataclass
class RandomPolicy:
    """Uniform over the three actions, from its own seeded generator."""

    seed: int = 0
    name: str = "random"
    needs_privileged: bool = False
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        return np.asarray(self._rng.integers(0, 3, size=obs.shape[0], dtype=np.int64))


@dataclass
class SpaceRandomPolicy:
    """Uniform over any Gymnasium action space (the reference of an env without rules): each
    row's action drawn by ``space.sample()`` from the space's own seeded generator."""

    space: Any
    seed: int = 0
    name: str = "random"
    needs_privileged: bool = False

    def __post_init__(self) -> None:
        self.space.seed(self.seed)

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        return np.stack([np.asarray(self.space.sample()) for _ in range(obs.shape[0])])


@dataclass
class ConstantPolicy:
    """Always the same action."""

    action: int
    name: str
    needs_privileged: bool = False

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        return np.full(obs.shape[0], self.action, dtype=np.int64)


@dataclass
class LocalElseOffload:
    """LOCAL if it would succeed, else OFFLOAD."""

    name: str = "local_else_offload"
    needs_privileged: bool = False

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        return np.where(local_feasible(obs), LOCAL, OFFLOAD).astype(np.int64)


@dataclass
class ThresholdPolicy:
    """Admit tasks with ``T_q <= theta`` (LOCAL if feasible else OFFLOAD); DISCARD the rest."""

    theta: int | np.ndarray
    name: str = "threshold"
    needs_privileged: bool = False

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        placed = np.where(local_feasible(obs), LOCAL, OFFLOAD)
        return np.where(task_time(obs) <= self.theta, placed, DISCARD).astype(np.int64)


@dataclass
class GreedyEstimated:
    """Threshold admission that reads the channel from the last offload outcome ``I_o``.

    Offloads when the last offload succeeded (the channel is believed good), else places
    locally when feasible and tries the cloud otherwise. Same observation as the agent.
    """

    theta: int | np.ndarray
    name: str = "greedy_estimated"
    needs_privileged: bool = False

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        believed_good = obs[:, Obs.FLAG_OFFLOAD] > 0.5
        placed = np.where(believed_good | ~local_feasible(obs), OFFLOAD, LOCAL)
        return np.where(task_time(obs) <= self.theta, placed, DISCARD).astype(np.int64)


@dataclass
class GreedyOracle:
    """Threshold admission with the hidden state: OFFLOAD whenever it would succeed (saving
    local capacity for bad-channel periods), else LOCAL if feasible, else DISCARD."""

    theta: int | np.ndarray
    name: str = "oracle"
    needs_privileged: bool = True

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        if privileged is None:
            raise ValueError("the oracle needs the privileged hidden state, got None")
        offload_ok = (
            (privileged["channel"] == 1)
            & (privileged["free_cloud_slots"] > 0)
            & (privileged["pool_level"] >= _units(obs[:, Obs.TASK_UNITS]))
        )
        placed = np.where(offload_ok, OFFLOAD, np.where(local_feasible(obs), LOCAL, DISCARD))
        return np.where(task_time(obs) <= self.theta, placed, DISCARD).astype(np.int64)


Policy = (
    RandomPolicy
    | SpaceRandomPolicy
    | ConstantPolicy
    | LocalElseOffload
    | ThresholdPolicy
    | GreedyEstimated
    | GreedyOracle
)


def cell_returns(
    policy: Policy, preset: str, cell: Cell, episodes: int, seed: int, first_copy: int = 0
) -> np.ndarray:
    """(episodes,) returns of ``policy`` alone in ``cell`` on streams ``first_copy + [0, episodes)``."""
    world = World(cell.name, ({"preset": preset, **cell.env_params()},), shared=False)
    return world.episode_returns(policy, seed, first_copy + np.arange(episodes), policy.needs_privileged)


def tune_theta(
    make_policy: Callable[[np.ndarray], Policy],
    worlds: Sequence[World],
    episodes: int,
    seed: int,
    grid: Sequence[int] = THETA_GRID,
) -> tuple[int, dict[int, float]]:
    """Grid search of the admission threshold in ``worlds`` (the training cells only).

    The whole grid runs as one batch: ``theta`` is a per-copy array and every theta sees the
    same ``episodes`` streams (common random numbers), disjoint from the evaluation streams. In
    a world of N agents every agent of an episode uses the same theta (a reference policy acts
    as N copies of itself), so a shared pool is tuned for as it is shared.

    Returns:
        The best theta (the smallest among ties) and the mean return of every theta tried.
    """
    base = TUNING_FIRST_COPY + np.tile(np.arange(episodes), len(grid))
    per_world = []
    for world in worlds:
        policy = make_policy(np.tile(np.repeat(np.asarray(grid), episodes), world.n_agents))
        returns = world.episode_returns(policy, seed, base, privileged=policy.needs_privileged)
        per_world.append(returns.reshape(len(grid), episodes).mean(axis=1))
    means = np.mean(per_world, axis=0)
    scores = {int(theta): float(m) for theta, m in zip(grid, means, strict=True)}
    return int(grid[int(np.argmax(means))]), scores


def reference_policies(tuning_worlds: Sequence[World], tuning_episodes: int, seed: int) -> list[Policy]:
    """Every reference policy, thresholds tuned in ``tuning_worlds`` (training cells, one regime)."""
    theta, _ = tune_theta(ThresholdPolicy, tuning_worlds, tuning_episodes, seed)
    theta_est, _ = tune_theta(GreedyEstimated, tuning_worlds, tuning_episodes, seed)
    theta_oracle, _ = tune_theta(GreedyOracle, tuning_worlds, tuning_episodes, seed)
    return [
        RandomPolicy(seed),
        ConstantPolicy(LOCAL, "always_local"),
        ConstantPolicy(OFFLOAD, "always_offload"),
        LocalElseOffload(),
        ThresholdPolicy(theta),
        GreedyEstimated(theta_est),
        GreedyOracle(theta_oracle),
    ]


FLOOR_POLICIES = ("random", "always_local", "always_offload")
