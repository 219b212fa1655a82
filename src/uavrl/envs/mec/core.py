"""Preset `mec`: a physical offloading model (bits, cycles, seconds, joules) with slow hidden state.

A batched core steps ``B`` copies as NumPy arrays. Per slot (``dt = 0.1 s``) at most one task
``(D bits, c cycles/bit, deadline tau)`` is pending; LOCAL queues it on the UAV's CPU, OFFLOAD on
its transmitter (then a 10 ms backhaul and the cloud), DISCARD drops it at a fixed cost. The
link rate follows a hidden AR(1) shadowing and a LoS / vehicle-blockage chain whose speeds scale
with velocity, capped by Doppler inter-carrier interference. The cloud serves every task in
service from the copies of one cloud group by processor sharing, at a capacity scaled by a hidden
background load. Within a slot the queues run in continuous simulated time, event by event:
completions, uploads, backhaul arrivals and deadlines happen at their exact instants.

The specification is ``shared/docs/environment.md``, section "Preset `mec`".

Every slot draws exactly ``DRAWS_PER_SLOT`` uniforms per copy whatever the actions, so a seeded
copy's exogenous process (arrivals, task sizes, channel, load) does not depend on the policy:
evaluations with the same seed use common random numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from uavrl.envs.channel import CARRIER_HZ, LIGHT_SPEED
from uavrl.envs.paper.core import HASH_NEUTRAL_PARAM
from uavrl.envs.rng import BatchedStreams
from uavrl.errors import ConfigError, check_range, reject_unknown

LOCAL, OFFLOAD, DISCARD = 0, 1, 2
N_ACTIONS = 3

# -- the physical model (spec constants) -------------------------------------------------------
SLOT_S = 0.1
BANDWIDTH_HZ = 10e6
RATE_MCS_MAX = 43.3e6  # 802.11bd NGV-MCS 9 in 10 MHz, bit/s
MIDAMBLE_EFF = 8 / 9  # M / (M + 1), M = 8
ANTENNA_GAINS_DB = 3.0 + 3.0
NOISE_DBM = -104.0 + 9.0  # thermal noise in 10 MHz plus the noise figure
BLOCKAGE_LOSS_DB = 10.0
SHADOWING_SIGMA_DB = 3.0
SHADOWING_DCORR_M = 13.0
BLOCKAGE_P_REF = 0.05  # LoS -> NLoSv per slot at V_REF
BLOCKAGE_V_REF_KMH = 30.0
SUBCARRIER_HZ = 156.25e3
BACKHAUL_S = 0.010
KAPPA = 1e-28
LOAD_LEVELS = np.array([0.1, 0.5, 0.8])
LOAD_STAY = 0.95
P_TX_RANGE_DBM = (10.0, 23.0)
F_LOC_RANGE_HZ = (0.5e9, 2.5e9)
D_RANGE_BITS = (1e6, 4e6)
C_RANGE = (300.0, 1000.0)  # cycles per bit
TAU_RANGE_S = (0.5, 1.0)

OUTCOMES = ("completed", "dropped", "discarded")
COMPLETED, DROPPED, DISCARDED = range(len(OUTCOMES))
OBJECTIVES = ("latency", "energy", "drop", "discard")
"""Cost components of one step, in the order of the vector reward."""

# Observation normalisers: a value at or above the constant reads as 1.
LOCAL_BACKLOG_NORM_S = 2.0
TX_BACKLOG_NORM_BITS = 16e6
RATE_NORM = RATE_MCS_MAX * MIDAMBLE_EFF
CLOUD_TIME_NORM_S = 1.0
CLOUD_SPEED_NORM_HZ = 60e9  # the high cloud capacity: no cell of the grid reads 1
V_MAX_KMH = 120.0
DISTANCE_NORM_M = 1000.0

# Per copy per slot: arrival, D, c, tau, 2 for the shadowing normal, blockage, 2 for the load.
DRAWS_PER_SLOT = 9
# Stages of a task-table row.
FREE, IN_LOCAL, IN_TX, IN_BACKHAUL, IN_CLOUD = 0, 1, 2, 3, 4
_EPS = 1e-12


class MecObs:
    """Column layout of the 17-float `mec` observation (all in [0, 1])."""

    LOCAL_BACKLOG = 0  # seconds of queued local work at the default f_loc / 2 s
    TX_BACKLOG = 1  # queued bits / 16 Mbit
    TASK_PENDING = 2
    TASK_BITS = 3  # (D - 1 Mbit) / 3 Mbit
    TASK_DENSITY = 4  # (c - 300) / 700
    TASK_DEADLINE = 5  # (tau - 0.5 s) / 0.5 s
    BATTERY = 6  # E_r / E_0
    LAST_RATE = 7  # last realised upload rate / (43.3 Mb/s * 8/9)
    LAST_RATE_AGE = 8  # slots since then / H
    LAST_CLOUD_TIME = 9  # last realised cloud service time / 1 s
    LAST_CLOUD_AGE = 10
    LAST_COMPLETED = 11  # outcome of the last finished task, one-hot
    LAST_DROPPED = 12
    LAST_DISCARDED = 13
    VELOCITY = 14  # v / 120 km/h
    DISTANCE = 15  # d / 1000 m
    SLOTS_LEFT = 16  # slots left / H
    DIM = 17
    # with observe_cloud_speed: the cycles of the last task the cloud served / its service time,
    # / CLOUD_SPEED_NORM_HZ (0 before any)
    LAST_CLOUD_SPEED = 17
    # with observe_hidden (after the cloud speed where observed): (shadowing + 3 sigma) / 6 sigma,
    # blockage, load, min(cloud tasks / 10, 1); HIDDEN and DIM_WITH_HIDDEN: all four, no speed
    HIDDEN = slice(17, 21)
    DIM_WITH_HIDDEN = 21
    # the hidden columns by name, in that order (observe_hidden may name a subset)
    HIDDEN_NAMES = ("shadowing", "blockage", "cloud_load", "cloud_tasks")


# -- link budget (pure functions, each tested against the spec) ---------------------------------


def path_loss_db(distance_m: np.ndarray | float) -> np.ndarray:
    """``47.86 + 27.5 log10(d)`` dB."""
    return 47.86 + 27.5 * np.log10(np.asarray(distance_m, dtype=np.float64))


def ici_power(velocity_kmh: Any) -> Any:
    """Doppler inter-carrier interference ``(pi f_d / df)^2 / 3`` (relative to the signal);
    a float or an array like ``velocity_kmh``."""
    return (np.pi * (np.asarray(velocity_kmh) / 3.6) * CARRIER_HZ / LIGHT_SPEED / SUBCARRIER_HZ) ** 2 / 3


def sinr(
    p_tx_dbm: np.ndarray | float,
    distance_m: np.ndarray | float,
    shadowing_db: np.ndarray | float,
    blocked: np.ndarray | bool,
    velocity_kmh: float | np.ndarray,
) -> np.ndarray:
    """Linear ``S / (N + S P_ici)`` for a received power ``P_tx + gains - PL(d) - S_t - 10 [NLoSv]``."""
    rx_dbm = (
        np.asarray(p_tx_dbm, dtype=np.float64)
        + ANTENNA_GAINS_DB
        - path_loss_db(distance_m)
        - np.asarray(shadowing_db, dtype=np.float64)
        - BLOCKAGE_LOSS_DB * np.asarray(blocked, dtype=np.float64)
    )
    signal, noise = 10 ** (rx_dbm / 10), 10 ** (NOISE_DBM / 10)
    return np.asarray(signal / (noise + signal * ici_power(velocity_kmh)))


def link_rate(sinr_linear: np.ndarray | float) -> np.ndarray:
    """``min(r_mcs_max, B log2(1 + SINR)) * M / (M + 1)`` bit/s."""
    shannon = BANDWIDTH_HZ * np.log2(1.0 + np.asarray(sinr_linear, dtype=np.float64))
    return np.minimum(RATE_MCS_MAX, shannon) * MIDAMBLE_EFF


def shadowing_correlation(velocity_kmh: float) -> float:
    """AR(1) coefficient ``rho_s = exp(-v dt / d_corr)`` of the shadowing per slot."""
    return math.exp(-(velocity_kmh / 3.6) * SLOT_S / SHADOWING_DCORR_M)


def blockage_probabilities(velocity_kmh: float) -> tuple[float, float]:
    """``(p_block, p_clear)`` per slot: LoS -> NLoSv ``min(1, v / v_ref * 0.05)``, and back
    twice as likely (``min(1, 2 p_block)``)."""
    p_block = min(1.0, velocity_kmh / BLOCKAGE_V_REF_KMH * BLOCKAGE_P_REF)
    return p_block, min(1.0, 2.0 * p_block)


def compute_energy(f_hz: np.ndarray | float, cycles: np.ndarray | float) -> np.ndarray:
    """``kappa f^2 C`` joules for ``C`` cycles at ``f`` Hz."""
    return np.asarray(KAPPA * np.asarray(f_hz) ** 2 * np.asarray(cycles))


def transmit_energy(
    p_tx_w: np.ndarray | float, bits: np.ndarray | float, rate: np.ndarray | float
) -> np.ndarray:
    """``P_tx D / r`` joules to send ``D`` bits at ``r`` bit/s."""
    return np.asarray(np.asarray(p_tx_w) * np.asarray(bits) / np.asarray(rate))


def dbm_to_w(dbm: np.ndarray | float) -> np.ndarray:
    return np.asarray(10 ** ((np.asarray(dbm, dtype=np.float64) - 30.0) / 10))


@dataclass(frozen=True)
class MecParams:
    """Parameters of the `mec` preset; validated on construction.

    Attributes:
        velocity: UAV speed in km/h, [0, 120].
        distance: UAV-to-RSU distance in m, [10, 2000].
        cloud_ghz: cloud capacity F in GHz (> 0), shared by processor sharing in a cloud group.
        f_loc_ghz: local CPU frequency in discrete mode, [0.5, 2.5] GHz.
        p_arrival: task arrival probability per slot, [0, 1].
        battery_j: initial battery E_0 in joules (> 0).
        horizon: slots per episode (truncated), >= 1.
        action_mode: ``discrete`` (Discrete(3)) or ``hybrid`` (Tuple(Discrete(3), Box(0, 1, (1,)))).
        reward_mode: ``scalar`` (weighted) or ``vector`` (one reward per objective).
        w_latency, w_energy, w_drop, w_discard: cost weights; ``e_ref`` the energy scale in J.
        cloud_group_size: copies ``[g K, ...]``: copy ``i`` shares the cloud of group ``i % K``,
            ``K = B / cloud_group_size`` (N agents, agent-major, as the `paper` pools); 1 = private.
        max_tasks: task-table rows per copy (tasks in flight); a task that finds none is dropped.
        observe_cloud_speed: append the last realised cloud speed (``MecObs.LAST_CLOUD_SPEED``):
            the cycles of the last task the cloud served over its service time, what the UAV
            knows of its own task; the service time alone mixes the cloud's load with the task's
            size. The rules read it where observed.
        observe_hidden: append the hidden state to the observation (shadowing, blockage, cloud
            load, tasks on the cloud: ``MecObs.HIDDEN``), a privileged-observation baseline that
            measures what memory could recover; never a default. ``True`` appends all four; a
            list of names from ``MecObs.HIDDEN_NAMES`` appends those columns (in that order), to
            measure what each part of the hidden state is worth.
    """

    velocity: float = 30.0
    distance: float = 200.0
    cloud_ghz: float = 30.0
    f_loc_ghz: float = 1.5
    p_arrival: float = 0.5
    battery_j: float = 50.0
    horizon: int = 100
    action_mode: Literal["discrete", "hybrid"] = "discrete"
    reward_mode: Literal["scalar", "vector"] = "scalar"
    w_latency: float = 1.0
    w_energy: float = 1.0
    e_ref: float = 0.5
    w_drop: float = 4.0
    w_discard: float = 2.0
    cloud_group_size: int = 1
    max_tasks: int = 16
    observe_hidden: bool | tuple[str, ...] = False
    observe_cloud_speed: bool = field(default=False, metadata=HASH_NEUTRAL_PARAM)

    def __post_init__(self) -> None:
        if not isinstance(self.observe_hidden, bool):
            names = self.observe_hidden
            if (
                not isinstance(names, (list, tuple))
                or not names
                or len(set(names)) != len(names)
                or not set(names) <= set(MecObs.HIDDEN_NAMES)
            ):
                raise ConfigError(
                    f"observe_hidden must be true, false or a list of distinct names from "
                    f"{list(MecObs.HIDDEN_NAMES)}, got {names!r}"
                )
            object.__setattr__(self, "observe_hidden", tuple(names))
        check_range("velocity", self.velocity, 0.0, V_MAX_KMH, "km/h")
        check_range("distance", self.distance, 10.0, 2000.0, "m")
        check_range("cloud_ghz", self.cloud_ghz, low=0.0, unit="GHz")
        if self.cloud_ghz == 0:
            raise ConfigError(f"cloud_ghz must be > 0, got {self.cloud_ghz!r}")
        check_range("f_loc_ghz", self.f_loc_ghz, 0.5, 2.5, "GHz")
        check_range("p_arrival", self.p_arrival, 0.0, 1.0)
        check_range("battery_j", self.battery_j, low=0.0, unit="J")
        if self.battery_j == 0:
            raise ConfigError(f"battery_j must be > 0, got {self.battery_j!r}")
        check_range("horizon", self.horizon, low=1, unit="slots", integer=True)
        for name, allowed in (("action_mode", ("discrete", "hybrid")), ("reward_mode", ("scalar", "vector"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("w_latency", "w_energy", "w_drop", "w_discard"):
            check_range(name, getattr(self, name), low=0.0)
        check_range("e_ref", self.e_ref, low=0.0, unit="J")
        if self.e_ref == 0:
            raise ConfigError(f"e_ref must be > 0, got {self.e_ref!r}")
        check_range("cloud_group_size", self.cloud_group_size, low=1, integer=True)
        check_range("max_tasks", self.max_tasks, low=1, integer=True)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> MecParams:
        """Build from keyword arguments, naming any unknown one."""
        reject_unknown(kwargs, {f.name for f in fields(cls)}, "preset 'mec'")
        return cls(**kwargs)

    @classmethod
    def from_env_params(cls, params: dict[str, Any]) -> MecParams:
        """From a run's ``env.params`` (its ``preset`` key left out)."""
        return cls.from_kwargs(**{k: v for k, v in params.items() if k != "preset"})

    @property
    def hidden_observed(self) -> list[int]:
        """Indices into ``MecObs.HIDDEN_NAMES`` of the hidden columns the observation appends."""
        if isinstance(self.observe_hidden, bool):
            return list(range(len(MecObs.HIDDEN_NAMES))) if self.observe_hidden else []
        return [i for i, name in enumerate(MecObs.HIDDEN_NAMES) if name in self.observe_hidden]

    @property
    def weights(self) -> np.ndarray:
        """(4,) weights of the objectives ``OBJECTIVES``."""
        return np.array([self.w_latency, self.w_energy, self.w_drop, self.w_discard])


