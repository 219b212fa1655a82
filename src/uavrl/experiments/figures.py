"""The figures of a study's report: learning curves, per-cell returns, heatmaps, the A3C-vs-
individual forest and the normalised scores (PNG, drawn without a display).

Every policy keeps one colour and marker in every figure (:func:`policy_style`). A learned arm
with fewer than ``FEW_SEEDS`` seeds is drawn as its seeds' points, not as a t-interval (two
seeds give an interval many times the spread)."""

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
from uavrl.experiments.normalise import FLOOR_POLICIES, HINDSIGHT_BOUND, PRIVILEGED_POLICIES, scale
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.scores import (
    NON_PRIVILEGED_RULES,
    REFERENCE_ORDER,
    View,
    reference_table,
    seed_scores,
    table_arms,
    view_scale,
)
from uavrl.experiments.study import LEARNED_ARMS, REFERENCE_ARM, StudyConfig, plan

CURVE_POINTS = 200
MAX_CURVE_WINDOW = 200  # episodes in the rolling mean of a long run's learning curve
CURVE_WINDOWS_PER_RUN = 25  # a short run's window: its episodes / this, so its curve still bends
FEW_SEEDS = 5  # below this, a learned arm's seeds are drawn as points instead of an interval

# 10 hues, dark then light (matplotlib's tab20 reordered), black and navy: 22 distinct colours
_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
    "#000000", "#393b79",
)  # fmt: skip
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "H", "8")
_STYLED = (*LEARNED_ARMS, *REFERENCE_ORDER)


def policy_style(name: str) -> dict[str, Any]:
    """The colour and marker of a policy, the same in every figure: learned arms first, then
    the references in report order, each its own colour (unknown names share a grey)."""
    if name not in _STYLED:
        return {"color": "#555555", "marker": "."}
    i = _STYLED.index(name)
    return {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[i % len(_MARKERS)]}


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


