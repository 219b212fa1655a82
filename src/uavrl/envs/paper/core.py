"""Preset `paper`: the abstract task-offloading system of the A3C-for-UAV-offloading design.

A batched core steps ``B`` copies as NumPy arrays. Per step one task ``(C_q units, T_q steps)``
is pending; the action LOCAL / OFFLOAD / DISCARD applies to it. Local capacity and slots are
the agent's; cloud units come from a :class:`~uavrl.envs.cloud.CloudPool` that copies (and
processes) may share; the channel is a hidden Doppler-scaled two-state chain.
The specification is ``shared/docs/environment.md``, section "Preset `paper`".

Every step draws exactly three uniforms per copy (channel transition, task units, task time),
whatever the action, so the exogenous process of a seeded copy does not depend on the policy:
evaluations with the same seed use common random numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import gymnasium as gym
import numpy as np

from uavrl.envs.channel import stationary_good, step_channel, transition_probabilities
from uavrl.envs.cloud import CloudPool, PerCopyPools
from uavrl.envs.rng import BatchedStreams
from uavrl.errors import ConfigError, check_range, reject_unknown

LOCAL, OFFLOAD, DISCARD = 0, 1, 2
N_ACTIONS = 3
N_SLOTS = 20
MAX_TASK_UNITS = 200
MAX_TASK_TIME = 50
UNIT_NORM = 200.0
V_MAX = 120.0
REWARD_TIMINGS = ("completion", "admission")
# Marks a parameter added after runs were on record: at its default it is left out of a config's
# identity (its hash), so the records of those runs still match their configs.
HASH_NEUTRAL_PARAM = {"hash_neutral": True}
# what a policy observes: a trained model's parameters, kept when it is evaluated with others
OBSERVATION_PARAMS = ("observe_feasibility", "observe_payable")
# what the copies of one core share (the rest may differ per copy: PaperCore.concatenate)
SHARED_BY_MERGED_COPIES = (
    "cloud_capacity",
    "reward_scale",
    "episode_length",
    "reward_timing",
    *OBSERVATION_PARAMS,
)


class Obs:
    """Column layout of the 48-float observation (all in [0, 1]); with ``observe_feasibility``
    a 49th column, LOCAL_FEASIBLE; with ``observe_payable`` one more after it (:meth:`payable`)."""

    FREE_LOCAL = 0
    STEPS_LEFT = 1
    LOCAL_UNITS = slice(2, 2 + N_SLOTS)
    LOCAL_TIME = slice(2 + N_SLOTS, 2 + 2 * N_SLOTS)
    TASK_UNITS = 2 + 2 * N_SLOTS
    TASK_TIME = TASK_UNITS + 1
    FLAG_LOCAL = TASK_UNITS + 2
    FLAG_OFFLOAD = TASK_UNITS + 3
    VELOCITY = TASK_UNITS + 4
    LOCAL_CAPACITY = TASK_UNITS + 5
    DIM = TASK_UNITS + 6
    LOCAL_FEASIBLE = DIM  # 1 iff LOCAL would admit the pending task (observe_feasibility)
    DIM_WITH_FEASIBILITY = DIM + 1

    @staticmethod
    def payable(observe_feasibility: bool) -> int:
        """The PAYABLE column (``observe_payable``): right after LOCAL_FEASIBLE, or after the 48."""
        return Obs.DIM_WITH_FEASIBILITY if observe_feasibility else Obs.DIM


@dataclass(frozen=True)
class PaperParams:
    """Parameters of the `paper` preset; validated on construction.

    Attributes:
        velocity: UAV speed in km/h, [0, 120].
        local_capacity: C_l,max in units, [1, 200].
        cloud_capacity: pool size in units (>= 1); must equal the pool's capacity when a
            shared pool is attached.
        reward_scale: reward per completed unit (> 0).
        episode_length: steps per episode (>= 1).
        reward_timing: when a task's units are paid. ``completion`` (the spec): when it
            completes. ``admission``: when it is admitted, and the units still in flight are
            charged back when the episode ends. That is potential-based shaping (Ng, Harada and
            Russell, 1999) with the units in flight as potential, zero at both ends of an
            episode, so every episode's return is the same under both timings; only the credit
            comes sooner (a task's reward otherwise arrives up to 50 steps after its decision).
        observe_feasibility: append column ``Obs.LOCAL_FEASIBLE``: 1 iff LOCAL would admit the
            pending task now (a free local slot and enough free local units). The 48 columns
            already determine it; a learned policy otherwise spends samples learning the
            comparison, and tries LOCAL on tasks it cannot admit.
        observe_payable: append column ``Obs.payable(observe_feasibility)``: 1 iff the pending
            task, placed now, completes within the episode (``T_q <= E_r``) and so can pay. The
            48 columns determine it too; without it a learned policy keeps placing about a third
            of the tasks that cannot pay in the last 30 steps, holding capacity that payable
            tasks then miss.
    """

    velocity: float = 30.0
    local_capacity: int = 200
    cloud_capacity: int = 1000
    reward_scale: float = 0.05
    episode_length: int = 100
    reward_timing: str = "completion"
    observe_feasibility: bool = False
    observe_payable: bool = field(default=False, metadata=HASH_NEUTRAL_PARAM)

    def __post_init__(self) -> None:
        check_range("velocity", self.velocity, 0.0, V_MAX, "km/h")
        check_range("local_capacity", self.local_capacity, 1, MAX_TASK_UNITS, "units", integer=True)
        check_range("cloud_capacity", self.cloud_capacity, low=1, unit="units", integer=True)
        check_range("reward_scale", self.reward_scale, low=0.0)
        if self.reward_scale == 0:
            raise ConfigError(f"reward_scale must be > 0, got {self.reward_scale!r}")
        check_range("episode_length", self.episode_length, low=1, unit="steps", integer=True)
        if self.reward_timing not in REWARD_TIMINGS:
            raise ConfigError(
                f"reward_timing must be one of {list(REWARD_TIMINGS)}, got {self.reward_timing!r}"
            )
        for name in OBSERVATION_PARAMS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> PaperParams:
        """Build from keyword arguments, naming any unknown one."""
        reject_unknown(kwargs, {f.name for f in fields(cls)}, "preset 'paper'")
        return cls(**kwargs)


class PaperCore:
    """``B`` copies of the `paper` environment stepped together.

    Slots are stored side by side: columns ``[0, 20)`` are local slots, ``[20, 40)`` cloud slots.

    Args:
        n: number of copies B.
        params: preset parameters, shared by all copies.
        pool: cloud pool; default one private pool of ``params.cloud_capacity`` per copy.
        autoreset: reset a finished copy inside ``step`` (same-step convention: the returned
            observation starts the new episode; ``info["final_obs"]`` holds the last one).
    """

    n_actions = N_ACTIONS

    def __init__(
        self,
        n: int,
        params: PaperParams | None = None,
        pool: CloudPool | None = None,
        autoreset: bool = True,
    ) -> None:
        check_range("n_envs", n, low=1, integer=True)
        self.n = n
        self.params = params or PaperParams()
        owns_pool = pool is None
        if pool is None:
            pool = PerCopyPools(self.params.cloud_capacity, n)
        elif pool.capacity != self.params.cloud_capacity:
            raise ConfigError(
                f"cloud_capacity is {self.params.cloud_capacity} but the attached pool holds "
                f"{pool.capacity} units; they must agree"
            )
        self.pool = pool
        self.obs_dim = Obs.DIM + sum(bool(getattr(self.params, name)) for name in OBSERVATION_PARAMS)
        self.owns_pool = owns_pool  # its private pools: no other core can see them
        self.autoreset = autoreset
        self.action_space: gym.Space[Any] = gym.spaces.Discrete(N_ACTIONS)
        # per copy, so that one core can step copies of several cells (concatenate)
        self.velocity = np.full(n, float(self.params.velocity))
        self.local_capacity = np.full(n, self.params.local_capacity, dtype=np.int64)
        p01, p10 = transition_probabilities(self.params.velocity)
        self.p01 = np.full(n, p01)
        self.p10 = np.full(n, p10)
        self.p_good = np.full(n, stationary_good(p01, p10))
        self.streams = BatchedStreams(n)
        # what _observe divides each column by, in the order of Obs
        self._obs_divisors = np.array(
            [UNIT_NORM, self.params.episode_length]
            + [UNIT_NORM] * N_SLOTS
            + [MAX_TASK_TIME] * N_SLOTS
            + [UNIT_NORM, MAX_TASK_TIME, 1.0, 1.0, V_MAX, UNIT_NORM]
            + [1.0] * (self.obs_dim - Obs.DIM),
            dtype=np.float64,
        )

        self.slot_units = np.zeros((n, 2 * N_SLOTS), dtype=np.int64)
        self.slot_time = np.zeros((n, 2 * N_SLOTS), dtype=np.int64)
        self.free_local = np.zeros(n, dtype=np.int64)
        self.steps_left = np.zeros(n, dtype=np.int64)
        self.task_units = np.zeros(n, dtype=np.int64)
        self.task_time = np.zeros(n, dtype=np.int64)
        self.channel = np.zeros(n, dtype=np.int8)
        self.flag_local = np.zeros(n, dtype=np.float32)
        self.flag_offload = np.zeros(n, dtype=np.float32)
        # units x T_q of the task each copy placed on the cloud at its last step (0 if none)
        self.cloud_unit_steps = np.zeros(n, dtype=np.int64)
        self._started = False

    @staticmethod
    def can_concatenate(cores: Sequence[PaperCore]) -> bool:
        """Whether :meth:`concatenate` can merge ``cores``."""
        first = cores[0]
        return all(
            core.owns_pool
            and not core._started
            and core.autoreset == first.autoreset
            and all(getattr(core.params, f) == getattr(first.params, f) for f in SHARED_BY_MERGED_COPIES)
            for core in cores
        )

    @classmethod
    def concatenate(cls, cores: Sequence[PaperCore]) -> PaperCore:
        """One core stepping the copies of ``cores``, in their order, each with its velocity and
        local capacity. Every core must hold its own private pools (no copy sees another's) and
        share the rest of its parameters; the copies then follow exactly the trajectories they
        follow stepped core by core, at the cost of one call instead of one per core."""
        if not cls.can_concatenate(cores):
            raise ValueError(
                "only fresh cores with their own private pools, one autoreset and the same "
                f"{list(SHARED_BY_MERGED_COPIES)} merge"
            )
        first = cores[0]
        # its params are the first core's: their velocity and local capacity are per copy now
        merged = cls(sum(c.n for c in cores), first.params, autoreset=first.autoreset)
        merged.place_in_cells(
            np.concatenate([c.velocity for c in cores]), np.concatenate([c.local_capacity for c in cores])
        )
        return merged

    def place_in_cells(self, velocity: np.ndarray, local_capacity: np.ndarray) -> None:
        """Put copy ``i`` in the cell of ``velocity[i]`` (km/h, which sets its channel's
        transition probabilities) and ``local_capacity[i]`` (units), before the first reset.
        The copies keep one cloud pool capacity and every other parameter.

        Args:
            velocity: (B,) float km/h.
            local_capacity: (B,) int units.
        """
        if self._started:
            raise RuntimeError("place_in_cells must come before the first reset")
        velocity = np.asarray(velocity, dtype=np.float64)
        local_capacity = np.asarray(local_capacity, dtype=np.int64)
        if velocity.shape != (self.n,) or local_capacity.shape != (self.n,):
            raise ValueError(
                f"place_in_cells needs ({self.n},) velocities and local capacities, got "
                f"{velocity.shape} and {local_capacity.shape}"
            )
        for v, local in zip(velocity, local_capacity, strict=True):
            check_range("velocity", float(v), 0.0, V_MAX, "km/h")
            check_range("local_capacity", int(local), 1, MAX_TASK_UNITS, "units", integer=True)
        self.velocity = velocity.copy()
        self.local_capacity = local_capacity.copy()
        chains = [transition_probabilities(float(v)) for v in self.velocity]
        self.p01 = np.array([p01 for p01, _ in chains])
        self.p10 = np.array([p10 for _, p10 in chains])
        self.p_good = np.array([stationary_good(p01, p10) for p01, p10 in chains])

    # -- episode boundaries -------------------------------------------------------------------

    def reset(self, seed: int | None = None, copy_indices: np.ndarray | None = None) -> np.ndarray:
        """Start a new episode in every copy.

        Args:
            seed: keys copy ``i`` from ``(seed, copy_indices[i])``. ``None`` continues the
                current streams (or, before the first seeding, draws a seed from OS entropy
                and records it in ``self.streams.current_seed``).
            copy_indices: (B,) stream index of each copy; default ``arange(B)``.

        Returns:
            (B, obs_dim) float32 observations (48 columns, one more for each ``observe_*`` flag).
        """
        self.streams.reset_rule(seed, copy_indices)
        self._reset_rows(np.arange(self.n))
        self._started = True
        return self._observe()

    def _release(self, rows: np.ndarray) -> None:
        """Return every unit the copies ``rows`` hold: tasks in flight are lost, never leaked."""
        cloud = self.slot_units[rows, N_SLOTS:].sum(axis=1)
        give = np.zeros(self.n, dtype=np.int64)
        give[rows] = cloud
        self.pool.give(give)
        self.slot_units[rows] = 0
        self.slot_time[rows] = 0
        self.free_local[rows] = self.local_capacity[rows]

    def _reset_rows(self, rows: np.ndarray) -> None:
        self._release(rows)
        self.steps_left[rows] = self.params.episode_length
        self.flag_local[rows] = 0.0
        self.flag_offload[rows] = 0.0
        u = self.streams.uniform(3, rows)
        self.channel[rows] = u[:, 0] < self.p_good[rows]
        self.task_units[rows] = 1 + (u[:, 1] * MAX_TASK_UNITS).astype(np.int64)
        self.task_time[rows] = 1 + (u[:, 2] * MAX_TASK_TIME).astype(np.int64)

    # -- dynamics -----------------------------------------------------------------------------

    def step(
        self, actions: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Apply one action per copy.

        Args:
            actions: (B,) ints in {0 LOCAL, 1 OFFLOAD, 2 DISCARD}.

        Returns:
            obs (B, obs_dim) float32, reward (B,) float32, terminated (B,) bool, truncated (B,)
            bool, info with ``final_obs`` (B, obs_dim) when any copy finished and autoreset is on.
        """
        a = self._check_actions(actions)
        admission = self.params.reward_timing == "admission"
        held_before = self.slot_units.sum(axis=1) if admission else None
        self._place(a == LOCAL, a == OFFLOAD)
        paid_units = self._complete()

        u = self.streams.uniform(3)
        self.channel = step_channel(self.channel, u[:, 0], self.p01, self.p10)
        self.task_units = 1 + (u[:, 1] * MAX_TASK_UNITS).astype(np.int64)
        self.task_time = 1 + (u[:, 2] * MAX_TASK_TIME).astype(np.int64)
        self.steps_left -= 1
        terminated = self.steps_left == 0
        truncated = np.zeros(self.n, dtype=bool)

        obs = self._observe()
        info: dict[str, np.ndarray] = {}
        if terminated.any():
            done_rows = np.flatnonzero(terminated)
            if self.autoreset:
                info["final_obs"] = obs
                self._reset_rows(done_rows)
                obs = self._observe()
            else:
                self._release(done_rows)
        if held_before is not None:
            # + potential after - potential before; a finished copy holds nothing now
            paid_units = paid_units + self.slot_units.sum(axis=1) - held_before
        reward = paid_units * self.params.reward_scale
        return obs, reward.astype(np.float32), terminated, truncated, info

    def _check_actions(self, actions: np.ndarray) -> np.ndarray:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(actions)
        if a.shape != (self.n,):
            raise ValueError(f"actions must have shape ({self.n},), got {a.shape}")
        if a.dtype.kind not in "iu" or a.min() < 0 or a.max() >= N_ACTIONS:
            raise ValueError(f"actions must be integers in {{0, 1, 2}}, got {a.tolist()}")
        if not self.autoreset and (self.steps_left == 0).any():
            raise RuntimeError("a copy's episode has ended: call reset() before step()")
        return a

    def _place(self, want_local: np.ndarray, want_offload: np.ndarray) -> None:
        """Step 1 of the dynamics: admit the pending task locally or to the cloud."""
        units, duration = self.task_units, self.task_time
        free_local_slot = self.slot_units[:, :N_SLOTS] == 0
        ok_local = want_local & self._admits_locally(free_local_slot)
        rows = np.flatnonzero(ok_local)
        if rows.size:
            cols = free_local_slot[rows].argmax(axis=1)
            self.slot_units[rows, cols] = units[rows]
            self.slot_time[rows, cols] = duration[rows]
            self.free_local[rows] -= units[rows]

        free_cloud_slot = self.slot_units[:, N_SLOTS:] == 0
        candidates = want_offload & (self.channel == 1) & free_cloud_slot.any(axis=1)
        ok_offload = self.pool.take(units, candidates)
        self.cloud_unit_steps = units * duration * ok_offload
        rows = np.flatnonzero(ok_offload)
        if rows.size:
            cols = N_SLOTS + free_cloud_slot[rows].argmax(axis=1)
            self.slot_units[rows, cols] = units[rows]
            self.slot_time[rows, cols] = duration[rows]

        self.flag_local = np.where(want_local, ok_local, self.flag_local).astype(np.float32)
        self.flag_offload = np.where(want_offload, ok_offload, self.flag_offload).astype(np.float32)

    def _complete(self) -> np.ndarray:
        """Step 2: finish every task with one step left; returns (B,) completed units."""
        finishing = self.slot_time == 1
        done_units = self.slot_units * finishing
        local_back = done_units[:, :N_SLOTS].sum(axis=1)
        completed = done_units.sum(axis=1)
        self.free_local += local_back
        self.pool.give(completed - local_back)
        self.slot_units -= done_units
        np.maximum(self.slot_time - 1, 0, out=self.slot_time)
        return completed

    # -- views --------------------------------------------------------------------------------

    def _observe(self) -> np.ndarray:
        # one concatenation and one division (in float64, then to float32, as column by column
        # assignments would round): a dozen fewer NumPy calls per step, which dominate at small B
        columns: list[np.ndarray] = [
            self.free_local[:, None],
            self.steps_left[:, None],
            self.slot_units[:, :N_SLOTS],
            self.slot_time[:, :N_SLOTS],
            self.task_units[:, None],
            self.task_time[:, None],
            self.flag_local[:, None],
            self.flag_offload[:, None],
            self.velocity[:, None],
            self.local_capacity[:, None],
        ]
        if self.params.observe_feasibility:
            columns.append(self.local_feasible()[:, None])
        if self.params.observe_payable:
            columns.append((self.task_time <= self.steps_left)[:, None])
        raw = np.concatenate(columns, axis=1, dtype=np.float64)
        return (raw / self._obs_divisors).astype(np.float32)

    def local_feasible(self) -> np.ndarray:
        """(B,) bool: LOCAL would admit the pending task now."""
        return self._admits_locally(self.slot_units[:, :N_SLOTS] == 0)

    def _admits_locally(self, free_local_slot: np.ndarray) -> np.ndarray:
        """(B,) bool: a free local slot (``free_local_slot`` (B, 20)) and enough free local units
        for the pending task; what :meth:`_place` admits and the feasibility column shows."""
        return free_local_slot.any(axis=1) & (self.free_local >= self.task_units)

    def privileged(self) -> dict[str, np.ndarray]:
        """Hidden state for the oracle only: channel, pool level, free cloud slots, each (B,)."""
        return {
            "channel": self.channel.copy(),
            "pool_level": self.pool.levels(self.n),
            "free_cloud_slots": (self.slot_units[:, N_SLOTS:] == 0).sum(axis=1),
        }

    hidden_dim = 2 + 2 * N_SLOTS

    def hidden_features(self) -> np.ndarray:
        """(B, 42) float32 in [0, 1]: what the agent cannot observe, for a critic that sees more
        in training than the policy can on board: the channel (1 good), its pool's free units
        over the capacity, then its 20 cloud slots' units / 200 and steps to completion / 50."""
        columns: list[np.ndarray] = [
            self.channel[:, None],
            self.pool.levels(self.n)[:, None] / self.params.cloud_capacity,
            self.slot_units[:, N_SLOTS:] / UNIT_NORM,
            self.slot_time[:, N_SLOTS:] / MAX_TASK_TIME,
        ]
        return np.concatenate(columns, axis=1, dtype=np.float64).astype(np.float32)

    def held_cloud_units(self) -> np.ndarray:
        """(B,) cloud units each copy holds right now."""
        return self.slot_units[:, N_SLOTS:].sum(axis=1)

    def held_local_units(self) -> np.ndarray:
        """(B,) local units in the local slots of each copy."""
        return self.slot_units[:, :N_SLOTS].sum(axis=1)
