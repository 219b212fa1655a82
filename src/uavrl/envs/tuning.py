"""The one search that tunes every rule's parameters, for both presets.

A rule's parameters are searched over a grid per parameter ("axes"), each candidate scored by a
caller's function on the tuning streams (common random numbers: every candidate sees the same
episodes). Without a start point, a coarse grid first (every ``coarse_step``-th value of each
axis, ends included); then coordinate ascent from the best point: each axis in turn is searched
over all its values, the others fixed, until a whole pass improves nothing. A full grid would
cost the product of the axes' lengths; this costs about their sum per pass.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Candidate = tuple[float, ...]


@dataclass(frozen=True)
class TunedRule:
    """The best parameters, their mean tuning return, and the mean of every candidate tried."""

    values: Candidate
    score: float
    scores: dict[Candidate, float]


def coordinate_ascent(
    score: Callable[[list[Candidate]], np.ndarray],
    axes: Sequence[Sequence[float]],
    start: Sequence[float] | None = None,
    coarse_step: int = 5,
) -> TunedRule:
    """The search of the module docstring. ``score(candidates)`` returns one mean tuning return
    per candidate; each candidate is scored once. Ties keep the current point, else the first."""
    scores: dict[Candidate, float] = {}

    def evaluate(candidates: Sequence[Candidate]) -> None:
        new = [c for c in dict.fromkeys(candidates) if c not in scores]
        if new:
            scores.update(zip(new, map(float, score(new)), strict=True))

    if start is None:
        coarse = [
            tuple(axis[::coarse_step]) + ((axis[-1],) if (len(axis) - 1) % coarse_step else ())
            for axis in axes
        ]
        grid = list(itertools.product(*coarse))
        evaluate(grid)
        best = max(grid, key=scores.__getitem__)
    else:
        best = tuple(start)
        evaluate([best])
    improved = True
    while improved:
        improved = False
        for i, axis in enumerate(axes):
            line = [(*best[:i], v, *best[i + 1 :]) for v in axis]
            evaluate(line)
            candidate = max(line, key=scores.__getitem__)
            if scores[candidate] > scores[best]:
                best, improved = candidate, True
    return TunedRule(best, scores[best], scores)


def policy_params(policy: Any) -> dict[str, float]:
    """A reference policy's tuned parameters, either preset's (empty for a rule without any)."""
    tuned = getattr(policy, "tuned_params", None)
    if tuned is not None:
        return dict(tuned)
    return {"theta": int(policy.theta)} if hasattr(policy, "theta") else {}
