"""Run whole episodes of a batched core under a NumPy policy (no learning, no torch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from uavrl.envs.presets import make_core

PolicyFn = Callable[[np.ndarray, dict[str, np.ndarray] | None], np.ndarray]


def episode_returns(
    policy: PolicyFn,
    preset: str,
    env_params: dict[str, Any],
    copy_indices: np.ndarray,
    seed: int,
    privileged: bool = False,
    max_steps: int = 100_000,
) -> np.ndarray:
    """Undiscounted return of one episode in each of B copies with private pools.

    Copy ``j`` uses the stream ``(seed, copy_indices[j])``, so two policies evaluated with the
    same arguments see the same tasks and channel draws (common random numbers).

    Args:
        policy: ``(obs (B, D), privileged or None) -> actions (B,)``.
        copy_indices: (B,) stream index of each copy (one episode per copy).
        privileged: pass the core's hidden state to the policy (oracle only).

    Returns:
        (B,) float64 returns.
    """
    n = len(copy_indices)
    core = make_core(preset, n, **env_params)
    obs = core.reset(seed=seed, copy_indices=np.asarray(copy_indices))
    returns = np.zeros(n)
    running = np.ones(n, dtype=bool)
    for _ in range(max_steps):
        actions = policy(obs, core.privileged() if privileged else None)
        obs, reward, terminated, truncated, _ = core.step(actions)
        returns += reward * running
        running &= ~(terminated | truncated)
        if not running.any():
            return returns
    raise RuntimeError(f"episodes did not finish within max_steps={max_steps}")
