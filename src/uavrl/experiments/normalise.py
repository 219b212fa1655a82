"""The one normalisation of every table, "%" column, aggregate and figure.

Per cell ``c``: ``score = (J - floor_c) / (top_c - floor_c)``, with

- ``floor_c``: the best constant policy of the cell (always-LOCAL, always-OFFLOAD);
- ``top_c``: the hindsight bound of the cell where one was computed, else the strongest
  privileged reference there (a rule given the hidden state: not a bound).

A policy's score over several cells is the mean of its per-cell scores, so every cell weighs the
same and a "%" column is ``100 x`` that mean. :meth:`Scale.label` names the scale for a header.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FLOOR_POLICIES = ("always_local", "always_offload")
HINDSIGHT_BOUND = "hindsight_bound"
# References that read the hidden state, in both presets (rules, or an exact look-ahead).
PRIVILEGED_POLICIES = ("greedy_privileged", "privileged_rule", "clairvoyant")


@dataclass(frozen=True)
class Scale:
    """Per-cell floor and top of the normalisation; ``top_name`` names what the top is."""

    floor: pd.Series
    top: pd.Series
    top_name: str

    def normalise(self, values: np.ndarray | pd.Series) -> np.ndarray:
        """Per-cell scores of ``values`` (..., cells), in the order of ``self.floor``."""
        floor, top = self.floor.to_numpy(dtype=float), self.top.to_numpy(dtype=float)
        span = np.where(top - floor > 0, top - floor, np.nan)  # no scale where nothing beats the floor
        return (np.asarray(values, dtype=float) - floor) / span

    def percent(self, values: np.ndarray | pd.Series) -> float:
        """``100 x`` the mean over cells (and rows, if ``values`` has any) of the scores."""
        scores = self.normalise(values)
        return float(100.0 * np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")

    @property
    def label(self) -> str:
        return f"0 = best constant policy, 1 = {self.top_name.replace('_', ' ')}"


def scale(references: pd.DataFrame) -> Scale | None:
    """The scale of the cells of ``references`` (reference policies x cells, raw means); None
    where the references hold no floor policy or nothing to put at the top."""
    floors = [p for p in FLOOR_POLICIES if p in references.index]
    if not floors:
        return None
    floor = references.loc[floors].max()
    if HINDSIGHT_BOUND in references.index:
        return Scale(floor, references.loc[[HINDSIGHT_BOUND]].max(), HINDSIGHT_BOUND)
    privileged = [p for p in PRIVILEGED_POLICIES if p in references.index]
    if not privileged:
        return None
    name = "strongest privileged reference" if len(privileged) > 1 else privileged[0]
    return Scale(floor, references.loc[privileged].max(), name)


def normalised_percent(results: pd.DataFrame) -> tuple[pd.Series, Scale] | None:
    """Per policy of an evaluation frame (columns ``policy``, ``cell``, ``mean``), ``100 x`` its
    mean normalised score over the frame's cells; None without a scale."""
    means = results.pivot_table(index="policy", columns="cell", values="mean", sort=False)
    found = scale(means)
    if found is None:
        return None
    return pd.Series({p: found.percent(means.loc[p]) for p in means.index}), found
