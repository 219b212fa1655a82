"""Reference policies for the `mec` preset, with the call signature of the `paper` ones.

``policy(obs, privileged) -> actions``: ``obs`` (B, 17) observations, ``privileged`` the core's
hidden state (:meth:`~uavrl.envs.mec.core.MecCore.privileged`) or ``None``. A rule knows the
engineering constants of its UAV (its CPU frequency, transmit power, distance to the RSU, the
cloud's nominal capacity and the cost weights: ``MecParams``), never the hidden state, except
the privileged rule. In hybrid mode a rule acts at the default frequency and full power.

The estimating rules price each option of the pending task with the cost the environment will
charge, ``w_T T / tau + w_E E / E_ref``, from estimated completion times, and take the cheapest
of LOCAL, OFFLOAD and DISCARD (``w_disc``); an option is feasible when its estimated time is
within ``margin * tau`` (the threshold policy tunes ``margin`` on the training cells). The
two-margin rule tunes one margin for LOCAL and one for OFFLOAD: the two estimates err
differently (the local queue is observed exactly, the link and the cloud are not). The link's
rate is the last realised one while fresh (``FRESH_SLOTS``), else the nominal one; the cloud's
speed is its nominal capacity at the mean load, or, where the observation carries it
(``observe_cloud_speed``), the last realised speed while fresh.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uavrl.envs.mec.core import (
    BACKHAUL_S,
    C_RANGE,
    CLOUD_SPEED_NORM_HZ,
    D_RANGE_BITS,
    DISCARD,
    DISTANCE_NORM_M,
    LOAD_LEVELS,
    LOCAL,
    LOCAL_BACKLOG_NORM_S,
    OFFLOAD,
    P_TX_RANGE_DBM,
    RATE_NORM,
    TAU_RANGE_S,
    TX_BACKLOG_NORM_BITS,
    V_MAX_KMH,
    MecObs,
    MecParams,
    compute_energy,
    dbm_to_w,
    default_knob_actions,
    link_rate,
    sinr,
    transmit_energy,
)
from uavrl.envs.mec.evaluation import run_clouds
from uavrl.envs.tuning import coordinate_ascent
from uavrl.errors import ConfigError

MARGIN_GRID = tuple(np.round(np.arange(0.2, 1.41, 0.1), 2))
FRESH_SLOTS = 5  # a realised rate older than this many slots is replaced by the nominal one


@dataclass(frozen=True)
class PendingTask:
    """The pending task read from observations, each (B,)."""

    present: np.ndarray
    bits: np.ndarray
    cycles: np.ndarray
    tau: np.ndarray

    @classmethod
    def from_obs(cls, obs: np.ndarray) -> PendingTask:
        bits = D_RANGE_BITS[0] + obs[:, MecObs.TASK_BITS] * (D_RANGE_BITS[1] - D_RANGE_BITS[0])
        density = C_RANGE[0] + obs[:, MecObs.TASK_DENSITY] * (C_RANGE[1] - C_RANGE[0])
        tau = TAU_RANGE_S[0] + obs[:, MecObs.TASK_DEADLINE] * (TAU_RANGE_S[1] - TAU_RANGE_S[0])
        return cls(obs[:, MecObs.TASK_PENDING] > 0.5, bits, bits * density, tau)


@dataclass
class MecRandomPolicy:
    """Uniform over the three choices (and over [0, 1] for the value in hybrid mode)."""

    params: MecParams
    seed: int = 0
    name: str = "random"
    needs_privileged: bool = False

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        choice = self._rng.integers(0, 3, size=obs.shape[0], dtype=np.int64)
        if self.params.action_mode == "discrete":
            return choice
        return choice, self._rng.random((obs.shape[0], 1)).astype(np.float32)


@dataclass
class MecConstantPolicy:
    """Always the same choice (at the default frequency and full power)."""

    params: MecParams
    action: int
    name: str
    needs_privileged: bool = False

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        choice = np.full(obs.shape[0], self.action, dtype=np.int64)
        return default_knob_actions(choice, self.params)


@dataclass
class CostEstimatingPolicy:
    """The cheapest estimated option per task (see the module docstring).

    Attributes:
        params: the UAV's engineering constants and cost weights.
        margin: feasible when the estimated time is at most ``margin * tau`` (scalar or (B,)).
        offload_margin: OFFLOAD's margin where it differs from LOCAL's (None: ``margin``).
        oracle: read the true current rate, cloud load and cloud occupancy from the hidden
            state instead of estimating them from the last realised values.
    """

    params: MecParams
    margin: float | np.ndarray = 1.0
    oracle: bool = False
    name: str = "greedy_estimated"
    offload_margin: float | np.ndarray | None = None

    @property
    def needs_privileged(self) -> bool:
        return self.oracle

    @property
    def tuned_params(self) -> dict[str, float]:
        margins = {"margin": float(self.margin)}
        if self.offload_margin is not None:
            margins["offload_margin"] = float(self.offload_margin)
        return margins

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        p = self.params
        task = PendingTask.from_obs(obs)
        f_loc = p.f_loc_ghz * 1e9
        p_tx = float(dbm_to_w(P_TX_RANGE_DBM[1]))
        local_time = obs[:, MecObs.LOCAL_BACKLOG] * LOCAL_BACKLOG_NORM_S + task.cycles / f_loc
        local_cost = (
            p.w_latency * local_time / task.tau + p.w_energy * compute_energy(f_loc, task.cycles) / p.e_ref
        )

        # velocity and distance are observed; the nominal link has no shadowing and no blockage
        velocity = obs[:, MecObs.VELOCITY].astype(np.float64) * V_MAX_KMH
        distance = np.maximum(obs[:, MecObs.DISTANCE].astype(np.float64) * DISTANCE_NORM_M, 10.0)
        nominal_rate = link_rate(sinr(P_TX_RANGE_DBM[1], distance, 0.0, False, velocity))
        if self.oracle:
            if privileged is None:
                raise ValueError("the mec oracle needs the privileged hidden state, got None")
            rate = np.maximum(privileged["rate"], 1.0)
            cloud_time = task.cycles * (privileged["cloud_tasks"] + 1) / privileged["cloud_hz"]
        else:
            fresh = obs[:, MecObs.LAST_RATE_AGE] * p.horizon <= FRESH_SLOTS
            rate = np.where(fresh, np.maximum(obs[:, MecObs.LAST_RATE] * RATE_NORM, 1.0), nominal_rate)
            cloud_time = task.cycles / (p.cloud_ghz * 1e9 * (1.0 - LOAD_LEVELS.mean()))
            if p.observe_cloud_speed:  # a fresh realised cloud speed replaces the nominal one
                speed = obs[:, MecObs.LAST_CLOUD_SPEED] * CLOUD_SPEED_NORM_HZ
                cloud_fresh = (obs[:, MecObs.LAST_CLOUD_AGE] * p.horizon <= FRESH_SLOTS) & (speed > 0)
                cloud_time = np.where(cloud_fresh, task.cycles / np.maximum(speed, 1.0), cloud_time)
        tx_backlog = obs[:, MecObs.TX_BACKLOG] * TX_BACKLOG_NORM_BITS
        offload_time = (tx_backlog + task.bits) / rate + BACKHAUL_S + cloud_time
        offload_energy = transmit_energy(p_tx, task.bits, rate)
        offload_cost = p.w_latency * offload_time / task.tau + p.w_energy * offload_energy / p.e_ref

        limit = np.asarray(self.margin) * task.tau
        offload_limit = limit if self.offload_margin is None else np.asarray(self.offload_margin) * task.tau
        costs = np.stack(
            [
                np.where(local_time <= limit, local_cost, np.inf),
                np.where(offload_time <= offload_limit, offload_cost, np.inf),
                np.full(obs.shape[0], p.w_discard),
            ],
            axis=1,
        )
        choice = np.where(task.present, costs.argmin(axis=1), DISCARD)
        return default_knob_actions(choice, p)


@dataclass
class ClairvoyantPolicy:
    """Per task, the option whose realised cost is lowest: an exact look-ahead on copies of the
    env state (:meth:`~uavrl.envs.mec.core.MecCore.lookahead_costs`, handed over with the hidden
    state), each option followed by ``continuation`` (the tuned privileged rule) for later
    tasks and cloud mates: a rollout of that rule. A strong privileged reference, not a bound:
    it improves on its continuation one decision at a time and acts at the default frequency
    and full power."""

    params: MecParams
    continuation: CostEstimatingPolicy | None = None
    name: str = "clairvoyant"
    needs_privileged: bool = True
    needs_lookahead: bool = True

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        if privileged is None or "option_costs" not in privileged:
            raise ValueError("the clairvoyant policy needs the look-ahead costs (option_costs), got none")
        present = PendingTask.from_obs(obs).present
        choice = np.where(present, privileged["option_costs"].argmin(axis=1), DISCARD)
        return default_knob_actions(choice, self.params)


MecPolicy = MecRandomPolicy | MecConstantPolicy | CostEstimatingPolicy | ClairvoyantPolicy


def tune_margin(
    make_policy: Callable[[np.ndarray], CostEstimatingPolicy],
    evaluate: Callable[[CostEstimatingPolicy, int], np.ndarray],
    episodes: int,
    grid: Sequence[float] = MARGIN_GRID,
) -> tuple[float, dict[float, float]]:
    """Grid search of the feasibility margin on the training cells, as one batch.

    ``evaluate(policy, copies)`` returns the (copies,) episode returns of ``policy`` over
    ``copies = len(grid) * episodes`` copies, copy ``i`` acting with margin ``grid[i // episodes]``.

    Returns:
        The best margin (the smallest among ties) and every margin's mean return.
    """
    margins = np.repeat(np.asarray(grid, dtype=np.float64), episodes)
    returns = evaluate(make_policy(margins), margins.size).reshape(len(grid), episodes).mean(axis=1)
    scores = {float(m): float(r) for m, r in zip(grid, returns, strict=True)}
    return float(grid[int(np.argmax(returns))]), scores


# Tuning episodes use streams far from evaluation streams (same seed, disjoint copy indices).
TUNING_FIRST_COPY = 1_000_000


def tuning_returns(
    policy: MecPolicy, cells: Sequence[MecParams], copies: int, episodes: int, seed: int
) -> np.ndarray:
    """(copies,) returns of ``policy``, each copy's mean over the ``cells``; copy ``i`` runs on
    tuning stream ``i % episodes``, so every block of ``episodes`` copies sees the same tasks.

    With ``cloud_group_size = N`` each copy is N UAVs on one cloud (agent-major rows, as in
    evaluation; the policy acts for all ``N * copies`` rows) and its return is their mean.
    """
    streams = TUNING_FIRST_COPY + np.arange(copies) % episodes
    privileged = bool(getattr(policy, "needs_privileged", False))
    return np.mean([run_clouds(policy, cell, seed, streams, privileged)[0] for cell in cells], axis=0)


def mec_reference_policies(
    params: MecParams, tuning_cells: Sequence[MecParams], episodes: int, seed: int
) -> list[MecPolicy]:
    """Every `mec` reference policy; the margin of the rule (``threshold``), the two margins of
    ``two_margin`` and of the same rule given the hidden state (``privileged_rule``) are tuned on
    ``tuning_cells`` (the training cells) only. ``params`` holds what the rules know: the UAV's
    CPU, the cost weights and the nominal cloud."""
    uavs = tuning_cells[0].cloud_group_size
    if any(c.cloud_group_size != uavs for c in tuning_cells):
        raise ConfigError("the tuning cells of one set of references need one cloud_group_size")

    def evaluate(policy: CostEstimatingPolicy, copies: int) -> np.ndarray:
        return tuning_returns(policy, tuning_cells, copies, episodes, seed)

    def tuned(oracle: bool) -> float:
        def make(margins: np.ndarray) -> CostEstimatingPolicy:
            # one margin per tuning copy, repeated for each of its N UAVs (agent-major rows)
            return CostEstimatingPolicy(params, np.tile(margins, uavs), oracle=oracle)

        return tune_margin(make, evaluate, episodes)[0]

    def two_margins(oracle: bool) -> tuple[float, float]:
        def score(candidates: list[tuple[float, ...]]) -> np.ndarray:
            local, offload = (np.repeat(column, episodes) for column in np.asarray(candidates).T)
            policy = CostEstimatingPolicy(
                params, np.tile(local, uavs), oracle=oracle, offload_margin=np.tile(offload, uavs)
            )
            return evaluate(policy, local.size).reshape(len(candidates), episodes).mean(axis=1)

        best = coordinate_ascent(score, [MARGIN_GRID, MARGIN_GRID], coarse_step=3).values
        return float(best[0]), float(best[1])

    local, offload = two_margins(False)
    privileged_local, privileged_offload = two_margins(True)
    privileged = CostEstimatingPolicy(
        params, privileged_local, oracle=True, name="privileged_rule", offload_margin=privileged_offload
    )
    return [
        MecRandomPolicy(params, seed),
        MecConstantPolicy(params, LOCAL, "always_local"),
        MecConstantPolicy(params, OFFLOAD, "always_offload"),
        CostEstimatingPolicy(params, 1.0, name="greedy_estimated"),
        CostEstimatingPolicy(params, tuned(False), name="threshold"),
        CostEstimatingPolicy(params, local, name="two_margin", offload_margin=offload),
        privileged,
        ClairvoyantPolicy(params, privileged),
    ]
