"""Seed-level scores of a study's results, shared by its report tables and figures.

A :class:`View` picks the evaluation rows a table or figure reads (an ablation row, a pool
regime, a selection mode, training or held-out cells); :func:`seed_scores` turns an arm's rows
into a (seeds, cells) matrix, the seed being the unit; :func:`normalised` scales it per cell
with the one normalisation of ``experiments.normalise``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from uavrl.envs.worlds import TRAIN_WORLD
from uavrl.experiments import stats
from uavrl.experiments.normalise import HINDSIGHT_BOUND, Scale, scale
from uavrl.experiments.study import INDIVIDUAL_ARMS, REFERENCE_ARM, REFERENCE_SELECTION, SHARED_MODEL_ARMS

# Learned "arms" in tables: the two arms, the individual arm's best/worst model per seed, and
# the equal-update-budget variant when the study ran it.
INDIVIDUAL_BEST, INDIVIDUAL_WORST = "individual (best model)", "individual (worst model)"

REFERENCE_ORDER = (
    "random",
    "always_local",
    "always_offload",
    "local_else_offload",
    "threshold",
    "greedy_estimated",
    "two_threshold",
    "two_threshold_steps_left",
    "two_margin",
    "greedy_privileged",
    "privileged_rule",
    "clairvoyant",
    HINDSIGHT_BOUND,
)
# what the headline test compares a learned arm with: the strongest rule without hidden state
NON_PRIVILEGED_RULES = (
    "threshold",
    "greedy_estimated",
    "two_threshold",
    "two_threshold_steps_left",
    "two_margin",
)


@dataclass(frozen=True)
class View:
    """Which evaluation rows a table reads: an ablation row, a pool regime, a selection mode,
    training or held-out cells. ``transfer`` is derived: the regime the row did not train in."""

    ablation: str
    regime: str
    selection: str
    held_out: bool

    def select(self, results: pd.DataFrame, arm: str) -> pd.DataFrame:
        selection = REFERENCE_SELECTION if arm == REFERENCE_ARM else self.selection
        return results[
            (results["arm"] == arm)
            & (results["ablation"] == self.ablation)
            & (results["regime"] == self.regime)
            & (results["selection"] == selection)
            & (results["held_out"] == self.held_out)
            & (results["cell"] != TRAIN_WORLD)
        ]


def training_regimes(results: pd.DataFrame) -> dict[str, str]:
    """Per ablation row, the pool regime its runs trained in."""
    own = results[~results["transfer"].astype(bool)]
    return {str(k): str(v) for k, v in own.groupby("ablation", sort=False)["regime"].first().items()}


def seed_scores(results: pd.DataFrame, arm: str, view: View) -> np.ndarray:
    """(seeds, cells) matrix of raw returns of one arm; ``individual`` averages its models per
    seed and cell (in a shared world its N models act together, as one team).

    ``arm`` may also be :data:`INDIVIDUAL_BEST` / :data:`INDIVIDUAL_WORST`: per seed the
    individual model with the highest / lowest mean over these cells.
    """
    source = "individual" if arm in (INDIVIDUAL_BEST, INDIVIDUAL_WORST) else arm
    rows = view.select(results, source)
    if rows.empty:
        return np.empty((0, 0))
    table = rows.pivot_table(index=["seed", "model"], columns="cell", values="mean_return", aggfunc="mean")
    table = table[reference_cells(results, view)]
    if arm == source:
        return table.groupby(level="seed").mean().to_numpy()
    per_model = table.mean(axis=1)
    pick = (
        per_model.groupby(level="seed").idxmax
        if arm == INDIVIDUAL_BEST
        else per_model.groupby(level="seed").idxmin
    )
    return table.loc[pick().to_list()].to_numpy()


def reference_cells(results: pd.DataFrame, view: View) -> list[str]:
    """The cells of a view, in the order of the reference rows."""
    return list(dict.fromkeys(view.select(results, REFERENCE_ARM)["cell"]))


def reference_table(results: pd.DataFrame, view: View) -> pd.DataFrame:
    """Reference policies x cells of a view (raw mean returns)."""
    rows = view.select(results, REFERENCE_ARM)
    return rows.pivot_table(index="model", columns="cell", values="mean_return")[
        reference_cells(results, view)
    ]


def reference_means(results: pd.DataFrame, view: View) -> pd.Series:
    """Mean over the view's cells of every reference policy."""
    return reference_table(results, view).mean(axis=1)


def view_scale(results: pd.DataFrame, view: View) -> Scale:
    """The normalisation of the view's cells (``experiments.normalise``)."""
    found = scale(reference_table(results, view))
    if found is None:
        raise ValueError(f"the references of {view} hold no constant policy or no privileged top")
    return found


def normalised(results: pd.DataFrame, view: View, scores: np.ndarray) -> np.ndarray:
    """Per-cell normalised scores of a (seeds, cells) matrix of the view: 0 at the best constant
    policy of each cell, 1 at its hindsight bound (else its strongest privileged reference)."""
    found = view_scale(results, view)
    return stats.normalised_scores(scores, found.floor.to_numpy(), found.top.to_numpy())


def train_world_values(results: pd.DataFrame, arm: str, ablation: str, selection: str) -> pd.Series:
    """Per seed (or per reference policy), the return in the shared training world itself."""
    rows = results[
        (results["ablation"] == ablation)
        & (results["cell"] == TRAIN_WORLD)
        & (results["arm"] == arm)
        & (results["selection"] == (REFERENCE_SELECTION if arm == REFERENCE_ARM else selection))
    ]
    key = "model" if arm == REFERENCE_ARM else "seed"
    return rows.groupby(key)["mean_return"].mean()


def table_arms(results: pd.DataFrame, ablation: str, regime: str) -> list[str]:
    """The learned arms of an ablation row in table order (the individual arm's best and worst
    model beside it in private pools)."""
    present = set(results.loc[results["ablation"] == ablation, "arm"])
    names = [a for a in SHARED_MODEL_ARMS if a in present]
    if "individual" in present:
        # In a shared world the individual models act as one team: no best or worst model.
        names += ["individual"] + ([INDIVIDUAL_BEST, INDIVIDUAL_WORST] if regime == "private" else [])
    return names + [a for a in INDIVIDUAL_ARMS if a != "individual" and a in present]
