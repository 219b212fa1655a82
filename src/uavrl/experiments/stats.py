"""Seed-level statistics for comparing training arms.

The independent unit is the training seed. Scores arrive as a matrix ``(seeds, cells)``: entry
``[s, c]`` is seed ``s``'s return in cell ``c`` (for the individual arm already the mean over that
seed's N models: models are never pooled as if they were seeds). A seed's value is its row mean.

- :func:`normalised_scores`: per-cell ``(J - J_floor) / (J_top - J_floor)``, so that cells of
  different scale weigh the same in the aggregates below (as rliable normalises per task); the
  floor and top are chosen in ``experiments.normalise``.
- :func:`seed_summary`: mean, std, CV, worst seed over seed values.
- :func:`iqm` and :func:`seed_bootstrap_ci`: the interquartile mean over all (seed, cell)
  scores and its percentile CI from a bootstrap that resamples whole seeds (runs): one model per
  seed is scored on every cell, so a seed's cells are correlated and are drawn together (the
  estimator of Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice", with the
  run as the unit).
- :func:`probability_of_improvement`: P(X > Y) + P(X = Y) / 2 per cell, averaged over cells.
- :func:`welch_t` and :func:`mann_whitney_u` on seed values; :func:`holm` across ablation rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats


def _matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    if scores.ndim != 2 or scores.shape[0] < 1 or scores.shape[1] < 1:
        raise ValueError(f"scores must be a non-empty (seeds, cells) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return scores


def normalised_scores(scores: np.ndarray, floor: np.ndarray, top: np.ndarray) -> np.ndarray:
    """``(scores - floor) / (top - floor)`` per cell (column): 0 at the floor, 1 at the top.

    Args:
        scores: (seeds, cells) raw returns.
        floor: (cells,) the best constant policy's return in each cell.
        top: (cells,) the hindsight bound (else the strongest privileged reference) in each cell.
    """
    scores = _matrix(scores)
    floor, top = np.asarray(floor, dtype=np.float64), np.asarray(top, dtype=np.float64)
    if floor.shape != (scores.shape[1],) or top.shape != floor.shape:
        raise ValueError(f"floor and top need one value per cell ({scores.shape[1]}), got {floor.shape}")
    span = top - floor
    if not (span > 0).all():
        raise ValueError(f"the top must beat the floor in every cell, got top - floor = {span}")
    return (scores - floor) / span


@dataclass(frozen=True)
class SeedSummary:
    n_seeds: int
    mean: float
    std: float
    cv: float
    worst: float
    best: float


def seed_summary(scores: np.ndarray) -> SeedSummary:
    """Mean, sample std (ddof=1), CV = std / |mean|, worst and best seed of the seed values."""
    values = _matrix(scores).mean(axis=1)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    cv = std / abs(mean) if mean != 0 else float("inf")
    return SeedSummary(values.size, mean, std, cv, float(values.min()), float(values.max()))


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries: the mean of the middle 50% (25% trimmed each side)."""
    return float(stats.trim_mean(_matrix(scores).ravel(), 0.25))


def _batch_iqm(samples: np.ndarray) -> np.ndarray:
    return np.asarray(stats.trim_mean(samples, 0.25, axis=-1))


def _batch_mean(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=-1)


def _batch_median(samples: np.ndarray) -> np.ndarray:
    return np.median(samples, axis=-1)


BATCH_STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iqm": _batch_iqm,
    "mean": _batch_mean,
    "median": _batch_median,
}


def seed_bootstrap_ci(
    scores: np.ndarray,
    statistic: str = "iqm",
    reps: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile CI of ``statistic`` (iqm, mean, median of all entries) under a bootstrap that
    resamples whole seeds.

    Each replicate draws ``n_seeds`` row indices with replacement, the same for every cell (a
    seed's model is scored on every cell: its row is one unit), and evaluates the statistic on
    the resampled ``(seeds, cells)`` matrix.
    """
    scores = _matrix(scores)
    if statistic not in BATCH_STATISTICS:
        raise ValueError(f"statistic must be one of {sorted(BATCH_STATISTICS)}, got {statistic!r}")
    n_seeds, n_cells = scores.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n_seeds, size=(reps, n_seeds))
    samples = scores[rows].reshape(reps, n_seeds * n_cells)
    replicates = BATCH_STATISTICS[statistic](samples)
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(low), float(high)


def _ties_to_zero(diff: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Differences within rounding of the operands count as ties: a mean of N equal returns can
    differ from the return itself in the last bit."""
    scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1.0)
    return np.where(np.abs(diff) <= 1e-9 * scale, 0.0, diff)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 over all seed pairs, computed per cell and averaged over cells.

    ``x`` and ``y`` are ``(seeds, cells)`` matrices with the same cells (seed counts may differ).
    """
    x, y = _matrix(x), _matrix(y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must share their cells, got {x.shape[1]} and {y.shape[1]} columns")
    diff = _ties_to_zero(x[:, None, :] - y[None, :, :], x[:, None, :], y[None, :, :])
    per_pair = (diff > 0) + 0.5 * (diff == 0)
    return float(per_pair.mean(axis=(0, 1)).mean())


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float
    df: float = float("nan")


def welch_t(x: np.ndarray, y: np.ndarray) -> TestResult:
    """Welch's two-sided t test (unequal variances, Welch-Satterthwaite degrees of freedom)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise ValueError(f"Welch's t test needs >= 2 values per group, got {x.size} and {y.size}")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se2 = vx + vy
    scale = max(float(np.abs(x).max()), float(np.abs(y).max()), 1.0)
    if se2 <= (1e-9 * scale) ** 2:  # both samples constant up to rounding
        equal = abs(x.mean() - y.mean()) <= 1e-9 * scale
        return TestResult(0.0 if equal else float(np.sign(x.mean() - y.mean())) * np.inf, float(equal))
    t = (x.mean() - y.mean()) / np.sqrt(se2)
    df = se2**2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1))
    return TestResult(float(t), float(2.0 * stats.t.sf(abs(t), df)), float(df))


def mann_whitney_u(x: np.ndarray, y: np.ndarray) -> TestResult:
    """Two-sided Mann-Whitney U test; the statistic is U of ``x`` (pairs with x > y, ties 1/2).

    The p-value is exact for small tie-free samples, else from the normal approximation with
    tie and continuity corrections (scipy's ``method="auto"``).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.size < 1 or y.size < 1:
        raise ValueError("Mann-Whitney U needs at least one value per group")
    diff = _ties_to_zero(x[:, None] - y[None, :], x[:, None], y[None, :])
    u = float((diff > 0).sum() + 0.5 * (diff == 0).sum())
    # Ranks on values rounded to 1e-9, so that rounding noise does not break ties.
    p = float(stats.mannwhitneyu(np.round(x, 9), np.round(y, 9), alternative="two-sided").pvalue)
    return TestResult(u, p)


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), in input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted
