"""The Gymnasium face of the batched cores: one copy, auto-reset off."""

from __future__ import annotations

import numbers
from typing import Any

import gymnasium as gym
import numpy as np

from uavrl.envs.cloud import CloudPool
from uavrl.envs.presets import make_core


class OffloadEnv(gym.Env[np.ndarray, np.int64]):
    """Single-agent task offloading, ``gymnasium.make("uavrl/Offload-v0", preset=..., ...)``.

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
        self.action_space = gym.spaces.Discrete(self.core.n_actions)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        copy_index = int((options or {}).get("copy_index", 0))
        obs = self.core.reset(seed=seed, copy_indices=np.array([copy_index]))
        return obs[0], {}

    def step(self, action: np.int64 | int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        value = action.item() if isinstance(action, np.ndarray) and action.shape == () else action
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Integral)
            or not 0 <= value < self.core.n_actions
        ):
            raise ValueError(
                f"action must be an integer in {{0, 1, 2}} (LOCAL, OFFLOAD, DISCARD), got {action!r}"
            )
        obs, reward, terminated, truncated, _ = self.core.step(np.array([action], dtype=np.int64))
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def privileged(self) -> dict[str, np.ndarray]:
        """Hidden state of this agent for an oracle policy (see ``PaperCore.privileged``)."""
        return self.core.privileged()
