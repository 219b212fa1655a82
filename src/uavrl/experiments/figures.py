"""The figures of a study's report: learning curves, per-cell bars, heatmaps, the A3C-vs-
individual forest and the percent-of-oracle bars (PNG, drawn without a display)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from scipy import stats as sps

from uavrl.envs.scenarios import Cell
from uavrl.envs.worlds import TRAIN_WORLD
from uavrl.experiments import stats
from uavrl.experiments.normalise import scale
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.scores import (
    REFERENCE_ORDER,
    View,
    reference_table,
    seed_scores,
    table_arms,
    view_scale,
)
from uavrl.experiments.study import LEARNED_ARMS, REFERENCE_ARM, StudyConfig, plan

CURVE_POINTS = 200

CURVE_WINDOW = 200  # episodes in the rolling mean of a learning curve


@dataclass
class Curves:
    """One arm's smoothed training returns, every seed on a common x grid.

    ``steps`` (points,) env steps per worker, ``by_steps`` (seeds, points); ``wall`` (points,)
    seconds, ``by_wall`` (seeds, points), NaN past a seed's own end.
    """

    steps: np.ndarray
    by_steps: np.ndarray
    wall: np.ndarray
    by_wall: np.ndarray
    workers: int = 1


def _smoothed(log: Path) -> pd.DataFrame:
    """A run's training log in step order, ``return`` replaced by its rolling mean over the
    last ``CURVE_WINDOW`` episodes (fewer at the start)."""
    frame = pd.read_csv(log, usecols=["step", "return", "wall_time"]).sort_values("step", kind="stable")
    frame["return"] = frame["return"].rolling(CURVE_WINDOW, min_periods=1).mean()
    return frame


def learning_curves(study: StudyConfig, study_dir: Path, ablation: str) -> dict[str, Curves]:
    """Per arm, every seed's smoothed curve interpolated on ``CURVE_POINTS`` points: a
    continuous line for any number of seeds and however few episodes a run logged; the median
    at a point is over the seeds that reached it."""
    frames: dict[str, list[pd.DataFrame]] = {}
    workers: dict[str, int] = {}
    for run in plan(study, study_dir):
        log = RunDir(run.run_dir).training_log
        if run.ablation != ablation or not log.exists():
            continue
        frame = _smoothed(log)
        if not frame.empty:
            frames.setdefault(run.arm, []).append(frame)
            workers[run.arm] = run.config.runner.n_workers
    curves = {}
    for arm, runs in frames.items():
        steps = np.linspace(
            min(f["step"].iloc[0] for f in runs), max(f["step"].iloc[-1] for f in runs), CURVE_POINTS
        )
        wall = np.linspace(0.0, max(f["wall_time"].iloc[-1] for f in runs), CURVE_POINTS)
        by_steps = np.vstack([_interp_until_end(steps, f["step"], f["return"]) for f in runs])
        by_wall = np.vstack([_interp_until_end(wall, f["wall_time"], f["return"]) for f in runs])
        curves[arm] = Curves(steps / workers[arm], by_steps, wall, by_wall, workers[arm])
    return curves


def _interp_until_end(x: np.ndarray, xp: pd.Series, fp: pd.Series) -> np.ndarray:
    """``fp`` interpolated at ``x``; NaN past the run's last point (an unfinished run)."""
    return np.where(x <= xp.iloc[-1], np.interp(x, xp, fp), np.nan)


def _median_band(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per point: the median over seeds and its 95% bootstrap CI (NaN band with one seed)."""
    median, low, high = np.full((3, curves.shape[1]), np.nan)
    for i, column in enumerate(curves.T):
        values = column[np.isfinite(column)]
        if values.size:
            median[i] = np.median(values)
        if values.size > 1:
            low[i], high[i] = stats.seed_bootstrap_ci(values, "median", 500)
    return median, low, high


def _draw_median_curve(axes: Any, x_steps: np.ndarray, curve: Curves, label: str, alpha: float) -> int:
    """A curve's median over seeds and its 95% bootstrap band on ``axes`` (over env steps
    ``x_steps``, over wall time); returns its number of seeds (one seed: no band)."""
    seeds = curve.by_steps.shape[0]
    for ax, x, values in ((axes[0], x_steps, curve.by_steps), (axes[1], curve.wall, curve.by_wall)):
        median, low, high = _median_band(values)
        (line,) = ax.plot(x, median, label=f"{label} ({seeds} seed{'s' * (seeds > 1)})")
        if seeds > 1:
            ax.fill_between(x, low, high, alpha=alpha, color=line.get_color())
    return seeds


def _save_curves(fig: Figure, axes: Any, steps_label: str, title: str, path: Path) -> None:
    axes[0].set_xlabel(steps_label)
    axes[1].set_xlabel("wall time (s)")
    axes[0].set_ylabel(f"training return, rolling mean of {CURVE_WINDOW} episodes")
    fig.suptitle(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_learning_curves(study: StudyConfig, study_dir: Path, ablation: str, path: Path) -> None:
    """One line per arm in one ablation row, over env steps per worker and over wall time."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    notes = []
    for arm, curve in learning_curves(study, study_dir, ablation).items():
        if _draw_median_curve(axes, curve.steps, curve, arm, alpha=0.25) == 1:
            notes.append(f"{arm}: one seed, so no band")
    title = f"row {ablation} (training world): median over seeds, 95% bootstrap CI"
    _save_curves(fig, axes, "env steps per worker", title + (f" ({'; '.join(notes)})" if notes else ""), path)


