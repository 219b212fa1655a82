"""Evaluation of policies over scenario cells, with common random numbers.

Every policy sees the same evaluation streams in a cell (same seed, same copy indices), each
episode on its own private, recycled cloud pool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from uavrl.envs.baselines import FLOOR_POLICIES, Policy, cell_returns
from uavrl.envs.scenarios import Cell

POOL_MODE = "private per episode, recycled"
RESULT_COLUMNS = ["policy", "cell", "episodes", "mean", "std", "ci_low", "ci_high"]


def mean_ci(returns: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the Student-t confidence interval of the mean."""
    n = returns.size
    mean = float(returns.mean())
    if n < 2:
        return mean, 0.0, mean, mean
    std = float(returns.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return mean, std, mean - half, mean + half


def evaluate_policies(
    policies: Sequence[Policy], preset: str, cells: Sequence[Cell], episodes: int, seed: int
) -> pd.DataFrame:
    """One row per (policy, cell) with the columns of :data:`RESULT_COLUMNS`."""
    rows = []
    for cell in cells:
        for policy in policies:
            returns = cell_returns(policy, preset, cell, episodes, seed)
            mean, std, low, high = mean_ci(returns)
            rows.append((policy.name, cell.name, episodes, mean, std, low, high))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def percent_of_oracle(results: pd.DataFrame) -> pd.Series:
    """``100 * (J - J_floor) / (J_oracle - J_floor)`` per policy, from means over cells.

    ``J_floor`` is the best of random / always-LOCAL / always-OFFLOAD.
    """
    by_policy = results.groupby("policy", sort=False)["mean"].mean()
    floor = by_policy[[p for p in FLOOR_POLICIES if p in by_policy.index]].max()
    span = by_policy["oracle"] - floor
    return 100.0 * (by_policy - floor) / span
