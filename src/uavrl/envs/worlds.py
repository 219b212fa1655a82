"""Evaluation worlds: N agents stepped together, alone or sharing a cloud pool.

A policy is judged in the world it trained in. Training with ``env.shared_pool`` puts copy ``j``
of every worker on cloud pool ``j``, so each pool serves N agents; training without it gives
every copy its own pool. A :class:`World` rebuilds either regime for evaluation:

- ``private``: each agent alone (one agent per world is the classic per-cell evaluation);
- ``shared``: episode ``j`` of every agent draws on one pool ``j`` (of the world's capacity), and
  the agents act on it in agent order within a step, as the batched core does.

Episode ``j`` of agent ``i`` uses the random stream ``(seed, i * AGENT_STRIDE + copies[j])``, so
agent 0 of a world sees exactly the streams of a one-agent world: a policy in a shared world of
one agent scores what it scores alone. A world's score per episode is the mean over its agents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from uavrl.envs.cloud import PerCopyPools
from uavrl.envs.episodes import PolicyFn, episode_returns
from uavrl.envs.presets import ENV_ID
from uavrl.envs.vector import VecEnv, concat_envs, make_vec_env
from uavrl.errors import ConfigError

Regime = Literal["shared", "private"]
REGIMES: tuple[Regime, ...] = ("shared", "private")
# Agents' stream indices lie this far apart: more than any copy index an evaluation uses.
AGENT_STRIDE = 1 << 40


def agent_streams(n_agents: int, base: np.ndarray) -> np.ndarray:
    """Stream indices of ``n_agents`` agents' copies ``base``, agent-major: agent ``i``'s copy
    ``j`` draws on ``i * AGENT_STRIDE + base[j]``; (n_agents * len(base),)."""
    return np.concatenate([i * AGENT_STRIDE + np.asarray(base) for i in range(n_agents)])


@dataclass(frozen=True)
class World:
    """N agents, agent ``i`` with env parameters ``agent_params[i]``.

    Attributes:
        name: the row label (a cell name, or ``train_world``).
        agent_params: per agent, the env parameters (preset, velocity, capacities...).
        shared: all agents' copy ``j`` share one cloud pool ``j`` (else every copy has its own).
    """

    name: str
    agent_params: tuple[dict[str, Any], ...]
    shared: bool

    def __post_init__(self) -> None:
        if not self.agent_params:
            raise ConfigError(f"world {self.name!r} needs at least one agent")
        if self.shared:
            capacities = {p.get("cloud_capacity", 1000) for p in self.agent_params}
            if len(capacities) != 1:
                raise ConfigError(
                    f"world {self.name!r}: agents sharing a pool need one cloud_capacity, "
                    f"got {sorted(capacities)}"
                )

    @property
    def n_agents(self) -> int:
        return len(self.agent_params)

    @property
    def regime(self) -> Regime:
        return "shared" if self.shared else "private"

    def make_env(self, episodes: int, env_id: str = ENV_ID) -> VecEnv:
        """``n_agents`` blocks of ``episodes`` copies, agent-major."""
        pool = None
        if self.shared:
            pool = PerCopyPools(int(self.agent_params[0].get("cloud_capacity", 1000)), episodes)
        parts = [make_vec_env(env_id, episodes, dict(p), pool) for p in self.agent_params]
        return concat_envs(parts)

    def copies(self, base: np.ndarray) -> np.ndarray:
        """Stream indices of every agent's copies, agent-major: (n_agents * len(base),)."""
        return agent_streams(self.n_agents, base)

    def episode_returns(
        self,
        policy: PolicyFn,
        seed: int,
        base: np.ndarray,
        privileged: bool = False,
        env_id: str = ENV_ID,
    ) -> np.ndarray:
        """(len(base),) returns per episode, each the mean over the world's agents.

        ``policy`` acts for every agent at once on the (n_agents * len(base), D) batch.
        """
        env = self.make_env(len(base), env_id)
        try:
            returns = episode_returns(policy, env, seed, self.copies(base), privileged=privileged)
        finally:
            env.close()
        return returns.reshape(self.n_agents, len(base)).mean(axis=0)


def cell_worlds(
    cells_params: Sequence[tuple[str, dict[str, Any]]], regime: Regime, n_agents: int
) -> list[World]:
    """One world per cell: one agent alone (private), or ``n_agents`` agents of that cell on one pool."""
    if regime == "private":
        return [World(name, (params,), shared=False) for name, params in cells_params]
    return [World(name, (params,) * n_agents, shared=True) for name, params in cells_params]


TRAIN_WORLD = "train_world"


def training_world(agent_params: Sequence[dict[str, Any]]) -> World:
    """The shared training world itself: agent ``i`` in worker ``i``'s cell, one pool per episode."""
    return World(TRAIN_WORLD, tuple(agent_params), shared=True)


class AgentTeam:
    """One policy per agent of a world: agent ``i``'s block of the batch goes to ``policies[i]``.

    The individual arm's N models act as the N agents of a shared world this way.
    """

    needs_privileged = False

    def __init__(self, policies: Sequence[Any], name: str) -> None:
        self.policies = list(policies)
        self.name = name

    def reset(self, n: int) -> None:
        block = n // len(self.policies)
        for p in self.policies:
            if hasattr(p, "reset"):
                p.reset(block)

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        blocks = np.split(obs, len(self.policies))
        return np.concatenate([np.asarray(p(b, None)) for p, b in zip(self.policies, blocks, strict=True)])