def plot_row_curves(study: StudyConfig, study_dir: Path, arm: str, path: Path) -> None:
    """One line per ablation row (a sweep): median over seeds and its 95% bootstrap CI, over
    the run's env steps (all workers together) and over wall time."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ablation in study.ablations:
        curve = learning_curves(study, study_dir, ablation).get(arm)
        if curve is not None:
            _draw_median_curve(axes, curve.steps * curve.workers, curve, ablation, alpha=0.2)
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e3:g}k"))
    _save_curves(fig, axes, "env steps (all workers)", f"{arm}: median over seeds, 95% bootstrap CI", path)


def plot_per_cell(results: pd.DataFrame, ablation: str, regime: str, path: Path) -> None:
    """Greedy return per cell in one regime: learned arms (mean and t-CI over seeds) and
    reference policies."""
    refs = results[
        (results["arm"] == REFERENCE_ARM) & (results["ablation"] == ablation) & (results["regime"] == regime)
    ]
    cells = list(dict.fromkeys(refs["cell"]))
    series: list[tuple[str, np.ndarray, np.ndarray]] = []
    for arm in LEARNED_ARMS:
        rows = results[
            (results["arm"] == arm)
            & (results["ablation"] == ablation)
            & (results["regime"] == regime)
            & (results["selection"] == "greedy")
        ]
        if rows.empty:
            continue
        per_seed = rows.groupby(["seed", "cell"])["mean_return"].mean().unstack()[cells]
        n = per_seed.shape[0]
        half = sps.t.ppf(0.975, n - 1) * per_seed.std(ddof=1) / np.sqrt(n) if n > 1 else per_seed.mean() * 0
        series.append((arm, per_seed.mean().to_numpy(), half.to_numpy()))
    for name in REFERENCE_ORDER:
        ref = refs[refs["model"] == name].set_index("cell").reindex(cells)
        if ref["mean_return"].notna().any():
            series.append((name, ref["mean_return"].to_numpy(), np.zeros(len(cells))))
    fig = Figure(figsize=(max(10.0, 0.45 * len(cells)), 5))
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(cells))
    for i, (name, mean, half) in enumerate(series):
        ax.bar(x + i * width, mean, width, yerr=half, label=name, capsize=1.5)
    ax.set_xticks(x + 0.4 - width / 2, cells, rotation=75, fontsize=7)
    ax.set_ylabel("mean episode return per agent (evaluation reward scale)")
    ax.set_title(f"per cell, greedy, row {ablation}, {regime} cloud pools: 95% CI over seeds")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


CELL_GROUPS = (
    "training world",
    "training",
    "held-out velocity",
    "held-out local",
    "held-out cloud",
    "held-out",
)


def cell_group(cell: str, train_cells: list[str]) -> str:
    """``training``, the training world, or which parameter makes a held-out cell new:
    ``held-out velocity`` / ``held-out local`` / ``held-out cloud``."""
    if cell == TRAIN_WORLD:
        return "training world"
    if cell in train_cells:
        return "training"
    parsed, seen = Cell.parse(cell), [Cell.parse(c) for c in train_cells]
    for field in ("local_capacity", "cloud_capacity", "velocity"):
        if getattr(parsed, field) not in {getattr(c, field) for c in seen}:
            return f"held-out {field.split('_')[0]}"
    return "held-out"


def heatmap_scores(results: pd.DataFrame, ablation: str, regime: str) -> pd.DataFrame:
    """Normalised score in %, greedy, per cell (rows, grouped: training world, training,
    held-out by velocity / local / cloud) and policy (columns: learned arms, then the
    references). A learned arm's entry is its mean over seeds. Each cell is scaled as the
    report's statistics are (``experiments.normalise``): 0 at its best constant policy, 100 at
    its hindsight bound, else its strongest privileged reference."""
    rows = results[(results["ablation"] == ablation) & (results["regime"] == regime)]
    refs = rows[rows["arm"] == REFERENCE_ARM]
    learned = rows[(rows["arm"] != REFERENCE_ARM) & (rows["selection"] == "greedy")]
    means = {
        arm: g.groupby(["seed", "cell"])["mean_return"].mean().groupby("cell").mean()
        for arm, g in learned.groupby("arm", sort=False)
    }
    means.update({name: g.set_index("cell")["mean_return"] for name, g in refs.groupby("model", sort=False)})
    table = pd.DataFrame(means)
    learned_arms = [a for a in LEARNED_ARMS if a in table]
    columns = learned_arms + [r for r in REFERENCE_ORDER if r in table]
    table = table[columns]
    found = scale(table[[c for c in REFERENCE_ORDER if c in table]].T)
    if found is None:
        raise ValueError(f"row {ablation} ({regime}): no constant policy or privileged top to scale by")
    scores = pd.DataFrame(
        100.0 * found.normalise(table.T.to_numpy()).T, index=table.index, columns=table.columns
    )
    train_cells = str(rows["train_cells"].dropna().iloc[0]).split(";")
    groups = pd.Series({c: cell_group(c, train_cells) for c in scores.index})

    def rank(cell: str) -> tuple[int, float, float, float]:
        parsed = Cell(0.0) if cell == TRAIN_WORLD else Cell.parse(cell)
        return CELL_GROUPS.index(groups[cell]), parsed.cloud_capacity, parsed.local_capacity, parsed.velocity

    ranked = sorted(scores.index, key=rank)
    scores = scores.loc[ranked]
    scores.index = pd.MultiIndex.from_arrays([groups[ranked], ranked], names=["group", "cell"])
    return scores


def plot_heatmap(results: pd.DataFrame, ablation: str, regime: str, path: Path) -> None:
    """Cells x policies coloured by normalised score; cell groups separated by lines."""
    scores = heatmap_scores(results, ablation, regime)
    fig = Figure(figsize=(1.1 * scores.shape[1] + 3, 0.32 * scores.shape[0] + 1.8))
    ax = fig.subplots()
    image = ax.imshow(scores.to_numpy(dtype=float), cmap="RdYlGn", vmin=0, vmax=100, aspect="auto")
    for (i, j), value in np.ndenumerate(scores.to_numpy(dtype=float)):
        if np.isfinite(value):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=7)
    groups = scores.index.get_level_values("group")
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="black", lw=1.2)
    n_learned = sum(c in LEARNED_ARMS for c in scores.columns)
    ax.axvline(n_learned - 0.5, color="black", lw=1.2)
    ax.set_xticks(range(scores.shape[1]), scores.columns, rotation=35, ha="right", fontsize=8)
    labels = [f"{cell} ({group})" for group, cell in scores.index]
    ax.set_yticks(range(scores.shape[0]), labels, fontsize=7)
    fig.colorbar(image, ax=ax, label="normalised score, % (0: best constant policy, 100: bound / privileged)")
    ax.set_title(f"row {ablation}, {regime} cloud pools, greedy: per-cell normalised score", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_forest(frames: dict[str, pd.DataFrame], path: Path) -> None:
    """A3C minus individual per ablation row with its 95% CI, one marker per cell group."""
    fig = Figure(figsize=(7, 0.45 * max(len(f) for f in frames.values()) + 1.5))
    ax = fig.subplots()
    for offset, (label, frame) in zip((-0.15, 0.15), frames.items(), strict=False):
        y = np.arange(len(frame))[::-1] + offset
        err = np.vstack([frame["gap"] - frame["ci_low"], frame["ci_high"] - frame["gap"]])
        ax.errorbar(frame["gap"], y, xerr=np.nan_to_num(err), fmt="o", capsize=3, label=label)
    first = next(iter(frames.values()))
    ax.set_yticks(np.arange(len(first))[::-1], first["ablation"])
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(
        "A3C - individual, greedy mean return (95% Welch CI over seeds), each row in its training regime"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_normalised(results: pd.DataFrame, ablation: str, regime: str, path: Path) -> None:
    """Normalised % per learned arm (mean over seeds, 95% t-interval) and per reference, on
    training and held-out cells."""
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    names = [*table_arms(results, ablation, regime), *REFERENCE_ORDER]
    label = ""
    for offset, held_out in ((-0.2, False), (0.2, True)):
        view = View(ablation, regime, "greedy", held_out)
        found = view_scale(results, view)
        label = found.label
        per_cell = reference_table(results, view)
        means, halves = [], []
        for name in names:
            if name in REFERENCE_ORDER:
                means.append(
                    found.percent(per_cell.loc[name].to_numpy()) if name in per_cell.index else np.nan
                )
                halves.append(0.0)
                continue
            scores = seed_scores(results, name, view)
            values = 100.0 * found.normalise(scores).mean(axis=1) if scores.size else np.empty(0)
            n = values.size
            means.append(float(values.mean()) if n else np.nan)
            halves.append(float(sps.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0)
        ax.bar(
            np.arange(len(names)) + offset,
            means,
            0.4,
            yerr=halves,
            capsize=2,
            label="held-out cells" if held_out else "training cells",
        )
    ax.set_xticks(np.arange(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"normalised % (greedy; {label})", fontsize=8)
    ax.set_title(f"row {ablation}, {regime} cloud pools")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
