"""One batched interface over our cores and any Gymnasium environment.

``VecEnv``: ``n`` copies, ``reset(seed, copy_indices)`` -> obs (n, D) float32, ``step(actions)`` ->
:class:`VecStep`. Auto-reset follows the same-step convention: a finished copy's observation is
the first of its next episode and ``final_obs`` holds the last one (rows of unfinished copies are
unspecified). ``reset(seed, copy_indices)`` seeds copy ``j`` from ``(seed, copy_indices[j])``, so
workers using disjoint index ranges of one run seed never share a random stream, and policies
evaluated on the same indices share theirs (common random numbers).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

from uavrl.envs.cloud import CloudPool
from uavrl.envs.paper.core import PaperCore
from uavrl.envs.presets import ENV_ID, Core, make_core
from uavrl.envs.rng import stream_key
from uavrl.envs.spaces import observation_encoder
from uavrl.errors import ConfigError


@dataclass
class VecStep:
    """What one batched step returns; arrays have leading dimension n."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray | None


class VecEnv(Protocol):
    n: int
    obs_dim: int
    action_space: gym.Space[Any]

    def reset(self, seed: int, copy_indices: np.ndarray) -> np.ndarray: ...

    def step(self, actions: Any) -> VecStep: ...

    def close(self) -> None: ...


class CoreVecEnv:
    """A uavrl batched core (no Python loop over copies)."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.n = core.n
        self.obs_dim = core.obs_dim
        self.action_space: gym.Space[Any] = core.action_space

    def reset(self, seed: int, copy_indices: np.ndarray) -> np.ndarray:
        return self.core.reset(seed=seed, copy_indices=copy_indices)

    def step(self, actions: Any) -> VecStep:
        obs, reward, terminated, truncated, info = self.core.step(
            actions if isinstance(actions, tuple) else np.asarray(actions)
        )
        return VecStep(obs, reward, terminated, truncated, info.get("final_obs"))

    def privileged(self) -> dict[str, np.ndarray]:
        return self.core.privileged()

    def hidden_features(self) -> np.ndarray:
        """(n, G) hidden state of each copy for a privileged critic (the core's)."""
        return self.core.hidden_features()

    def cloud_unit_steps(self) -> np.ndarray:
        """(n,) units x T_q of the task each copy placed on the cloud at the last step."""
        return _cloud_unit_steps(self.core)

    def close(self) -> None:
        """Nothing to release: the core holds no OS resources."""


def env_maker(env_id: str, kwargs: dict[str, Any]) -> Callable[[], gym.Env[Any, Any]]:
    """What makes one copy of ``env_id`` with ``kwargs``: a Gymnasium id (``"CartPole-v1"``, or
    ``"my_pkg.envs:MyEnv-v0"``, whose module registers it when imported) through
    ``gymnasium.make``, or else the import path of a callable that returns one env
    (``"my_pkg.envs:make_env"``: a function or an env class), called with ``kwargs``, so an env
    that needs constructor arguments or wrappers is made as its author makes it. A name that
    Gymnasium knows once its module is imported is taken as an id."""
    module_name, sep, name = env_id.partition(":")
    if not sep:
        return lambda: gym.make(env_id, **kwargs)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"env.id {env_id!r} could not be made: {type(err).__name__}: {err}") from None
    if name in gym.registry:
        return lambda: gym.make(name, **kwargs)
    target = attribute_path(module, name)
    if not callable(target):
        raise ConfigError(
            f"env.id {env_id!r}: {module_name} neither registers a Gymnasium id {name!r} nor defines "
            "a callable of that name that makes an env"
        )

    def make() -> gym.Env[Any, Any]:
        env = target(**kwargs)
        if not isinstance(env, gym.Env):
            raise ConfigError(f"env.id {env_id!r} returned a {type(env).__name__}, not a gymnasium.Env")
        return env

    return make


def attribute_path(module: Any, qualname: str) -> Any:
    """What ``module.<qualname>`` names (a dotted path such as ``Outer.make``), or None."""
    target = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
    return target


