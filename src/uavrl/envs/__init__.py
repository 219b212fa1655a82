"""Task-offloading environments (NumPy only: nothing here imports torch)."""

from __future__ import annotations

import gymnasium as gym

from uavrl.envs.presets import ENV_ID, PRESETS, make_core


def register_envs() -> None:
    """Register ``uavrl/Offload-v0`` with Gymnasium (idempotent)."""
    if ENV_ID not in gym.registry:
        gym.register(
            id=ENV_ID,
            entry_point="uavrl.envs.gym_env:OffloadEnv",
            vector_entry_point="uavrl.envs.gym_env:OffloadVectorEnv",
        )


__all__ = ["ENV_ID", "PRESETS", "make_core", "register_envs"]
