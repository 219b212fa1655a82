"""Reward scaling by a running estimate of the discounted return's standard deviation.

Large returns make the value loss dwarf the policy loss, and clipping the joint gradient norm
then shrinks the policy gradient to nothing. Dividing rewards by the std of the discounted
return (Engstrom et al. 2020, "Implementation matters in deep policy gradients") keeps both
losses on one scale without moving the optimum.
"""

from __future__ import annotations

import numpy as np


class RunningMoments:
    """Running mean and variance of a stream of batches (parallel Welford update)."""

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 1.0
        self.count = 1e-4

    def update(self, x: np.ndarray) -> None:
        batch_mean, batch_var, n = float(x.mean()), float(x.var()), x.size
        delta = batch_mean - self.mean
        total = self.count + n
        self.mean += delta * n / total
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.var = m2 / total
        self.count = total


class RewardScaler:
    """``r / std(G)`` with ``G_t = gamma * G_{t-1} + r_t`` tracked per copy, reset at episode ends."""

    def __init__(self, n: int, gamma: float, epsilon: float = 1e-8) -> None:
        self.returns = np.zeros(n)
        self.gamma = gamma
        self.epsilon = epsilon
        self.moments = RunningMoments()

    def __call__(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        self.returns = self.returns * self.gamma + reward
        self.moments.update(self.returns)
        self.returns[done] = 0.0
        return (reward / np.sqrt(self.moments.var + self.epsilon)).astype(np.float32)
