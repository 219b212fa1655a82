"""The Gymnasium faces of the batched cores: one copy with auto-reset off (``OffloadEnv``), and
``n`` copies as a Gymnasium vector env with same-step auto-reset (``OffloadVectorEnv``)."""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from uavrl.envs.cloud import CloudPool
from uavrl.envs.mec.core import MecCore
from uavrl.envs.presets import make_core


class OffloadEnv(gym.Env[np.ndarray, Any]):
    """Single-agent task offloading, ``gymnasium.make("uavrl/Offload-v0", preset=..., ...)``.

    The action space is the core's: ``Discrete(3)``, or for ``mec`` with ``action_mode="hybrid"``
    ``Tuple(Discrete(3), Box(0, 1, (1,)))``. With ``mec``'s ``reward_mode="vector"`` the reward
    is a NumPy vector of one reward per objective and ``reward_space`` declares it (as
    MO-Gymnasium does); ``info`` carries the step's cost components (``mec``).

    Args:
        preset: environment preset name.
        pool: optional cloud pool shared with other agents (default: a private pool).
        **params: preset parameters (e.g. ``velocity``, ``cloud_capacity``).

    ``reset(options={"copy_index": i})`` selects the random stream of copy ``i`` of a batched core
    reset with the same seed, so the two produce the same trajectory.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012  (Gymnasium's own annotation)

    def __init__(self, preset: str = "paper", pool: CloudPool | None = None, **params: Any) -> None:
        self.core = make_core(preset, 1, pool=pool, autoreset=False, **params)
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.core.obs_dim,), np.float32)
        self.action_space = self.core.action_space
        self.vector_reward = False
        if isinstance(self.core, MecCore) and self.core.params.reward_mode == "vector":
            self.vector_reward = True
            self.reward_space = self.core.reward_space

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        copy_index = int((options or {}).get("copy_index", 0))
        obs = self.core.reset(seed=seed, copy_indices=np.array([copy_index]))
        return obs[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, Any, bool, bool, dict[str, Any]]:
        if isinstance(self.action_space, gym.spaces.Tuple):
            if not (isinstance(action, tuple) and len(action) == 2):
                raise ValueError(
                    f"action must be a tuple (choice, array of 1 value in [0, 1]), got {action!r}"
                )
            choice = _discrete_choice(action[0])
            value = np.asarray(action[1], dtype=np.float32).reshape(1, 1)
            batched: Any = (np.array([choice], dtype=np.int64), value)
        else:
            batched = np.array([_discrete_choice(action)], dtype=np.int64)
        obs, reward, terminated, truncated, info = self.core.step(batched)
        step_info = {"components": info["components"][0]} if "components" in info else {}
        value_out = reward[0].astype(np.float64) if self.vector_reward else float(reward[0])
        return obs[0], value_out, bool(terminated[0]), bool(truncated[0]), step_info

    def privileged(self) -> dict[str, np.ndarray]:
        """Hidden state of this agent for an oracle policy (see ``PaperCore.privileged``)."""
        return self.core.privileged()


def _discrete_choice(action: Any) -> int:
    value = action.item() if isinstance(action, np.ndarray) and action.shape == () else action
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < 3:
        raise ValueError(
            f"action must be an integer in {{0, 1, 2}} (LOCAL, OFFLOAD, DISCARD), got {action!r}"
        )
    return int(value)


class OffloadVectorEnv(gym.vector.VectorEnv[np.ndarray, Any, np.ndarray]):
    """``num_envs`` copies of a preset stepped as one batched core (no Python loop over copies),
    ``gymnasium.make_vec("uavrl/Offload-v0", num_envs=n, vectorization_mode="vector_entry_point",
    preset=..., ...)``, for libraries that take Gymnasium vector envs.

    Same-step auto-reset (``metadata["autoreset_mode"]``): the observation a finished copy
    returns starts its next episode; its last observation is row ``i`` of ``infos["final_obs"]``
    where ``infos["_final_obs"][i]`` is set. ``reset(seed=s)`` keys copy ``i`` from ``(s, i)``,
    as the core does, so copy ``i`` follows ``OffloadEnv`` reset with ``options={"copy_index":
    i}``. Each copy has a private cloud pool (``paper``) or cloud group (``mec``).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}  # noqa: RUF012

    def __init__(self, num_envs: int = 1, preset: str = "paper", **params: Any) -> None:
        self.core = make_core(preset, num_envs, autoreset=True, **params)
        self.num_envs = num_envs
        self.single_observation_space = gym.spaces.Box(0.0, 1.0, (self.core.obs_dim,), np.float32)
        self.single_action_space = self.core.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every copy's episode; ``(obs (n, D), {})``."""
        if options:
            raise ValueError(f"OffloadVectorEnv.reset takes no options, got {options!r}")
        return self.core.reset(seed=seed), {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """``actions`` (n,) ints, or for hybrid ``mec`` a tuple of (n,) choices and (n, 1) values."""
        obs, reward, terminated, truncated, info = self.core.step(
            actions if isinstance(actions, tuple) else np.asarray(actions)
        )
        infos: dict[str, Any] = {k: v for k, v in info.items() if k != "final_obs"}
        if "final_obs" in info:
            infos["final_obs"] = info["final_obs"]
            infos["_final_obs"] = terminated | truncated
        return obs, reward, terminated, truncated, infos