def _table_min(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(B,) row-wise minimum of ``values`` where ``mask``, inf where none."""
    return np.where(mask, values, np.inf).min(axis=1)


class MecCore:
    """``B`` copies of the `mec` environment stepped together.

    Tasks in flight live in a table of ``max_tasks`` rows per copy (stage, FIFO number, times,
    sizes, remaining work, chosen frequency and power, energy spent). Times are kept relative to
    the start of the current slot, so precision does not decay over a long run.

    Args:
        n: number of copies B (a multiple of ``params.cloud_group_size``).
        params: preset parameters, shared by all copies.
        autoreset: reset a finished copy inside ``step`` (same-step convention, as `paper`).
    """

    n_actions = N_ACTIONS

    def __init__(self, n: int, params: MecParams | None = None, autoreset: bool = True) -> None:
        check_range("n_envs", n, low=1, integer=True)
        self.params = p = params or MecParams()
        if n % p.cloud_group_size:
            raise ConfigError(
                f"n_envs={n} copies cannot form clouds of cloud_group_size={p.cloud_group_size}"
            )
        self.n = n
        # the observed hidden columns, found once (the observation is built every step)
        self.hidden_columns = p.hidden_observed
        self.obs_dim = MecObs.DIM + int(p.observe_cloud_speed) + len(self.hidden_columns)
        self.n_groups = n // p.cloud_group_size
        self.group = np.arange(n) % self.n_groups
        self.autoreset = autoreset
        self.action_space: gym.Space[Any] = (
            gym.spaces.Discrete(N_ACTIONS)
            if p.action_mode == "discrete"
            else gym.spaces.Tuple(
                (gym.spaces.Discrete(N_ACTIONS), gym.spaces.Box(0.0, 1.0, (1,), np.float32))
            )
        )
        self.reward_space = gym.spaces.Box(-np.inf, 0.0, (len(OBJECTIVES),), np.float64)
        # per copy (per cloud group for the capacity), so that one core can step several cells
        self.velocity = np.full(n, float(p.velocity))
        self.distance = np.full(n, float(p.distance))
        self.cloud_ghz = np.full(self.n_groups, float(p.cloud_ghz))
        self.rho_s = np.full(n, shadowing_correlation(p.velocity))
        p_block, p_clear = blockage_probabilities(p.velocity)
        self.p_block, self.p_clear = np.full(n, p_block), np.full(n, p_clear)
        self.streams = BatchedStreams(n)
        m = p.max_tasks
        self.stage = np.zeros((n, m), dtype=np.int8)
        self.seq = np.zeros((n, m), dtype=np.int64)
        self.next_seq = np.zeros(n, dtype=np.int64)
        self.t_arrival = np.zeros((n, m))
        self.deadline = np.zeros((n, m))
        self.tau = np.ones((n, m))
        self.bits = np.zeros((n, m))
        self.cycles = np.zeros((n, m))
        self.work = np.zeros((n, m))  # cycles (local, cloud) or bits (transmit) left
        self.f_hz = np.ones((n, m))
        self.p_w = np.zeros((n, m))
        self.energy = np.zeros((n, m))
        self.tx_time = np.zeros((n, m))
        self.t_ready = np.zeros((n, m))
        self.t_cloud = np.zeros((n, m))
        self.battery = np.zeros(n)
        self.shadowing = np.zeros(n)
        self.blocked = np.zeros(n, dtype=bool)
        self.load = np.zeros(self.n_groups, dtype=np.int64)  # index into LOAD_LEVELS
        self.cloud_busy_s = np.zeros(self.n_groups)  # time each cloud served at least one task
        self.pending = np.zeros(n, dtype=bool)
        self.task_bits = np.zeros(n)
        self.task_density = np.zeros(n)
        self.task_tau = np.zeros(n)
        self.slots_left = np.zeros(n, dtype=np.int64)
        self.last_rate = np.zeros(n)
        self.last_rate_age = np.zeros(n)
        self.last_cloud_time = np.zeros(n)
        self.last_cloud_speed = np.zeros(n)
        self.last_cloud_age = np.zeros(n)
        self.last_outcome = np.zeros((n, 3), dtype=np.float32)
        self._started = False

    def place_in_cells(self, velocity: np.ndarray, distance: np.ndarray, cloud_ghz: np.ndarray) -> None:
        """Put copy ``i`` in the cell ``(velocity[i] km/h, distance[i] m, cloud_ghz[i] GHz)``,
        each (B,); the copies of one cloud group must share a cloud capacity. Call before
        ``reset``. One core then steps copies of several cells in one batch (an evaluation over
        many cells), each exactly as a core of its own cell would."""
        cells = {"velocity": velocity, "distance": distance, "cloud_ghz": cloud_ghz}
        for name, values in cells.items():
            cells[name] = values = np.asarray(values, dtype=np.float64)
            if values.shape != (self.n,):
                raise ValueError(f"{name} must have shape ({self.n},), got {values.shape}")
            for value in np.unique(values):  # MecParams names a value out of range
                fields: dict[str, Any] = {name: float(value)}
                dataclasses.replace(self.params, **fields)
        velocity, distance, cloud_ghz = cells["velocity"], cells["distance"], cells["cloud_ghz"]
        group_ghz = cloud_ghz[: self.n_groups]  # copy g is the first member of group g
        if not np.array_equal(cloud_ghz, group_ghz[self.group]):
            raise ConfigError("the copies of a cloud group must share one cloud_ghz")
        self.velocity, self.distance, self.cloud_ghz = velocity, distance, group_ghz.copy()
        # the scalar formulas per distinct velocity: each copy gets its own cell's exact values
        by_velocity = {v: (shadowing_correlation(v), *blockage_probabilities(v)) for v in np.unique(velocity)}
        self.rho_s, self.p_block, self.p_clear = (
            np.array([by_velocity[v][k] for v in velocity]) for k in range(3)
        )

    # -- episode boundaries -------------------------------------------------------------------

    def reset(self, seed: int | None = None, copy_indices: np.ndarray | None = None) -> np.ndarray:
        """Start a new episode in every copy (same seeding rules as `paper`); returns (B, 17)."""
        if self.streams.reset_rule(seed, copy_indices):
            # a seeded start draws each cloud's load level from its first copy (copy g); an
            # unseeded reset continues the chain, as an auto-reset inside step() does
            u = self.streams.uniform(1)
            self.load = np.minimum(
                (u[: self.n_groups, 0] * len(LOAD_LEVELS)).astype(np.int64), len(LOAD_LEVELS) - 1
            )
        self._reset_rows(np.arange(self.n))
        self._started = True
        return self._observe()

    def _reset_rows(self, rows: np.ndarray) -> None:
        """Flush the copies ``rows`` (tasks in flight are cut off, unrewarded) and start anew."""
        self.stage[rows] = FREE
        self.battery[rows] = self.params.battery_j
        self.slots_left[rows] = self.params.horizon
        self.last_rate[rows] = 0.0
        self.last_rate_age[rows] = self.params.horizon
        self.last_cloud_time[rows] = 0.0
        self.last_cloud_speed[rows] = 0.0
        self.last_cloud_age[rows] = self.params.horizon
        self.last_outcome[rows] = 0.0
        u = self.streams.uniform(DRAWS_PER_SLOT, rows)
        self.shadowing[rows] = SHADOWING_SIGMA_DB * _normal(u[:, 4], u[:, 5])
        block, clear = self.p_block[rows], self.p_clear[rows]
        p_nlos = np.divide(block, block + clear, out=np.zeros(rows.size), where=block > 0)
        self.blocked[rows] = u[:, 6] < p_nlos  # the blockage chain's stationary law
        self._draw_tasks(rows, u)

    def _draw_tasks(self, rows: np.ndarray, u: np.ndarray) -> None:
        self.pending[rows] = u[:, 0] < self.params.p_arrival
        self.task_bits[rows] = D_RANGE_BITS[0] + u[:, 1] * (D_RANGE_BITS[1] - D_RANGE_BITS[0])
        self.task_density[rows] = C_RANGE[0] + u[:, 2] * (C_RANGE[1] - C_RANGE[0])
        self.task_tau[rows] = TAU_RANGE_S[0] + u[:, 3] * (TAU_RANGE_S[1] - TAU_RANGE_S[0])

    # -- dynamics -----------------------------------------------------------------------------

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Apply one action per copy and run one slot of simulated time.

        Args:
            actions: (B,) ints in {0, 1, 2} (discrete), or a tuple of those and (B, 1) floats in
                [0, 1] (hybrid: ``f_loc`` for LOCAL, transmit power for OFFLOAD).

        Returns:
            obs (B, 17) float32; reward (B,) float32 (scalar) or (B, 4) float32 (vector,
            ``OBJECTIVES``); terminated (battery empty) and truncated (horizon) (B,) bool; info
            with ``components`` (B, 4) (the step's costs per objective, unweighted),
            ``finished`` (the tasks whose outcome became known: copy, outcome index into
            ``OUTCOMES``, latency s, energy J, each (F,)), ``cut`` (B,) tasks in flight when an
            episode ended, and ``final_obs`` when a copy finished and autoreset is on.
        """
        choice, knob = self._check_actions(actions)
        p = self.params
        costs = np.zeros((self.n, len(OBJECTIVES)))
        finished: list[tuple[np.ndarray, ...]] = []

        # 1. the pending task is placed, discarded, or (no free row) dropped at once
        if knob is None:
            f_loc, p_dbm = np.full(self.n, p.f_loc_ghz * 1e9), np.full(self.n, P_TX_RANGE_DBM[1])
        else:
            f_loc = F_LOC_RANGE_HZ[0] + knob * (F_LOC_RANGE_HZ[1] - F_LOC_RANGE_HZ[0])
            p_dbm = P_TX_RANGE_DBM[0] + knob * (P_TX_RANGE_DBM[1] - P_TX_RANGE_DBM[0])
        self._admit(choice, f_loc, dbm_to_w(p_dbm), costs, finished)

        # 2. one slot of queues, uploads, backhaul, cloud and deadlines in continuous time
        spent = self._run_slot(costs, finished)
        self.battery -= spent

        # 3. the exogenous world moves on: channel, load, the next task
        u = self.streams.uniform(DRAWS_PER_SLOT)
        self.shadowing = self.rho_s * self.shadowing + np.sqrt(
            1 - self.rho_s**2
        ) * SHADOWING_SIGMA_DB * _normal(u[:, 4], u[:, 5])
        self.blocked = np.where(self.blocked, u[:, 6] >= self.p_clear, u[:, 6] < self.p_block)
        leader = u[: self.n_groups]
        move = leader[:, 7] >= LOAD_STAY
        other = (self.load + 1 + (leader[:, 8] * 2).astype(np.int64)) % len(LOAD_LEVELS)
        self.load = np.where(move, other, self.load)
        self._draw_tasks(np.arange(self.n), u)
        self._shift_clock()
        self.last_rate_age += 1
        self.last_cloud_age += 1
        self.slots_left -= 1
        terminated = self.battery <= 0
        truncated = (self.slots_left == 0) & ~terminated

        obs = self._observe()
        cut = np.zeros(self.n, dtype=np.int64)
        info: dict[str, Any] = {"components": costs, "finished": _stack_finished(finished), "cut": cut}
        done = terminated | truncated
        if done.any():
            done_rows = np.flatnonzero(done)
            cut[done_rows] = (self.stage[done_rows] != FREE).sum(axis=1)
            if self.autoreset:
                info["final_obs"] = obs
                self._reset_rows(done_rows)
                obs = self._observe()
            else:
                self.stage[done_rows] = FREE
        reward = -costs if p.reward_mode == "vector" else -(costs @ p.weights)
        return obs, reward.astype(np.float32), terminated, truncated, info

    def _check_actions(self, actions: Any) -> tuple[np.ndarray, np.ndarray | None]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        if not self.autoreset and ((self.slots_left == 0) | (self.battery <= 0)).any():
            raise RuntimeError("a copy's episode has ended: call reset() before step()")
        knob = None
        if self.params.action_mode == "hybrid":
            if not (isinstance(actions, tuple) and len(actions) == 2):
                raise ValueError("hybrid actions must be a tuple (choices (B,), values (B, 1) in [0, 1])")
            actions, values = actions
            knob = np.asarray(values, dtype=np.float64).reshape(-1)
            if knob.shape != (self.n,) or not np.isfinite(knob).all() or knob.min() < 0 or knob.max() > 1:
                raise ValueError(f"hybrid values must be {self.n} numbers in [0, 1], got {knob.tolist()}")
        a = np.asarray(actions)
        if a.shape != (self.n,):
            raise ValueError(f"actions must have shape ({self.n},), got {a.shape}")
        if a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= N_ACTIONS:
            raise ValueError(f"actions must be integers in {{0, 1, 2}}, got {a.tolist()}")
        return a, knob

    def _admit(
        self,
        choice: np.ndarray,
        f_loc: np.ndarray,
        p_w: np.ndarray,
        costs: np.ndarray,
        finished: list[tuple[np.ndarray, ...]],
    ) -> None:
        pending = self.pending
        self._conclude(np.flatnonzero(pending & (choice == DISCARD)), DISCARDED, costs, finished)
        place = pending & (choice != DISCARD)
        free = self.stage == FREE
        slot = free.argmax(axis=1)
        full = place & ~free.any(axis=1)
        # no row free: the task is dropped on arrival (latency 0, no energy)
        self._conclude(np.flatnonzero(full), DROPPED, costs, finished)
        rows = np.flatnonzero(place & ~full)
        if not rows.size:
            return
        cols = slot[rows]
        local = choice[rows] == LOCAL
        cycles = self.task_bits[rows] * self.task_density[rows]
        self.stage[rows, cols] = np.where(local, IN_LOCAL, IN_TX)
        self.seq[rows, cols] = self.next_seq[rows]
        self.next_seq[rows] += 1
        self.t_arrival[rows, cols] = 0.0
        self.deadline[rows, cols] = self.task_tau[rows]
        self.tau[rows, cols] = self.task_tau[rows]
        self.bits[rows, cols] = self.task_bits[rows]
        self.cycles[rows, cols] = cycles
        self.work[rows, cols] = np.where(local, cycles, self.task_bits[rows])
        self.f_hz[rows, cols] = f_loc[rows]
        self.p_w[rows, cols] = p_w[rows]
        self.energy[rows, cols] = 0.0
        self.tx_time[rows, cols] = 0.0

    def _run_slot(self, costs: np.ndarray, finished: list[tuple[np.ndarray, ...]]) -> np.ndarray:
        """Simulate ``[0, dt)`` event by event, each cloud group on its own clock; returns the
        (B,) energy spent."""
        p = self.params
        b = np.arange(self.n)
        rate = link_rate(
            sinr(
                10 * np.log10(np.maximum(self.p_w, 1e-30)) + 30,
                self.distance[:, None],
                self.shadowing[:, None],
                self.blocked[:, None],
                self.velocity[:, None],
            )
        )
        capacity = self.cloud_ghz * 1e9 * (1.0 - LOAD_LEVELS[self.load])
        clock = np.zeros(self.n_groups)
        spent = np.zeros(self.n)
        max_events = 4 * p.max_tasks * p.cloud_group_size + 8
        for _ in range(max_events):
            active = clock < SLOT_S - _EPS
            if not active.any():
                return spent
            now = clock[self.group]
            local_rows, tx_rows = self.stage == IN_LOCAL, self.stage == IN_TX
            has_local, has_tx = local_rows.any(axis=1), tx_rows.any(axis=1)
            lh = np.where(local_rows, self.seq, np.iinfo(np.int64).max).argmin(axis=1)
            th = np.where(tx_rows, self.seq, np.iinfo(np.int64).max).argmin(axis=1)
            f_head, r_head = self.f_hz[b, lh], rate[b, th]
            in_cloud = self.stage == IN_CLOUD
            n_cloud = np.bincount(self.group, weights=in_cloud.sum(axis=1), minlength=self.n_groups)
            min_cloud_work = np.full(self.n_groups, np.inf)
            np.minimum.at(min_cloud_work, self.group, _table_min(self.work, in_cloud))
            share = np.divide(capacity, n_cloud, out=np.zeros(self.n_groups), where=n_cloud > 0)
            in_flight = self.stage != FREE
            copy_next = np.minimum.reduce(
                [
                    np.where(has_local, now + self.work[b, lh] / f_head, np.inf),
                    now + np.divide(self.work[b, th], r_head, out=np.full(self.n, np.inf), where=has_tx),
                    _table_min(self.t_ready, self.stage == IN_BACKHAUL),
                    _table_min(self.deadline, in_flight),
                ]
            )
            group_next = np.full(self.n_groups, SLOT_S)
            np.minimum.at(group_next, self.group, copy_next)
            cloud_next = np.divide(min_cloud_work, share, out=np.full(self.n_groups, np.inf), where=share > 0)
            group_next = np.where(active, np.minimum(group_next, clock + cloud_next), clock)
            group_next = np.maximum(group_next, clock)
            delta = (group_next - clock)[self.group]

            # advance the heads of the FIFO queues and every task in the cloud
            cycles = np.where(has_local, np.minimum(f_head * delta, self.work[b, lh]), 0.0)
            self.work[b, lh] -= cycles
            compute = compute_energy(f_head, cycles)
            self.energy[b, lh] += compute
            spent += compute
            sent = np.where(has_tx, delta, 0.0)
            self.work[b, th] -= np.minimum(r_head * sent, self.work[b, th])
            self.energy[b, th] += self.p_w[b, th] * sent
            self.tx_time[b, th] += sent
            spent += self.p_w[b, th] * sent
            self.work -= np.where(in_cloud, (share[self.group] * delta)[:, None], 0.0)
            self.cloud_busy_s += np.where(n_cloud > 0, group_next - clock, 0.0)
            clock = group_next
            self._events(clock[self.group], costs, finished)
        raise RuntimeError(f"mec slot did not finish within {max_events} events (a bug: please report)")

    def _events(self, now: np.ndarray, costs: np.ndarray, finished: list[tuple[np.ndarray, ...]]) -> None:
        """Everything that happens at each copy's time ``now``: completions, uploads, arrivals
        at the cloud, and deadlines (a task completing at its deadline completes)."""
        t = now[:, None]
        work_done = self.work <= np.where(self.stage == IN_TX, 1e-3, 1.0)  # bits / cycles of slack
        completed = (
            ((self.stage == IN_LOCAL) | (self.stage == IN_CLOUD)) & work_done & (t <= self.deadline + 1e-9)
        )
        if completed.any():
            r, c = np.nonzero(completed)
            from_cloud = self.stage[r, c] == IN_CLOUD
            self.last_cloud_time[r[from_cloud]] = (
                now[r[from_cloud]] - self.t_cloud[r[from_cloud], c[from_cloud]]
            )
            self.last_cloud_age[r[from_cloud]] = 0.0
            self.last_cloud_speed[r[from_cloud]] = self.cycles[r[from_cloud], c[from_cloud]] / np.maximum(
                self.last_cloud_time[r[from_cloud]], _EPS
            )
            self._conclude_rows(completed, COMPLETED, now, costs, finished)
        uploaded = (self.stage == IN_TX) & work_done
        if uploaded.any():
            r, c = np.nonzero(uploaded)
            self.last_rate[r] = self.bits[r, c] / np.maximum(self.tx_time[r, c], _EPS)
            self.last_rate_age[r] = 0.0
            self.stage[uploaded] = IN_BACKHAUL
            self.t_ready[r, c] = now[r] + BACKHAUL_S
        at_cloud = (self.stage == IN_BACKHAUL) & (self.t_ready <= t + _EPS)
        if at_cloud.any():
            r, c = np.nonzero(at_cloud)
            self.stage[at_cloud] = IN_CLOUD
            self.work[r, c] = self.cycles[r, c]
            self.t_cloud[r, c] = now[r]
        expired = (self.stage != FREE) & (self.deadline <= t + _EPS)
        if expired.any():
            self._conclude_rows(expired, DROPPED, now, costs, finished)

    def _conclude_rows(
        self,
        mask: np.ndarray,
        outcome: int,
        now: np.ndarray,
        costs: np.ndarray,
        finished: list[tuple[np.ndarray, ...]],
    ) -> None:
        """Conclude the table rows ``mask`` (B, M) at each copy's time ``now`` and free them."""
        r, c = np.nonzero(mask)
        latency = now[r] - self.t_arrival[r, c]
        self._conclude(r, outcome, costs, finished, latency, self.energy[r, c], self.tau[r, c])
        self.stage[mask] = FREE

    def _conclude(
        self,
        rows: np.ndarray,
        outcome: int,
        costs: np.ndarray,
        finished: list[tuple[np.ndarray, ...]],
        latency: np.ndarray | None = None,
        energy: np.ndarray | None = None,
        tau: np.ndarray | None = None,
    ) -> None:
        """Book the outcome of one task per entry of ``rows`` (a copy may repeat): its cost
        components, the copy's last-outcome flags and the finished-task record. Without
        ``latency`` and ``energy`` the task ended on arrival (0 s, 0 J)."""
        if not rows.size:
            return
        latency = np.zeros(rows.size) if latency is None else latency
        energy = np.zeros(rows.size) if energy is None else energy
        if tau is not None:
            np.add.at(costs[:, 0], rows, latency / tau)
        np.add.at(costs[:, 1], rows, energy / self.params.e_ref)
        if outcome == DROPPED:
            np.add.at(costs[:, 2], rows, 1.0)
        elif outcome == DISCARDED:
            np.add.at(costs[:, 3], rows, 1.0)
        self.last_outcome[rows] = np.eye(len(OUTCOMES), dtype=np.float32)[outcome]
        finished.append((rows, np.full(rows.size, outcome), latency, energy))

    def _shift_clock(self) -> None:
        """Times are relative to the slot start: move them back by one slot."""
        for times in (self.t_arrival, self.deadline, self.t_ready, self.t_cloud):
            times -= SLOT_S

    # -- views --------------------------------------------------------------------------------

    def _observe(self) -> np.ndarray:
        p = self.params
        obs = np.zeros((self.n, self.obs_dim), dtype=np.float32)
        local_s = np.where(self.stage == IN_LOCAL, self.work / self.f_hz, 0.0).sum(axis=1)
        tx_bits = np.where(self.stage == IN_TX, self.work, 0.0).sum(axis=1)
        obs[:, MecObs.LOCAL_BACKLOG] = np.minimum(local_s / LOCAL_BACKLOG_NORM_S, 1.0)
        obs[:, MecObs.TX_BACKLOG] = np.minimum(tx_bits / TX_BACKLOG_NORM_BITS, 1.0)
        obs[:, MecObs.TASK_PENDING] = self.pending
        pending = self.pending
        obs[:, MecObs.TASK_BITS] = (
            pending * (self.task_bits - D_RANGE_BITS[0]) / (D_RANGE_BITS[1] - D_RANGE_BITS[0])
        )
        obs[:, MecObs.TASK_DENSITY] = pending * (self.task_density - C_RANGE[0]) / (C_RANGE[1] - C_RANGE[0])
        obs[:, MecObs.TASK_DEADLINE] = (
            pending * (self.task_tau - TAU_RANGE_S[0]) / (TAU_RANGE_S[1] - TAU_RANGE_S[0])
        )
        obs[:, MecObs.BATTERY] = np.clip(self.battery / p.battery_j, 0.0, 1.0)
        obs[:, MecObs.LAST_RATE] = np.minimum(self.last_rate / RATE_NORM, 1.0)
        obs[:, MecObs.LAST_RATE_AGE] = np.minimum(self.last_rate_age / p.horizon, 1.0)
        obs[:, MecObs.LAST_CLOUD_TIME] = np.minimum(self.last_cloud_time / CLOUD_TIME_NORM_S, 1.0)
        obs[:, MecObs.LAST_CLOUD_AGE] = np.minimum(self.last_cloud_age / p.horizon, 1.0)
        obs[:, MecObs.LAST_COMPLETED : MecObs.LAST_DISCARDED + 1] = self.last_outcome
        obs[:, MecObs.VELOCITY] = self.velocity / V_MAX_KMH
        obs[:, MecObs.DISTANCE] = np.minimum(self.distance / DISTANCE_NORM_M, 1.0)
        obs[:, MecObs.SLOTS_LEFT] = self.slots_left / p.horizon
        if p.observe_cloud_speed:
            obs[:, MecObs.LAST_CLOUD_SPEED] = np.minimum(self.last_cloud_speed / CLOUD_SPEED_NORM_HZ, 1.0)
        if self.hidden_columns:
            obs[:, MecObs.DIM + int(p.observe_cloud_speed) :] = self.hidden_features()[:, self.hidden_columns]
        return obs

    hidden_dim = MecObs.DIM_WITH_HIDDEN - MecObs.DIM

    def hidden_features(self) -> np.ndarray:
        """(B, 4) float32 in [0, 1]: the hidden state (``MecObs.HIDDEN``): shadowing, blockage,
        the cloud's background load and the tasks in service on the copy's cloud. Observed with
        ``observe_hidden`` (a privileged baseline); else read by a privileged critic only."""
        hidden = self.privileged()
        return np.stack(
            [
                np.clip((hidden["shadowing_db"] / SHADOWING_SIGMA_DB + 3.0) / 6.0, 0.0, 1.0),
                hidden["blocked"],
                hidden["load"],
                np.minimum(hidden["cloud_tasks"] / 10.0, 1.0),
            ],
            axis=1,
        ).astype(np.float32)

    def lookahead_costs(self, continuation: Callable[[np.ndarray, Any], Any] | None = None) -> np.ndarray:
        """(B, 3) the realised cost of LOCAL, OFFLOAD and DISCARD for each copy's pending task,
        by exact look-ahead on copies of this core (privileged: it sees every future draw).

        Per option, a deep copy (its random streams included) takes that option for the copy's
        pending task, at the default frequency and full power, and then follows
        ``continuation(obs, hidden state) -> actions`` (default: discard every task) for every
        later task and for the tasks of its cloud mates. The cost of the option is the weighted
        cost of the copy's whole cloud group (an offload slows its mates' cloud tasks) over the
        slots until the longest deadline has passed, while each episode lasts. The exogenous
        draws do not depend on the actions, so each copy meets the channel, load and tasks this
        core will meet. With a continuation policy this is a rollout of that policy (one step
        of policy improvement on it). In a cloud group the members are looked ahead one at a
        time (Bertsekas' multi-agent rollout): earlier members take the option their look-ahead
        chose, later ones act by the continuation.
        """
        members = np.arange(self.n) // self.n_groups  # copy i is member i // G of group i % G
        decided = self._continue(continuation, self, self._observe())
        costs = np.zeros((self.n, N_ACTIONS))
        for member in range(self.params.cloud_group_size):
            mine = members == member
            for option in (LOCAL, OFFLOAD, DISCARD):
                own = self._lookahead(np.where(mine, option, decided), continuation)
                # the group's cost: an offload slows its mates' cloud tasks (processor sharing)
                costs[mine, option] = np.bincount(self.group, weights=own, minlength=self.n_groups)[
                    self.group
                ][mine]
            # later members are looked ahead beside this one's best option (multi-agent rollout)
            decided[mine] = costs[mine].argmin(axis=1)
        return costs

    def _continue(
        self, continuation: Callable[[np.ndarray, Any], Any] | None, core: MecCore, obs: np.ndarray
    ) -> np.ndarray:
        """(B,) the continuation's discrete choices on ``core`` (DISCARD without one)."""
        if continuation is None:
            return np.full(core.n, DISCARD, dtype=np.int64)
        actions = continuation(obs, core.privileged())
        return np.asarray(actions[0] if isinstance(actions, tuple) else actions, dtype=np.int64)

    def _lookahead(
        self, choice: np.ndarray, continuation: Callable[[np.ndarray, Any], Any] | None
    ) -> np.ndarray:
        """(B,) weighted cost of each copy over the look-ahead of :meth:`lookahead_costs`, on a
        deep copy that takes ``choice`` now and then follows the continuation."""
        horizon = math.ceil(TAU_RANGE_S[1] / SLOT_S) + 1
        sim = copy.deepcopy(self)
        sim.autoreset = True
        total, running = np.zeros(self.n), np.ones(self.n, dtype=bool)
        for _ in range(horizon):
            obs, _, terminated, truncated, info = sim.step(default_knob_actions(choice, self.params))
            total += (info["components"] @ self.params.weights) * running
            running &= ~(terminated | truncated)
            if not running.any():
                break
            choice = self._continue(continuation, sim, obs)
        return total

    def privileged(self) -> dict[str, np.ndarray]:
        """Hidden state for the oracle only, each (B,): shadowing (dB), blockage, the cloud's
        background load, the upload rate at full power now, the tasks in service on the copy's
        cloud and that cloud's capacity now (Hz)."""
        full_power = sinr(P_TX_RANGE_DBM[1], self.distance, self.shadowing, self.blocked, self.velocity)
        in_cloud = np.bincount(
            self.group, weights=(self.stage == IN_CLOUD).sum(axis=1), minlength=self.n_groups
        )
        return {
            "shadowing_db": self.shadowing.copy(),
            "blocked": self.blocked.copy(),
            "load": LOAD_LEVELS[self.load][self.group],
            "rate": link_rate(full_power),
            "cloud_tasks": in_cloud[self.group],
            "cloud_hz": (self.cloud_ghz * 1e9 * (1.0 - LOAD_LEVELS[self.load]))[self.group],
        }


def default_knob_actions(choice: np.ndarray, params: MecParams) -> Any:
    """Discrete choices, or in hybrid mode (choices, values) acting at the default frequency
    ``params.f_loc_ghz`` and full transmit power."""
    if params.action_mode != "hybrid":
        return choice.astype(np.int64)
    f_value = (params.f_loc_ghz * 1e9 - F_LOC_RANGE_HZ[0]) / (F_LOC_RANGE_HZ[1] - F_LOC_RANGE_HZ[0])
    values = np.where(choice == LOCAL, f_value, 1.0).astype(np.float32)[:, None]
    return choice.astype(np.int64), values


def _normal(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normals from two uniforms in [0, 1) (Box-Muller)."""
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def _stack_finished(parts: list[tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    names = ("copy", "outcome", "latency", "energy")
    if not parts:
        return {
            "copy": np.zeros(0, np.int64),
            "outcome": np.zeros(0, np.int64),
            "latency": np.zeros(0),
            "energy": np.zeros(0),
        }
    return {name: np.concatenate([part[i] for part in parts]) for i, name in enumerate(names)}
