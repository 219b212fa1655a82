"""Run whole episodes of a batched core under a NumPy policy (no learning, no torch)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from uavrl.envs.vector import VecEnv

PolicyFn = Callable[[np.ndarray, dict[str, np.ndarray] | None], np.ndarray]


def episode_returns(
    policy: PolicyFn,
    env: VecEnv,
    seed: int,
    copy_indices: np.ndarray,
    privileged: bool = False,
    max_steps: int = 100_000,
) -> np.ndarray:
    """Undiscounted return of the first episode of each copy of ``env``.

    Copy ``j`` uses the stream ``(seed, copy_indices[j])``, so two policies evaluated with the
    same arguments see the same tasks and channel draws (common random numbers).

    Args:
        policy: ``(obs (B, D), privileged or None) -> actions``; its ``reset(B)`` method, if
            any, is called first (recurrent policies clear their state).
        privileged: pass the env's hidden state to the policy (oracle only).

    Returns:
        (B,) float64 returns.
    """
    n = env.n
    reset = getattr(policy, "reset", None)
    if reset is not None:
        reset(n)
    obs = env.reset(seed, np.asarray(copy_indices))
    hidden_state = getattr(env, "privileged", None)
    if privileged and hidden_state is None:
        raise ValueError("this env exposes no privileged state for an oracle policy")
    returns = np.zeros(n)
    running = np.ones(n, dtype=bool)
    for _ in range(max_steps):
        actions = policy(obs, hidden_state() if privileged and hidden_state is not None else None)
        step = env.step(actions)
        obs = step.obs
        returns += step.reward * running
        running &= ~(step.terminated | step.truncated)
        if not running.any():
            return returns
    raise RuntimeError(f"episodes did not finish within max_steps={max_steps}")
