"""The hindsight bound of preset `paper`: the best offline schedule of each episode.

The tasks ``(C_q, T_q)`` and the channel of a seeded `paper` copy do not depend on the actions
(every step draws the same three uniforms whatever is done), so once an episode's draws are known
the best any policy can do on it is an integer programme over which tasks to place where:

    maximise    scale / N * sum_{i,t} C_{i,t} (x^L_{i,t} + x^O_{i,t})
    subject to  x^L_{i,t} + x^O_{i,t} <= 1                     one choice per task
                x^O_{i,t} = 0 where Q_{i,t} = 0                  a bad channel drops an offload
                sum_{t in A_i(s)} C_{i,t} x^L_{i,t} <= L_i       local units, every agent i, step s
                sum_{t in A_i(s)} x^L_{i,t} <= 20                local slots
                sum_{t in A_i(s)} x^O_{i,t} <= 20                cloud slots
                sum_{i in pool} sum_{t in A_i(s)} C_{i,t} x^O_{i,t} <= P   cloud pool units

with ``A_i(s) = {t : t <= s <= t + T_{i,t} - 1}`` the tasks of agent ``i`` that hold their units
when step ``s`` places its task (a task placed at ``t`` completes in step ``t + T - 1``, after that
step's placement). A task with ``T_{i,t}`` above the steps left pays nothing and is left out. In a
shared world the N agents of an episode draw on one pool, and all of a step's takes precede its
completions, so the joint constraint is exact whatever the agents' order; in a private world the
programme splits into one per agent. Solved with HiGHS through :func:`scipy.optimize.milp`.

The result of a solve is its best schedule (replayed in the env, it scores exactly its objective)
and HiGHS's dual bound, which is an upper bound on every policy even when the time limit stops the
solver before optimality.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, sparse

from uavrl.envs.paper.core import DISCARD, LOCAL, N_SLOTS, OFFLOAD, PaperCore, PaperParams
from uavrl.envs.worlds import World
from uavrl.errors import ConfigError


@dataclass(frozen=True)
class EpisodeDraws:
    """The exogenous draws of one episode of every agent of a world, each (n_agents, H)."""

    task_units: np.ndarray
    task_time: np.ndarray
    channel: np.ndarray


@dataclass(frozen=True)
class EpisodeBound:
    """One episode's solve: ``bound`` >= every policy's return; ``schedule`` (n_agents, H) the
    best actions found, whose return is ``objective``; ``optimal`` when the two agree."""

    bound: float
    objective: float
    schedule: np.ndarray
    optimal: bool


def _paper_params(world: World) -> list[PaperParams]:
    params = []
    for p in world.agent_params:
        if p.get("preset", "paper") != "paper":
            raise ConfigError(f"the hindsight bound is built for preset 'paper', got {p.get('preset')!r}")
        params.append(PaperParams.from_kwargs(**{k: v for k, v in p.items() if k != "preset"}))
    if len({(q.episode_length, q.reward_scale, q.cloud_capacity) for q in params}) != 1:
        raise ConfigError("the agents of a world must share episode_length, reward_scale and cloud_capacity")
    return params


def episode_draws(world: World, seed: int, base: np.ndarray) -> list[EpisodeDraws]:
    """The draws of episodes ``base`` (stream indices, as :meth:`World.episode_returns` takes
    them), read from cores that DISCARD every task: the draws are the same under any policy."""
    params = _paper_params(world)
    copies = world.copies(np.asarray(base)).reshape(world.n_agents, len(base))
    length = params[0].episode_length
    shape = (world.n_agents, len(base), length)
    units, times = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    channel = np.zeros(shape, dtype=np.int8)
    for i, p in enumerate(params):
        core = PaperCore(len(base), p, autoreset=False)
        core.reset(seed, copies[i])
        discard = np.full(len(base), DISCARD, dtype=np.int64)
        for t in range(length):
            units[i, :, t], times[i, :, t], channel[i, :, t] = core.task_units, core.task_time, core.channel
            core.step(discard)
    return [EpisodeDraws(units[:, j], times[:, j], channel[:, j]) for j in range(len(base))]


def solve_episode(
    draws: EpisodeDraws,
    local_capacity: Sequence[int],
    cloud_capacity: int,
    shared: bool,
    reward_scale: float,
    time_limit: float = 60.0,
) -> EpisodeBound:
    """The integer programme of the module docstring for one episode; the objective is the mean
    return over the agents."""
    n_agents, length = draws.task_units.shape
    steps_left = length - np.arange(length)
    payable = draws.task_time <= steps_left  # (n_agents, H)
    # variables: agent-major, then step, then (LOCAL, OFFLOAD)
    n_vars = 2 * n_agents * length
    index = np.arange(n_vars).reshape(n_agents, length, 2)
    upper = np.repeat(payable[..., None], 2, axis=2).astype(float)
    upper[..., 1] *= draws.channel == 1
    value = np.repeat(draws.task_units[..., None], 2, axis=2).astype(float) * reward_scale / n_agents

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    data: list[np.ndarray] = []
    rhs: list[float] = []

    def add(row_vars: np.ndarray, coefficients: np.ndarray, bound: float) -> None:
        rows.append(np.full(row_vars.size, len(rhs)))
        cols.append(row_vars)
        data.append(coefficients.astype(float))
        rhs.append(float(bound))

    for i in range(n_agents):
        for t in range(length):
            add(index[i, t], np.ones(2), 1)
    for s in range(length):
        pool_vars, pool_units = [], []
        for i in range(n_agents):
            placed = np.arange(s + 1)
            active = placed[placed + draws.task_time[i, : s + 1] - 1 >= s]
            units = draws.task_units[i, active]
            add(index[i, active, 0], units, local_capacity[i])
            add(index[i, active, 0], np.ones(active.size), N_SLOTS)
            add(index[i, active, 1], np.ones(active.size), N_SLOTS)
            if shared:
                pool_vars.append(index[i, active, 1])
                pool_units.append(units)
            else:
                add(index[i, active, 1], units, cloud_capacity)
        if shared:
            add(np.concatenate(pool_vars), np.concatenate(pool_units), cloud_capacity)
    matrix = sparse.csr_array(
        (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(len(rhs), n_vars)
    )
    problem = {
        "bounds": optimize.Bounds(np.zeros(n_vars), upper.ravel()),
        "constraints": optimize.LinearConstraint(matrix, -np.inf, np.asarray(rhs)),
    }
    with _solver_output_discarded():
        result = optimize.milp(
            -value.ravel(), integrality=np.ones(n_vars), options={"time_limit": time_limit}, **problem
        )
    dual = getattr(result, "mip_dual_bound", None)
    if result.x is not None:
        chosen = np.rint(result.x)
    else:
        # no schedule within the time limit (a short limit, a busy machine): discarding every
        # task (x = 0) meets every limit, and the linear relaxation, solved in full, is a bound
        chosen = np.zeros(n_vars)
        with _solver_output_discarded():
            relaxed = optimize.milp(-value.ravel(), integrality=np.zeros(n_vars), **problem)
        if relaxed.x is None:
            raise RuntimeError(f"HiGHS solved neither the programme nor its relaxation: {relaxed.message}")
        dual = float(relaxed.fun)
    x = chosen.reshape(n_agents, length, 2).astype(bool)
    schedule = np.where(x[..., 0], LOCAL, np.where(x[..., 1], OFFLOAD, DISCARD))
    objective = float(value.ravel() @ chosen)
    bound = -float(dual) if dual is not None and np.isfinite(dual) else objective
    return EpisodeBound(max(bound, objective), objective, schedule, bool(result.status == 0))


@contextlib.contextmanager
def _solver_output_discarded() -> Iterator[None]:
    """HiGHS prints debugging lines straight to file descriptor 1 whatever its display option;
    they would interleave with a table on stdout. Descriptor 1 points at /dev/null meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def hindsight_bounds(
    world: World, seed: int, base: np.ndarray, time_limit: float = 60.0
) -> list[EpisodeBound]:
    """One :class:`EpisodeBound` per episode ``base`` of ``world`` (common random numbers with
    :meth:`World.episode_returns` on the same ``seed`` and ``base``)."""
    params = _paper_params(world)
    capacities = [p.local_capacity for p in params]
    return [
        solve_episode(
            draws, capacities, params[0].cloud_capacity, world.shared, params[0].reward_scale, time_limit
        )
        for draws in episode_draws(world, seed, base)
    ]


class SchedulePolicy:
    """Replays fixed schedules: copy ``k`` of the batch (agent-major, as a world orders its
    copies) takes ``schedules[k, t]`` at its step ``t``. Checks a bound's schedule in the env."""

    needs_privileged = False
    name = "hindsight_schedule"

    def __init__(self, schedules: np.ndarray) -> None:
        self.schedules = np.asarray(schedules, dtype=np.int64)
        self.t = 0

    def reset(self, n: int) -> None:
        if n != self.schedules.shape[0]:
            raise ValueError(f"{self.schedules.shape[0]} schedules for a batch of {n} copies")
        self.t = 0

    def __call__(self, obs: np.ndarray, privileged: Any) -> np.ndarray:
        actions = self.schedules[:, self.t]
        self.t += 1
        return actions


def world_schedules(bounds: Sequence[EpisodeBound]) -> np.ndarray:
    """The schedules of a world's episodes in its copy order (agent-major): (n_agents * E, H)."""
    stacked = np.stack([b.schedule for b in bounds], axis=1)  # (n_agents, E, H)
    return stacked.reshape(-1, stacked.shape[-1])
