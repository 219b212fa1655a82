"""Reference policies for the `paper` preset, all with one call signature.

``policy(obs, privileged) -> actions``: ``obs`` (B, 48) float32 observations, ``privileged``
the core's hidden state (``PaperCore.privileged()``) or ``None``; returns (B,) int64 actions.
Only a policy with ``needs_privileged = True`` (``greedy_privileged``, ``privileged_rule``) is ever
handed the hidden state, and only through that explicit argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uavrl.envs.paper.core import DISCARD, LOCAL, MAX_TASK_TIME, OFFLOAD, UNIT_NORM, Obs
from uavrl.envs.scenarios import Cell
from uavrl.envs.tuning import TunedRule, coordinate_ascent
from uavrl.envs.worlds import World
from uavrl.errors import ConfigError

THETA_GRID = tuple(range(1, MAX_TASK_TIME + 1))
# The two-threshold rules' thresholds: 0 turns an option off.
RULE_GRID = tuple(range(MAX_TASK_TIME + 1))
# Tuning evaluates candidates in batches of at most this many env copies (memory: ~0.7 KB each).
MAX_TUNING_COPIES = 60_000
# Tuning episodes use streams far from evaluation streams (same seed, disjoint copy indices).
TUNING_FIRST_COPY = 1_000_000


def _units(x: np.ndarray) -> np.ndarray:
    return np.rint(x * UNIT_NORM).astype(np.int64)


def local_feasible(obs: np.ndarray) -> np.ndarray:
    """(B,) bool: LOCAL would succeed (enough free units and a free local slot)."""
    free_slot = (obs[:, Obs.LOCAL_UNITS] == 0).any(axis=1)
    return free_slot & (_units(obs[:, Obs.FREE_LOCAL]) >= _units(obs[:, Obs.TASK_UNITS]))


def steps_left(obs: np.ndarray, episode_length: int) -> np.ndarray:
    """(B,) steps left in the episode, this one included (E_r)."""
    return np.rint(obs[:, Obs.STEPS_LEFT] * episode_length).astype(np.int64)


def _discard_unpayable(actions: np.ndarray, obs: np.ndarray, episode_length: int | None) -> np.ndarray:
    """DISCARD where ``T_q`` exceeds the steps left (with ``episode_length``): a task placed now
    completes ``T_q - 1`` steps later, after the episode's last step, and pays nothing."""
    if episode_length is not None:
        actions = np.where(task_time(obs) > steps_left(obs, episode_length), DISCARD, actions)
    return np.asarray(actions, dtype=np.int64)