class GymVecEnv:
    """``n`` copies of any Gymnasium env (:func:`env_maker`); its observations, of any supported
    space, reach the model as one float vector per copy
    (:func:`~uavrl.envs.spaces.observation_encoder`)."""

    def __init__(self, env_id: str, n: int, **kwargs: Any) -> None:
        make = env_maker(env_id, kwargs)
        try:
            self.vec = gym.vector.SyncVectorEnv(
                [make for _ in range(n)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
            )
        except (gym.error.Error, ImportError, TypeError) as err:  # unknown id, missing module, bad kwarg
            raise ConfigError(f"env.id {env_id!r} could not be made: {type(err).__name__}: {err}") from None
        try:
            self.encode = observation_encoder(self.vec.single_observation_space, env_id)
        except ConfigError:
            self.vec.close()
            raise
        self.n = n
        self.obs_dim = self.encode.dim
        self.action_space = self.vec.single_action_space

    def reset(self, seed: int, copy_indices: np.ndarray) -> np.ndarray:
        seeds: list[int | None] = [int(stream_key(seed, int(j)) >> np.uint64(33)) for j in copy_indices]
        obs, _ = self.vec.reset(seed=seeds)
        return self.encode(obs)

    def step(self, actions: Any) -> VecStep:
        raw, reward, terminated, truncated, info = self.vec.step(actions)
        obs, final_obs = self.encode(raw), None
        if "final_obs" in info:
            done = info["_final_obs"]
            final_obs = obs.copy()
            final_obs[done] = np.concatenate([self.encode(o) for o in info["final_obs"][done]])
        return VecStep(
            obs,
            np.asarray(reward, dtype=np.float32),
            np.asarray(terminated, dtype=bool),
            np.asarray(truncated, dtype=bool),
            final_obs,
        )

    def close(self) -> None:
        self.vec.close()


class ConcatVecEnv:
    """Several VecEnvs with one action space stepped as one batch (e.g. one per scenario cell)."""

    def __init__(self, parts: Sequence[VecEnv]) -> None:
        self.parts = list(parts)
        first = self.parts[0]
        if any(p.obs_dim != first.obs_dim or p.action_space != first.action_space for p in self.parts):
            raise ConfigError("all parts of a concatenated env need the same spaces")
        self.n = sum(p.n for p in self.parts)
        self.obs_dim = first.obs_dim
        self.action_space = first.action_space
        self._bounds = np.cumsum([0] + [p.n for p in self.parts])

    def reset(self, seed: int, copy_indices: np.ndarray) -> np.ndarray:
        bounds = zip(self.parts, self._bounds[:-1], self._bounds[1:], strict=True)
        return np.concatenate([p.reset(seed, copy_indices[lo:hi]) for p, lo, hi in bounds])

    def step(self, actions: Any) -> VecStep:
        steps = [
            p.step(index_actions(actions, slice(int(lo), int(hi))))
            for p, lo, hi in zip(self.parts, self._bounds[:-1], self._bounds[1:], strict=True)
        ]
        final = None
        if any(s.final_obs is not None for s in steps):
            final = np.concatenate([s.obs if s.final_obs is None else s.final_obs for s in steps])
        return VecStep(
            np.concatenate([s.obs for s in steps]),
            np.concatenate([s.reward for s in steps]),
            np.concatenate([s.terminated for s in steps]),
            np.concatenate([s.truncated for s in steps]),
            final,
        )

    def privileged(self) -> dict[str, np.ndarray]:
        """The parts' hidden states, concatenated (every part must expose one)."""
        states = []
        for p in self.parts:
            hidden_state = getattr(p, "privileged", None)
            if hidden_state is None:
                raise ValueError(f"{type(p).__name__} exposes no privileged state for an oracle policy")
            states.append(hidden_state())
        return {key: np.concatenate([s[key] for s in states]) for key in states[0]}

    def hidden_features(self) -> np.ndarray:
        """The parts' hidden states for a privileged critic, concatenated."""
        return np.concatenate([p.hidden_features() for p in self.parts])  # type: ignore[attr-defined]

    def cloud_unit_steps(self) -> np.ndarray:
        """The parts' cloud placements of the last step, concatenated."""
        return np.concatenate([_cloud_unit_steps(p) for p in self.parts])

    def close(self) -> None:
        for p in self.parts:
            p.close()


def concat_envs(parts: Sequence[VecEnv]) -> VecEnv:
    """Several VecEnvs as one batch: one `paper` core when every part is a fresh `paper` core with
    its own private pools (the cells of serial workers, each alone: one env call per step
    instead of one per part, the same trajectories), else a :class:`ConcatVecEnv`."""
    if len(parts) == 1:
        return parts[0]
    cores = [p.core for p in parts if isinstance(p, CoreVecEnv) and isinstance(p.core, PaperCore)]
    if len(cores) == len(parts) and PaperCore.can_concatenate(cores):
        return CoreVecEnv(PaperCore.concatenate(cores))
    return ConcatVecEnv(parts)


def _cloud_unit_steps(source: Any) -> np.ndarray:
    """What a core (its array) or an env (its method) reports of its last step's cloud placements."""
    report = getattr(source, "cloud_unit_steps", None)
    if report is None:
        name = type(source).__name__
        raise ConfigError(f"{name} does not report its cloud placements (a pool price needs them)")
    return np.asarray(report() if callable(report) else report)


class RewardWrapper:
    """A VecEnv whose rewards are reshaped for training (observations, episodes and the hidden
    state pass through): subclasses define :meth:`reward`."""

    def __init__(self, env: VecEnv) -> None:
        self.env = env
        self.n = env.n
        self.obs_dim = env.obs_dim
        self.action_space = env.action_space

    def reward(self, own: np.ndarray) -> np.ndarray:
        """(n,) training rewards from the env's (n,) rewards of this step."""
        raise NotImplementedError

    def reset(self, seed: int, copy_indices: np.ndarray) -> np.ndarray:
        return self.env.reset(seed, copy_indices)

    def step(self, actions: Any) -> VecStep:
        step = self.env.step(actions)
        step.reward = self.reward(step.reward.astype(np.float64)).astype(np.float32)
        return step

    def privileged(self) -> dict[str, np.ndarray]:
        return self.env.privileged()  # type: ignore[attr-defined]

    def hidden_features(self) -> np.ndarray:
        return self.env.hidden_features()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.env.close()


class PoolPrice(RewardWrapper):
    """A congestion price on the cloud pool: every task a copy places on the cloud costs it
    ``price * reward_scale * units * T_q`` in the step it is placed (the unit-steps of pool
    capacity it will hold, at a fixed price per unit-step).

    With a shared pool, an agent rewarded for its own tasks alone offloads tasks that cost it
    nothing and block its pool mates; the price charges it for the capacity it takes from them.
    Unlike a team reward, its reward carries none of the pool mates' noise. A task worth its
    units pays for itself iff ``T_q < 1 / price``. Paid at placement, it suits
    ``reward_timing: admission`` (units paid at placement too).
    """

    def __init__(self, env: VecEnv, price: float, reward_scale: float) -> None:
        if price < 0:
            raise ConfigError(f"pool_price={price!r} must be >= 0")
        _cloud_unit_steps(env)  # fails now, not at the first step, if env cannot report them
        super().__init__(env)
        self.charge = price * reward_scale

    def reward(self, own: np.ndarray) -> np.ndarray:
        return own - self.charge * _cloud_unit_steps(self.env)


class PoolMateRewards(RewardWrapper):
    """Rewards each agent with the mean reward of the agents on its cloud pool (a team reward),
    blended with its own reward by ``team_spirit``: ``(1 - team_spirit) * own + team_spirit * mean``.

    Wraps the N x K copies of N agents, agent-major, where copy ``j`` of every agent draws on
    pool ``j`` (``env.shared_pool``). A shared world is scored by the mean over its agents, and
    an agent rewarded only for its own tasks learns to hold pool units its pool mates need
    (it offloads long tasks that block them): the reward of the whole pool aligns what each
    agent learns with what the world is scored on.
    """

    def __init__(self, env: VecEnv, n_agents: int, team_spirit: float = 1.0) -> None:
        if n_agents < 1 or env.n % n_agents:
            raise ConfigError(f"{env.n} copies cannot be split among n_agents={n_agents} agents")
        if not 0.0 <= team_spirit <= 1.0:
            raise ConfigError(f"team_spirit={team_spirit!r} must lie in [0, 1]")
        super().__init__(env)
        self.team_spirit = team_spirit
        self.n_agents = n_agents

    def reward(self, own: np.ndarray) -> np.ndarray:
        pool_mean = np.tile(own.reshape(self.n_agents, -1).mean(axis=0), self.n_agents)
        return (1.0 - self.team_spirit) * own + self.team_spirit * pool_mean


class CriticStateObservations:
    """Appends state columns for the critic to every observation (centralised training,
    decentralised execution): the actor reads only the first ``env.obs_dim`` columns, the value
    network all of them. Subclasses define :meth:`_state` and set ``obs_dim``; the hidden state
    passes through, so one such view can wrap another."""

    def __init__(self, env: VecEnv, state_dim: int) -> None:
        self.env = env
        self.n = env.n
        self.obs_dim = env.obs_dim + state_dim
        self.action_space = env.action_space

    def _state(self, obs: np.ndarray) -> np.ndarray:
        """(n, G) state columns, given the (n, D) observations of the env's current state."""
        raise NotImplementedError

    def _with_state(self, obs: np.ndarray) -> np.ndarray:
        return np.concatenate([obs, self._state(obs)], axis=1, dtype=np.float32)

    def reset(self, seed: int, copy_indices: np.ndarray) -> np.ndarray:
        return self._with_state(self.env.reset(seed, copy_indices))

    def step(self, actions: Any) -> VecStep:
        step = self.env.step(actions)
        obs = self._with_state(step.obs)
        final = None
        if step.final_obs is not None:
            # after an autoreset the env holds the new episode: a finished copy's final state
            # gets the state now (episodes end by termination: their value is never bootstrapped)
            final = np.concatenate([step.final_obs, obs[:, self.env.obs_dim :]], axis=1)
        return VecStep(obs, step.reward, step.terminated, step.truncated, final)

    def privileged(self) -> dict[str, np.ndarray]:
        return self.env.privileged()  # type: ignore[attr-defined]

    def close(self) -> None:
        self.env.close()


class HiddenStateObservations(CriticStateObservations):
    """Appends each copy's hidden state (``hidden_features()``, G columns: for `paper` the
    channel, the pool level and the copy's cloud slots) for a privileged critic. Unlike
    :class:`TeamStateObservations` it needs no pool mates: any runner, any pool.
    """

    def __init__(self, env: VecEnv) -> None:
        super().__init__(env, hidden_state_dim(env))  # refuses an env without a hidden state

    def _state(self, obs: np.ndarray) -> np.ndarray:
        return self.env.hidden_features()  # type: ignore[attr-defined]


def hidden_state_dim(env: Any) -> int:
    """Columns :class:`HiddenStateObservations` appends to ``env``'s observations: its core's
    ``hidden_dim``, found through wrappers and concatenations; a clear error for an env that
    has no hidden state to offer."""
    if hasattr(env, "core"):
        dim = getattr(env.core, "hidden_dim", None)
    elif hasattr(env, "parts"):
        return hidden_state_dim(env.parts[0])
    elif hasattr(env, "env"):
        return hidden_state_dim(env.env)
    else:
        dim = None
    if dim is None:
        raise ConfigError(
            f"{type(env).__name__} exposes no hidden state for a privileged critic "
            "(model.privileged_critic needs a uavrl preset)"
        )
    return int(dim)


class TeamStateObservations(CriticStateObservations):
    """Appends the state of the whole world to every agent's observation, for a centralised
    critic.

    Wraps the N x K copies of N agents, agent-major, copy ``j`` of every agent on pool ``j``
    (as :class:`PoolMateRewards`). Copy ``j`` of each agent gets ``G = N * D + N + 1`` columns:
    the observations of all N agents of world ``j`` in agent order, their channel states, and
    the level of pool ``j`` over its capacity. The hidden parts are known to the simulator at
    training time; the policy never sees them.
    """

    def __init__(self, env: VecEnv, n_agents: int, pool_capacity: int) -> None:
        if n_agents < 1 or env.n % n_agents:
            raise ConfigError(f"{env.n} copies cannot be split among n_agents={n_agents} agents")
        if getattr(env, "privileged", None) is None:
            raise ConfigError(f"{type(env).__name__} exposes no hidden state for a centralised critic")
        super().__init__(env, team_state_dim(env.obs_dim, n_agents))
        self.n_agents = n_agents
        self.pool_capacity = pool_capacity

    def _state(self, obs: np.ndarray) -> np.ndarray:
        n, k = self.n_agents, self.n // self.n_agents
        hidden = self.env.privileged()  # type: ignore[attr-defined]
        per_world = np.concatenate(
            [
                obs.reshape(n, k, -1).transpose(1, 0, 2).reshape(k, -1),
                hidden["channel"].reshape(n, k).T.astype(np.float32),
                hidden["pool_level"].reshape(n, k)[:1].T / self.pool_capacity,
            ],
            axis=1,
        )
        return np.tile(per_world, (n, 1))


def team_state_dim(obs_dim: int, n_agents: int) -> int:
    """Columns :class:`TeamStateObservations` appends: N observations, N channels, 1 pool level."""
    return n_agents * obs_dim + n_agents + 1


def index_actions(actions: Any, rows: int | slice) -> Any:
    """``rows`` (one row, or a slice of them) of a batch of actions: an array, or a tuple or dict
    of them, nested."""
    if isinstance(actions, tuple):
        return tuple(index_actions(a, rows) for a in actions)
    if isinstance(actions, dict):
        return {key: index_actions(a, rows) for key, a in actions.items()}
    return actions[rows]


def make_vec_env(
    env_id: str, n: int, params: dict[str, Any] | None = None, pool: CloudPool | None = None
) -> VecEnv:
    """``n`` copies of ``env_id`` with ``params``; uavrl ids use the batched core directly."""
    params = dict(params or {})
    if env_id == ENV_ID:
        preset = params.pop("preset", "paper")
        return CoreVecEnv(make_core(preset, n, pool=pool, **params))
    if pool is not None:
        raise ConfigError(f"a cloud pool can only be attached to {ENV_ID}, not {env_id!r}")
    return GymVecEnv(env_id, n, **params)