def curve_window(episodes: int) -> int:
    """Episodes in a learning curve's rolling mean, for runs of ``episodes`` logged episodes:
    ``MAX_CURVE_WINDOW`` for long runs, a 25th of the run for short ones (at least 1)."""
    return int(np.clip(episodes // CURVE_WINDOWS_PER_RUN, 1, MAX_CURVE_WINDOW))


def evaluation_units(study: StudyConfig, config: Any) -> float:
    """Factor from a run's training reward to the study's evaluation reward: its preset's reward
    scale in the evaluation over the run's (a `paper` run may train at 0.01 per unit and be
    judged at 0.05); 1 for an env without a preset."""
    from uavrl.experiments.evaluate import evaluation_params

    preset = config.env.uavrl_preset
    if preset is None:
        return 1.0
    judged = evaluation_params(config, study.evaluation.env_params)
    return preset.reward_scale(judged) / preset.reward_scale(config.env.params)


@dataclass
class CurveSet:
    """One ablation row's curves per arm, the rolling window they share, and the factor that
    put them in evaluation units."""

    curves: dict[str, Curves]
    window: int
    units: float


def learning_curves(study: StudyConfig, study_dir: Path, ablation: str) -> CurveSet:
    """Per arm, every seed's training returns in evaluation units, smoothed by one rolling
    window that suits the runs' length (:func:`curve_window`), interpolated on
    ``CURVE_POINTS`` points: a continuous line for any number of seeds and however few episodes
    a run logged; the median at a point is over the seeds that reached it."""
    logs: dict[str, list[pd.DataFrame]] = {}
    workers: dict[str, int] = {}
    units = 1.0
    for run in plan(study, study_dir):
        log = RunDir(run.run_dir).training_log
        if run.ablation != ablation or not log.exists():
            continue
        frame = pd.read_csv(log, usecols=["step", "return", "wall_time"]).sort_values("step", kind="stable")
        if not frame.empty:
            units = evaluation_units(study, run.config)
            frame["return"] *= units
            logs.setdefault(run.arm, []).append(frame)
            workers[run.arm] = run.config.runner.n_workers
    lengths = [len(f) for runs in logs.values() for f in runs]
    window = curve_window(int(np.median(lengths))) if lengths else 1
    frames = {
        arm: [f.assign(**{"return": f["return"].rolling(window, min_periods=1).mean()}) for f in runs]
        for arm, runs in logs.items()
    }
    curves = {}
    for arm, runs in frames.items():
        steps = np.linspace(
            min(f["step"].iloc[0] for f in runs), max(f["step"].iloc[-1] for f in runs), CURVE_POINTS
        )
        wall = np.linspace(0.0, max(f["wall_time"].iloc[-1] for f in runs), CURVE_POINTS)
        by_steps = np.vstack([_interp_until_end(steps, f["step"], f["return"]) for f in runs])
        by_wall = np.vstack([_interp_until_end(wall, f["wall_time"], f["return"]) for f in runs])
        curves[arm] = Curves(steps / workers[arm], by_steps, wall, by_wall, workers[arm])
    return CurveSet(curves, window, units)


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


def _draw_median_curve(
    axes: Any, x_steps: np.ndarray, curve: Curves, label: str, alpha: float, colour: str | None = None
) -> int:
    """A curve's median over seeds and its 95% bootstrap band on ``axes`` (over env steps
    ``x_steps``, over wall time); returns its number of seeds (one seed: no band)."""
    seeds = curve.by_steps.shape[0]
    for ax, x, values in ((axes[0], x_steps, curve.by_steps), (axes[1], curve.wall, curve.by_wall)):
        median, low, high = _median_band(values)
        (line,) = ax.plot(x, median, color=colour, label=f"{label} ({seeds} seed{'s' * (seeds > 1)})")
        if seeds > 1:
            ax.fill_between(x, low, high, alpha=alpha, color=line.get_color())
    return seeds


def _curve_ylabel(windows: set[int], units: float) -> str:
    scaled = "" if units == 1.0 else f" x {units:g} (evaluation reward scale)"
    low, high = min(windows, default=1), max(windows, default=1)
    window = f"{high}" if low == high else f"{low}-{high}"
    return f"training return{scaled},\nrolling mean of {window} episode{'s' * (high > 1)}"


def _save_curves(fig: Figure, axes: Any, steps_label: str, ylabel: str, title: str, path: Path) -> None:
    axes[0].set_xlabel(steps_label)
    axes[1].set_xlabel("wall time (s)")
    axes[0].set_ylabel(ylabel, fontsize=9)
    fig.suptitle(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_learning_curves(study: StudyConfig, study_dir: Path, ablation: str, path: Path) -> None:
    """One line per arm in one ablation row, over env steps per worker and over wall time."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    notes = []
    found = learning_curves(study, study_dir, ablation)
    for arm, curve in found.curves.items():
        if _draw_median_curve(axes, curve.steps, curve, arm, 0.25, policy_style(arm)["color"]) == 1:
            notes.append(f"{arm}: one seed, so no band")
    title = f"row {ablation} (training world): median over seeds, 95% bootstrap CI"
    title += f" ({'; '.join(notes)})" if notes else ""
    ylabel = _curve_ylabel({found.window}, found.units)
    _save_curves(fig, axes, "env steps per worker", ylabel, title, path)


def plot_row_curves(study: StudyConfig, study_dir: Path, arm: str, path: Path) -> None:
    """One line per ablation row (a sweep): median over seeds and its 95% bootstrap CI, over
    the run's env steps (all workers together) and over wall time."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    windows: set[int] = set()
    units = 1.0
    for ablation in study.ablations:
        found = learning_curves(study, study_dir, ablation)
        curve = found.curves.get(arm)
        if curve is not None:
            windows.add(found.window)
            units = found.units
            _draw_median_curve(axes, curve.steps * curve.workers, curve, ablation, alpha=0.2)
    axes[0].xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e3:g}k"))
    ylabel = _curve_ylabel(windows, units)
    title = f"{arm}: median over seeds, 95% bootstrap CI"
    _save_curves(fig, axes, "env steps (all workers)", ylabel, title, path)


def _learned_points(per_seed: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds and 95% t half-width per column of a (seeds, columns) table; the
    half-width is NaN below ``FEW_SEEDS`` seeds (the figure draws the seeds instead)."""
    n = per_seed.shape[0]
    mean = per_seed.mean().to_numpy(dtype=float)
    if n < FEW_SEEDS:
        return mean, np.full(mean.shape, np.nan)
    return mean, (sps.t.ppf(0.975, n - 1) * per_seed.std(ddof=1) / np.sqrt(n)).to_numpy(dtype=float)


def _draw_learned(ax: Any, x: np.ndarray, per_seed: pd.DataFrame, name: str) -> None:
    """A learned arm at positions ``x``: its mean with the 95% t-interval, or with its seeds as
    small points when it has fewer than ``FEW_SEEDS``."""
    style = policy_style(name)
    mean, half = _learned_points(per_seed)
    n = per_seed.shape[0]
    if n < FEW_SEEDS:
        for row in per_seed.to_numpy(dtype=float):
            ax.plot(x, row, linestyle="none", marker=".", markersize=4, color=style["color"], alpha=0.6)
        ax.plot(x, mean, linestyle="none", **style, label=f"{name} (mean; dots: its {n} seeds)")
    else:
        ax.errorbar(x, mean, yerr=half, linestyle="none", capsize=2, **style, label=f"{name} ({n} seeds)")


def yardsticks(refs: pd.DataFrame) -> list[str]:
    """The references a per-cell figure draws beside the learned arms: the best constant policy,
    the strongest rule without hidden state, the strongest privileged reference and the
    hindsight bound (each by its mean over the figure's cells), where the study has them."""
    means = refs.groupby("model")["mean_return"].mean()

    def best(names: tuple[str, ...]) -> list[str]:
        present = means.reindex([n for n in names if n in means.index]).dropna()
        return [str(present.idxmax())] if not present.empty else []

    return [
        *best(FLOOR_POLICIES),
        *best(NON_PRIVILEGED_RULES),
        *best(PRIVILEGED_POLICIES),
        *best((HINDSIGHT_BOUND,)),
    ]


def plot_per_cell(results: pd.DataFrame, ablation: str, regime: str, path: Path) -> None:
    """Greedy return per cell in one regime: every learned arm (mean and 95% t-interval over
    seeds, or its seeds as points when few) beside the yardsticks (:func:`yardsticks`); the
    report's tables hold every reference."""
    refs = results[
        (results["arm"] == REFERENCE_ARM) & (results["ablation"] == ablation) & (results["regime"] == regime)
    ]
    cells = list(dict.fromkeys(refs["cell"]))
    learned = {}
    for arm in LEARNED_ARMS:
        rows = results[
            (results["arm"] == arm)
            & (results["ablation"] == ablation)
            & (results["regime"] == regime)
            & (results["selection"] == "greedy")
        ]
        if not rows.empty:
            learned[arm] = (
                rows.groupby(["seed", "cell"])["mean_return"].mean().unstack().reindex(columns=cells)
            )
    marks = yardsticks(refs)
    fig = Figure(figsize=(max(9.0, 0.5 * len(cells) + 3), 5))
    ax = fig.subplots()
    x = np.arange(len(cells))
    spread = 0.6 / max(len(learned) + len(marks), 1)
    for i, name in enumerate(marks):
        ref = refs[refs["model"] == name].set_index("cell")["mean_return"].reindex(cells)
        ax.plot(x + (i - len(marks) / 2) * spread, ref.to_numpy(), linestyle="none", markersize=7,
                markerfacecolor="none", **policy_style(name), label=name)  # fmt: skip
    for i, (arm, per_seed) in enumerate(learned.items()):
        _draw_learned(ax, x + (i + len(marks) / 2) * spread, per_seed, arm)
    for boundary in x[:-1] + 0.5:
        ax.axvline(boundary, color="#eeeeee", lw=0.8, zorder=0)
    ax.set_xticks(x, cells, rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.5, len(cells) - 0.5)
    ax.set_ylabel("mean episode return per agent\n(evaluation reward scale)")
    ax.set_title(f"per cell, greedy, row {ablation}, {regime} cloud pools", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


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
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_forest(frames: dict[str, pd.DataFrame], path: Path) -> None:
    """A3C minus individual per ablation row with its 95% CI, one marker per cell group."""
    fig = Figure(figsize=(7, 0.45 * max(len(f) for f in frames.values()) + 1.5))
    ax = fig.subplots()
    for offset, (label, frame) in zip((-0.15, 0.15), frames.items(), strict=False):
        y = np.arange(len(frame))[::-1] + offset
        err = np.vstack([frame["gap"] - frame["ci_low"], frame["ci_high"] - frame["gap"]])
        marker = "o" if offset < 0 else "s"
        ax.errorbar(frame["gap"], y, xerr=np.nan_to_num(err), fmt=marker, capsize=3, label=label)
    first = next(iter(frames.values()))
    ax.set_yticks(np.arange(len(first))[::-1], first["ablation"])
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(
        "A3C - individual: greedy mean return, 95% Welch CI over seeds\n(each row in its training regime)"
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_normalised(results: pd.DataFrame, ablation: str, regime: str, path: Path) -> None:
    """Normalised % per learned arm (mean over seeds with its 95% t-interval, or its seeds as
    points when few) and per reference the study has, on training and held-out cells."""
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    views = [View(ablation, regime, "greedy", held_out) for held_out in (False, True)]
    present = set().union(*(reference_table(results, v).index for v in views))
    names = [*table_arms(results, ablation, regime), *(r for r in REFERENCE_ORDER if r in present)]
    label = ""
    for offset, view in zip((-0.2, 0.2), views, strict=True):
        found = view_scale(results, view)
        label = found.label.replace("1 =", "100 =")
        per_cell = reference_table(results, view)
        colour = "#1f77b4" if not view.held_out else "#ff7f0e"
        means = []
        for i, name in enumerate(names):
            if name in REFERENCE_ORDER:
                means.append(
                    found.percent(per_cell.loc[name].to_numpy()) if name in per_cell.index else np.nan
                )
                continue
            scores = seed_scores(results, name, view)
            per_seed = pd.DataFrame(100.0 * found.normalise(scores).mean(axis=1) if scores.size else [])
            mean, half = (
                _learned_points(per_seed) if len(per_seed) else (np.array([np.nan]), np.array([np.nan]))
            )
            means.append(float(mean[0]))
            if len(per_seed) < FEW_SEEDS:
                seeds = per_seed.to_numpy(dtype=float).ravel()
                ax.plot(np.full(seeds.size, i + offset), seeds, "k.", markersize=4, zorder=3)
            elif np.isfinite(half[0]):
                ax.errorbar(i + offset, mean[0], yerr=half[0], color="black", capsize=2, zorder=3)
        ax.bar(
            np.arange(len(names)) + offset,
            means,
            0.4,
            color=colour,
            label="held-out cells" if view.held_out else "training cells",
        )
    ax.set_xticks(np.arange(len(names)), names, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"normalised %, greedy\n({label})", fontsize=8)
    ax.set_title(
        f"row {ablation}, {regime} cloud pools (learned arms: 95% t-interval over seeds,"
        f" or the seeds as dots below {FEW_SEEDS})",
        fontsize=9,
    )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