def offload_would_succeed(obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
    """(B,) bool from the hidden state: a good channel, a free cloud slot and enough pool units."""
    if privileged is None:
        raise ValueError("a privileged policy needs the hidden state, got None")
    return (
        (privileged["channel"] == 1)
        & (privileged["free_cloud_slots"] > 0)
        & (privileged["pool_level"] >= _units(obs[:, Obs.TASK_UNITS]))
    )


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
class GreedyPrivileged:
    """Threshold admission with the hidden state: OFFLOAD whenever it would succeed (saving
    local capacity for bad-channel periods), else LOCAL if feasible, else DISCARD. A weak
    privileged rule (one threshold), kept to show what the hidden state alone buys."""

    theta: int | np.ndarray
    name: str = "greedy_privileged"
    needs_privileged: bool = True

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        offload_ok = offload_would_succeed(obs, privileged)
        placed = np.where(offload_ok, OFFLOAD, np.where(local_feasible(obs), LOCAL, DISCARD))
        return np.where(task_time(obs) <= self.theta, placed, DISCARD).astype(np.int64)


@dataclass
class TwoThresholdPolicy:
    """LOCAL if it is feasible and ``T_q <= local_max``; else OFFLOAD if ``T_q <= offload_max``;
    else DISCARD. Same observation as the agent; a threshold of 0 turns its option off.

    With ``episode_length`` set (the steps-left check), a task is also DISCARDed whenever
    ``T_q`` exceeds the steps left in the episode: it would complete after the episode ends and
    pay nothing, while holding capacity that a later task could use.
    """

    local_max: int | np.ndarray
    offload_max: int | np.ndarray
    episode_length: int | None = None
    name: str = "two_threshold"
    needs_privileged: bool = False

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        t = task_time(obs)
        offload_or_discard = np.where(t <= self.offload_max, OFFLOAD, DISCARD)
        actions = np.where(local_feasible(obs) & (t <= self.local_max), LOCAL, offload_or_discard)
        return _discard_unpayable(actions, obs, self.episode_length)

    @property
    def tuned_params(self) -> dict[str, int]:
        return {"local_max": int(self.local_max), "offload_max": int(self.offload_max)}


@dataclass
class PrivilegedRule:
    """The two-threshold rule with the steps-left check, given the hidden channel, pool level
    and cloud slots: OFFLOAD first when it would succeed and ``T_q <= offload_first_max`` (local
    capacity is kept for bad-channel periods); else LOCAL if feasible and ``T_q <= local_max``;
    else OFFLOAD if it would succeed and ``T_q <= offload_max``; else DISCARD.

    With ``offload_first_max = 0`` it scores exactly what the non-privileged rule with the same
    thresholds scores (a failed offload and a discard both drop the task), so tuned from the best
    rule it is at least as good on the tuning streams.
    """

    offload_first_max: int | np.ndarray
    local_max: int | np.ndarray
    offload_max: int | np.ndarray
    episode_length: int
    name: str = "privileged_rule"
    needs_privileged: bool = True

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> np.ndarray:
        t = task_time(obs)
        offload_ok = offload_would_succeed(obs, privileged)
        actions = np.where(
            offload_ok & (t <= self.offload_first_max),
            OFFLOAD,
            np.where(
                local_feasible(obs) & (t <= self.local_max),
                LOCAL,
                np.where(offload_ok & (t <= self.offload_max), OFFLOAD, DISCARD),
            ),
        )
        return _discard_unpayable(actions, obs, self.episode_length)

    @property
    def tuned_params(self) -> dict[str, int]:
        return {
            "offload_first_max": int(self.offload_first_max),
            "local_max": int(self.local_max),
            "offload_max": int(self.offload_max),
        }


Policy = (
    RandomPolicy
    | ConstantPolicy
    | LocalElseOffload
    | ThresholdPolicy
    | GreedyEstimated
    | GreedyPrivileged
    | TwoThresholdPolicy
    | PrivilegedRule
)


def cell_returns(
    policy: Policy, preset: str, cell: Cell, episodes: int, seed: int, first_copy: int = 0
) -> np.ndarray:
    """(episodes,) returns of ``policy`` alone in ``cell`` on streams ``first_copy + [0, episodes)``."""
    world = World(cell.name, ({"preset": preset, **cell.env_params()},), shared=False)
    return world.episode_returns(policy, seed, first_copy + np.arange(episodes), policy.needs_privileged)


def candidate_scores(
    make_policy: Callable[..., Policy],
    candidates: Sequence[tuple[int, ...]],
    worlds: Sequence[World],
    episodes: int,
    seed: int,
) -> np.ndarray:
    """(len(candidates),) mean return of each parameter tuple over ``worlds`` and ``episodes``
    tuning streams (the same streams for every candidate: common random numbers, disjoint from
    the evaluation streams).

    Candidates run as batches: ``make_policy`` gets one per-copy array per parameter. In a world
    of N agents every agent of an episode uses the same parameters (a reference policy acts as N
    copies of itself), so a shared pool is tuned for as it is shared.
    """
    per_world = []
    for world in worlds:
        chunk = max(1, MAX_TUNING_COPIES // (episodes * world.n_agents))
        means = []
        for start in range(0, len(candidates), chunk):
            block = np.asarray(candidates[start : start + chunk], dtype=np.int64)
            per_copy = [np.tile(np.repeat(column, episodes), world.n_agents) for column in block.T]
            policy = make_policy(*per_copy)
            base = TUNING_FIRST_COPY + np.tile(np.arange(episodes), len(block))
            returns = world.episode_returns(policy, seed, base, privileged=policy.needs_privileged)
            means.append(returns.reshape(len(block), episodes).mean(axis=1))
        per_world.append(np.concatenate(means))
    return np.asarray(np.mean(per_world, axis=0))


def tune_rule(
    make_policy: Callable[..., Policy],
    axes: Sequence[Sequence[int]],
    worlds: Sequence[World],
    episodes: int,
    seed: int,
    start: Sequence[int] | None = None,
    coarse_step: int = 5,
) -> TunedRule:
    """Integer rule parameters tuned in ``worlds`` (the training cells only) by the search of
    ``envs.tuning``, every candidate scored by :func:`candidate_scores`."""

    def score(candidates: list[tuple[float, ...]]) -> np.ndarray:
        return candidate_scores(make_policy, [tuple(map(int, c)) for c in candidates], worlds, episodes, seed)

    return coordinate_ascent(score, axes, start, coarse_step)


def reference_policies(tuning_worlds: Sequence[World], tuning_episodes: int, seed: int) -> list[Policy]:
    """Every reference policy, parameters tuned in ``tuning_worlds`` (training cells, one regime)."""
    lengths = {int(p.get("episode_length", 100)) for w in tuning_worlds for p in w.agent_params}
    if len(lengths) != 1:
        raise ConfigError(f"the tuning worlds must share one episode_length, got {sorted(lengths)}")
    length = lengths.pop()

    def tune(make: Callable[..., Policy], axes: Sequence[Sequence[int]], **kw: Any) -> tuple[int, ...]:
        return tuple(int(v) for v in tune_rule(make, axes, tuning_worlds, tuning_episodes, seed, **kw).values)

    (theta,) = tune(ThresholdPolicy, [THETA_GRID])
    (theta_est,) = tune(GreedyEstimated, [THETA_GRID])
    (theta_privileged,) = tune(GreedyPrivileged, [THETA_GRID])
    two = tune(TwoThresholdPolicy, [RULE_GRID, RULE_GRID])

    def with_check(a: Any, b: Any) -> TwoThresholdPolicy:
        return TwoThresholdPolicy(a, b, length, name="two_threshold_steps_left")

    two_checked = tune(with_check, [RULE_GRID, RULE_GRID])

    def privileged(c: Any, a: Any, b: Any) -> PrivilegedRule:
        return PrivilegedRule(c, a, b, length)

    # from the best non-privileged rule: the privileged one starts where it ends
    privileged_values = tune(privileged, [RULE_GRID] * 3, start=(0, *two_checked))
    return [
        RandomPolicy(seed),
        ConstantPolicy(LOCAL, "always_local"),
        ConstantPolicy(OFFLOAD, "always_offload"),
        LocalElseOffload(),
        ThresholdPolicy(theta),
        GreedyEstimated(theta_est),
        TwoThresholdPolicy(two[0], two[1]),
        with_check(*two_checked),
        GreedyPrivileged(theta_privileged),
        privileged(*privileged_values),
    ]
