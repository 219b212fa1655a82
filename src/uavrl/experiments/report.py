"""``report.md`` and figures of a study, recomputed from its run directories.

Aggregation follows experiments.md: a model's returns are averaged over cells, the seed is the
unit. The individual arm is the mean of its N models per seed, with its best and worst model
per seed shown beside it; models are never pooled as if they were seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from scipy import stats as sps

from uavrl.envs.baselines import FLOOR_POLICIES
from uavrl.envs.scenarios import Cell, resolve_cells
from uavrl.envs.worlds import REGIMES, TRAIN_WORLD
from uavrl.experiments import stats
from uavrl.experiments.evaluate import MEC_METRICS, oracle_score
from uavrl.experiments.study import (
    LEARNED_ARMS,
    REFERENCE_ARM,
    REFERENCE_SELECTION,
    RESULTS_FILE,
    SHARED_MODEL_ARMS,
    STUDY_FILE,
    StudyConfig,
    collect_results,
    load_study,
    plan,
)

REPORT_FILE = "report.md"
BOOTSTRAP_REPS = 2000
CURVE_POINTS = 200
CURVE_WINDOW = 200  # episodes in the rolling mean of a learning curve
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
    "oracle",
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


def normalised(results: pd.DataFrame, view: View, scores: np.ndarray) -> np.ndarray:
    """Per-cell normalised scores of a (seeds, cells) matrix of the view: 0 at the floor, 1 at the
    oracle. Where a reference policy beats the greedy oracle (its threshold is tuned on the
    training cells, so in some held-out cells a rule scores more), 1 is that policy's return."""
    refs = reference_table(results, view)
    floor = refs.loc[[p for p in FLOOR_POLICIES if p in refs.index]].max()
    return stats.normalised_scores(scores, floor.to_numpy(), refs.max().to_numpy())


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


@dataclass(frozen=True)
class ArmRow:
    name: str
    summary: stats.SeedSummary
    iqm: float
    iqm_ci: tuple[float, float]
    pct_oracle: float


def arm_row(name: str, scores: np.ndarray, norm: np.ndarray, references: pd.Series) -> ArmRow:
    """Raw seed statistics; IQM and its CI on the per-cell normalised scores ``norm``."""
    summary = stats.seed_summary(scores)
    ci = stats.stratified_bootstrap_ci(norm, "iqm", BOOTSTRAP_REPS)
    return ArmRow(name, summary, stats.iqm(norm), ci, float(oracle_score(summary.mean, references)))


@dataclass(frozen=True)
class Comparison:
    """A3C minus individual on seed values: the gap with its Welch CI and the two tests."""

    gap: float
    ci: tuple[float, float]
    p_improvement: float
    welch_p: float
    mwu_p: float


def compare(
    x: np.ndarray, y: np.ndarray, x_norm: np.ndarray, y_norm: np.ndarray, level: float = 0.95
) -> Comparison:
    """Gap and tests on raw seed means; probability of improvement on normalised scores."""
    xs, ys = x.mean(axis=1), y.mean(axis=1)
    gap = float(xs.mean() - ys.mean())
    if xs.size >= 2 and ys.size >= 2:
        welch = stats.welch_t(xs, ys)
        se = np.sqrt(xs.var(ddof=1) / xs.size + ys.var(ddof=1) / ys.size)
        half = float(sps.t.ppf(0.5 + level / 2, welch.df)) * se if se > 0 else 0.0
        ci, welch_p = (gap - half, gap + half), welch.p_value
    else:
        ci, welch_p = (float("nan"), float("nan")), float("nan")
    return Comparison(
        gap,
        ci,
        stats.probability_of_improvement(x_norm, y_norm),
        welch_p,
        stats.mann_whitney_u(xs, ys).p_value,
    )


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "n/a" if not np.isfinite(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")


def _arms(results: pd.DataFrame, ablation: str, regime: str) -> list[str]:
    present = set(results.loc[results["ablation"] == ablation, "arm"])
    names = [a for a in SHARED_MODEL_ARMS if a in present]
    if "individual" in present:
        # In a shared world the individual models act as one team: no best or worst model.
        names += ["individual"] + ([INDIVIDUAL_BEST, INDIVIDUAL_WORST] if regime == "private" else [])
    return names


def headline_table(results: pd.DataFrame, view: View) -> str:
    references = reference_means(results, view)
    lines = [
        "| policy | seeds | mean | std | CV | worst seed | normalised IQM [95% CI] | % of oracle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in _arms(results, view.ablation, view.regime):
        scores = seed_scores(results, arm, view)
        if scores.size == 0:
            continue
        r = arm_row(arm, scores, normalised(results, view, scores), references)
        s = r.summary
        lines.append(
            f"| {arm} | {s.n_seeds} | {s.mean:.2f} | {_fmt(s.std)} | {_fmt(s.cv, 3)} | {s.worst:.2f} | "
            f"{r.iqm:.3f} [{r.iqm_ci[0]:.3f}, {r.iqm_ci[1]:.3f}] | {r.pct_oracle:.0f}% |"
        )
    for name in REFERENCE_ORDER:
        if name in references.index:
            pct = float(oracle_score(references[name], references))
            lines.append(f"| *{name}* | - | {references[name]:.2f} | - | - | - | - | {pct:.0f}% |")
    return "\n".join(lines)


def train_world_table(results: pd.DataFrame, ablation: str, selection: str) -> str:
    """The shared training world (N agents in their N training cells, one pool) on its own."""
    references = train_world_values(results, REFERENCE_ARM, ablation, selection)
    if references.empty:
        return ""
    lines = ["| policy | seeds | mean | worst seed | % of oracle |", "|---|---|---|---|---|"]
    for arm in _arms(results, ablation, "shared"):
        values = train_world_values(results, arm, ablation, selection)
        if not values.empty:
            pct = float(oracle_score(values.mean(), references))
            lines.append(f"| {arm} | {values.size} | {values.mean():.2f} | {values.min():.2f} | {pct:.0f}% |")
    for name in REFERENCE_ORDER:
        if name in references.index:
            pct = float(oracle_score(references[name], references))
            lines.append(f"| *{name}* | - | {references[name]:.2f} | - | {pct:.0f}% |")
    return "\n".join(lines)


def arm_comparisons(results: pd.DataFrame, view: View) -> str:
    """A3C (its equal-update variant, its relatives) against the individual arm's per-seed
    model mean."""
    y = seed_scores(results, "individual", view)
    lines = [
        "| comparison | gap [95% CI] | P(X > Y) | Welch p | MWU p |",
        "|---|---|---|---|---|",
    ]
    for arm in SHARED_MODEL_ARMS:
        x = seed_scores(results, arm, view)
        if x.size == 0 or y.size == 0:
            continue
        c = compare(x, y, normalised(results, view, x), normalised(results, view, y))
        lines.append(
            f"| {arm} vs individual | {c.gap:+.2f} [{_fmt(c.ci[0])}, {_fmt(c.ci[1])}] | "
            f"{c.p_improvement:.2f} | {_p(c.welch_p)} | {_p(c.mwu_p)} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def comparison_rows(results: pd.DataFrame, selection: str, held_out: bool) -> pd.DataFrame:
    """A3C vs individual per ablation row, each in its training regime, with Holm-adjusted
    p-values across rows."""
    rows = []
    for ablation, regime in training_regimes(results[results["arm"] != REFERENCE_ARM]).items():
        view = View(ablation, regime, selection, held_out)
        x = seed_scores(results, "a3c", view)
        y = seed_scores(results, "individual", view)
        if x.size == 0 or y.size == 0:
            continue
        c = compare(x, y, normalised(results, view, x), normalised(results, view, y))
        rows.append(
            {
                "ablation": ablation,
                "regime": regime,
                "a3c": x.mean(),
                "individual": y.mean(),
                "gap": c.gap,
                "ci_low": c.ci[0],
                "ci_high": c.ci[1],
                "p_improvement": c.p_improvement,
                "welch_p": c.welch_p,
                "mwu_p": c.mwu_p,
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        for test in ("welch_p", "mwu_p"):
            finite = frame[test].notna()
            frame[f"{test}_holm"] = np.nan
            frame.loc[finite, f"{test}_holm"] = stats.holm(frame.loc[finite, test].to_numpy())
    return frame


def comparison_table(frame: pd.DataFrame) -> str:
    lines = [
        "| ablation | pools | A3C | individual | gap [95% CI] | P(A3C > ind.) "
        "| Welch p (Holm) | MWU p (Holm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in frame.to_dict("records"):
        lines.append(
            f"| {r['ablation']} | {r['regime']} | {r['a3c']:.2f} | {r['individual']:.2f} | {r['gap']:+.2f} "
            f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['p_improvement']:.2f} | "
            f"{_p(r['welch_p'])} ({_p(r['welch_p_holm'])}) | {_p(r['mwu_p'])} ({_p(r['mwu_p_holm'])}) |"
        )
    return "\n".join(lines)


def own_cell_table(study: StudyConfig, results: pd.DataFrame, study_dir: Path, selection: str) -> str:
    """Individual models alone (private pools): on their own training cell, on the other
    training cells, on held-out cells; means over seeds and models."""
    lines = ["| ablation | own cell | other training cells | held-out cells |", "|---|---|---|---|"]
    for ablation in study.ablations:
        runs = [r for r in plan(study, study_dir) if r.arm == "individual" and r.ablation == ablation]
        rows = results[
            (results["arm"] == "individual")
            & (results["ablation"] == ablation)
            & (results["regime"] == "private")
            & (results["selection"] == selection)
        ]
        if rows.empty or not runs or not runs[0].config.env.worker_cells:
            continue
        cells = runs[0].config.env.worker_cells
        own_of = {
            f"individual_w{i}": resolve_cells(cells[i] if len(cells) > 1 else cells[0])[0].name
            for i in range(runs[0].config.runner.n_workers)
        }
        own = rows["cell"] == rows["model"].map(own_of)
        groups = (own, ~own & ~rows["held_out"].astype(bool), rows["held_out"].astype(bool))
        means = [rows.loc[g, "mean_return"].mean() if g.any() else float("nan") for g in groups]
        lines.append(f"| {ablation} | " + " | ".join(_fmt(m) for m in means) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


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
        log = run.run_dir / "training_log.csv"
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
            low[i], high[i] = stats.stratified_bootstrap_ci(values, "median", 500)
    return median, low, high


def plot_learning_curves(study: StudyConfig, study_dir: Path, ablation: str, path: Path) -> None:
    fig = Figure(figsize=(11, 4))
    by_steps_ax, by_wall_ax = fig.subplots(1, 2, sharey=True)
    notes = []
    for arm, curve in learning_curves(study, study_dir, ablation).items():
        seeds = curve.by_steps.shape[0]
        for ax, x, values in (
            (by_steps_ax, curve.steps, curve.by_steps),
            (by_wall_ax, curve.wall, curve.by_wall),
        ):
            median, low, high = _median_band(values)
            (line,) = ax.plot(x, median, label=f"{arm} ({seeds} seed{'s' * (seeds > 1)})")
            if seeds > 1:
                ax.fill_between(x, low, high, alpha=0.25, color=line.get_color())
        if seeds == 1:
            notes.append(f"{arm}: one seed, so no band")
    by_steps_ax.set_xlabel("env steps per worker")
    by_wall_ax.set_xlabel("wall time (s)")
    by_steps_ax.set_ylabel(f"training return, rolling mean of {CURVE_WINDOW} episodes")
    title = f"row {ablation} (training world): median over seeds, 95% bootstrap CI"
    fig.suptitle(title + (f" ({'; '.join(notes)})" if notes else ""), fontsize=9)
    by_steps_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_row_curves(study: StudyConfig, study_dir: Path, arm: str, path: Path) -> None:
    """One line per ablation row (a sweep): median over seeds and its 95% bootstrap CI, over
    the run's env steps (all workers together) and over wall time."""
    fig = Figure(figsize=(11, 4))
    by_steps_ax, by_wall_ax = fig.subplots(1, 2, sharey=True)
    for ablation in study.ablations:
        curve = learning_curves(study, study_dir, ablation).get(arm)
        if curve is None:
            continue
        seeds = curve.by_steps.shape[0]
        for ax, x, values in (
            (by_steps_ax, curve.steps * curve.workers, curve.by_steps),
            (by_wall_ax, curve.wall, curve.by_wall),
        ):
            median, low, high = _median_band(values)
            (line,) = ax.plot(x, median, label=f"{ablation} ({seeds} seed{'s' * (seeds > 1)})")
            if seeds > 1:
                ax.fill_between(x, low, high, alpha=0.2, color=line.get_color())
    by_steps_ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1e3:g}k"))
    by_steps_ax.set_xlabel("env steps (all workers)")
    by_wall_ax.set_xlabel("wall time (s)")
    by_steps_ax.set_ylabel(f"training return, rolling mean of {CURVE_WINDOW} episodes")
    fig.suptitle(f"{arm}: median over seeds, 95% bootstrap CI", fontsize=9)
    by_steps_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def final_returns_table(study: StudyConfig, results: pd.DataFrame) -> str:
    """Per row and arm: the final model's evaluation return, mean over seeds with a 95%
    bootstrap CI over seeds, for each selection, beside each reference policy of the row (the
    random policy; for `mec`, its rules too) (Markdown)."""
    selections = study.evaluation.selections
    learned = results[results["arm"] != REFERENCE_ARM]
    references = results[results["arm"] == REFERENCE_ARM]
    rules = list(dict.fromkeys(references["model"]))
    header = ["row", "arm", "workers", "rollout", "seeds"] + [f"{s} mean [95% CI]" for s in selections]
    header += [f"*{rule}*" for rule in rules]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    configs = {(r.ablation, r.arm): r.config for r in plan(study, Path("."))}
    for (ablation, arm), group in learned.groupby(["ablation", "arm"], sort=False):
        config = configs[(str(ablation), str(arm))]
        cells = [str(ablation), str(arm), str(config.runner.n_workers), str(config.algo.rollout_length)]
        seeds = 0
        for selection in selections:
            per_seed = group[group["selection"] == selection].groupby("seed")["mean_return"].mean()
            seeds = max(seeds, len(per_seed))
            if per_seed.empty:
                cells.append("")
                continue
            values = per_seed.to_numpy()[:, None]
            text = _fmt(float(values.mean()))
            if len(values) > 1:
                low, high = stats.stratified_bootstrap_ci(values, "mean", BOOTSTRAP_REPS)
                text += f" [{_fmt(low)}, {_fmt(high)}]"
            cells.append(text)
        cells.insert(4, str(seeds))
        for rule in rules:
            value = references.loc[
                (references["ablation"] == ablation) & (references["model"] == rule), "mean_return"
            ]
            cells.append(f"*{_fmt(float(value.mean()))}*" if not value.empty else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_metrics_table(results: pd.DataFrame) -> str:
    """Per row and arm, the greedy final models' task metrics (mean over seeds), then each
    reference policy's (once where rows share its values) (Markdown; a `mec` study)."""
    metrics = [m for m in MEC_METRICS if m in results]
    learned = results[(results["arm"] != REFERENCE_ARM) & (results["selection"] == "greedy")]
    references = results[results["arm"] == REFERENCE_ARM].drop_duplicates(["model", *metrics])
    lines = ["| row | policy | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for (ablation, arm), group in learned.groupby(["ablation", "arm"], sort=False):
        per_seed = group.groupby("seed")[metrics].mean()
        lines.append(f"| {ablation} | {arm} | " + " | ".join(_fmt(v, 3) for v in per_seed.mean()) + " |")
    for _, ref in references.iterrows():
        values = " | ".join(f"*{_fmt(float(ref[m]), 3)}*" for m in metrics)
        lines.append(f"| {ref['ablation']} | *{ref['model']}* | {values} |")
    return "\n".join(lines)


def _runs_line(study: StudyConfig, study_dir: Path, results: pd.DataFrame) -> str:
    """How many runs are evaluated, seeds per arm and env steps per worker (a report's opening)."""
    evaluated = results.loc[results["arm"] != REFERENCE_ARM, ["arm", "ablation", "seed"]].drop_duplicates()
    return (
        f"{len(evaluated)} of {len(plan(study, study_dir))} runs evaluated; {study.seeds} seed(s) per "
        f"arm, {study.env_steps_per_worker:,} env steps per worker"
    )


def write_env_report(study: StudyConfig, study_dir: Path, results: pd.DataFrame) -> Path:
    """``report.md`` of a study on an env without scenario cells: final returns per row and
    arm with CIs over seeds, and learning curves per arm with one line per row."""
    env = study.base["env"]["id"]
    out = [
        f"# Study `{study.name}` on `{env}`",
        "",
        f"{_runs_line(study, study_dir, results)} (a row with more workers trains on more env "
        f"steps); evaluation: {study.evaluation.episodes} episodes of the final model, "
        f"seed {study.evaluation.seed}, the same streams for every policy. CIs: percentile "
        f"bootstrap over seeds ({BOOTSTRAP_REPS} resamples); a seed is the unit.",
        "",
        "## Final returns",
        "",
        final_returns_table(study, results),
        "",
    ]
    if MEC_METRICS[0] in results:
        out += [
            "## Task metrics, greedy (latency in s, energy in J per task)",
            "",
            task_metrics_table(results),
            "",
        ]
    out += ["## Figures", ""]
    for arm in study.arms:
        name = f"curves_{arm}.png"
        plot_row_curves(study, study_dir, arm, study_dir / name)
        out += [f"![{name}]({name})", ""]
    path = study_dir / REPORT_FILE
    path.write_text("\n".join(out))
    return path


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
    report's statistics are: 0 at its best floor policy, 100 at its best reference policy (the
    oracle, or a rule where one beats the greedy oracle)."""
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
    references = table[[c for c in REFERENCE_ORDER if c in table]]
    floor = references[[p for p in FLOOR_POLICIES if p in references]].max(axis=1)
    span = (references.max(axis=1) - floor).where(lambda x: x > 0)  # no scale where no rule beats the floor
    scores = 100.0 * table.sub(floor, axis=0).div(span, axis=0)
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
    fig.colorbar(image, ax=ax, label="normalised score, % (0: best floor policy, 100: best reference)")
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


def plot_percent_of_oracle(results: pd.DataFrame, ablation: str, regime: str, path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    names = [*_arms(results, ablation, regime), *REFERENCE_ORDER]
    for offset, held_out in ((-0.2, False), (0.2, True)):
        view = View(ablation, regime, "greedy", held_out)
        references = reference_means(results, view)
        means, halves = [], []
        for name in names:
            if name in REFERENCE_ORDER:
                means.append(float(oracle_score(references.get(name, np.nan), references)))
                halves.append(0.0)
                continue
            values = np.asarray(oracle_score(seed_scores(results, name, view).mean(axis=1), references))
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
    ax.set_ylabel("% of oracle (greedy)")
    ax.set_title(f"row {ablation}, {regime} cloud pools")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _headline_section(
    results: pd.DataFrame, ablation: str, regime: str, transfer: bool, selection: str
) -> list[str]:
    how = "transfer: evaluated in the regime it did not train in" if transfer else "its training regime"
    out = []
    for held_out, label in ((False, "training cells"), (True, "held-out cells")):
        view = View(ablation, regime, selection, held_out)
        if view.select(results, REFERENCE_ARM).empty:
            continue
        out += [
            f"### Row `{ablation}`, {regime} cloud pools ({how}), {label}, {selection}",
            "",
            headline_table(results, view),
            "",
            arm_comparisons(results, view),
            "",
        ]
    if regime == "shared":
        out += [
            f"### Row `{ablation}`, shared cloud pools, the training world itself, {selection}",
            "",
            "N agents, each in its worker's training cell, on one pool per episode.",
            "",
            train_world_table(results, ablation, selection),
            "",
        ]
    return out


def headline_summary(study_dir: Path) -> str:
    """The headline tables of a study whose report was written: every headline row in its
    training regime, greedy, training and held-out cells (Markdown); for an env without cells,
    the final returns of every row."""
    study = load_study(study_dir / STUDY_FILE)
    results = pd.read_csv(study_dir / RESULTS_FILE)
    if not plan(study, study_dir)[0].config.env.is_paper:
        return final_returns_table(study, results)
    regimes = training_regimes(results)
    out = []
    for ablation in study.headline_rows or [next(iter(study.ablations))]:
        if ablation not in regimes:
            continue
        for held_out, label in ((False, "training cells"), (True, "held-out cells")):
            view = View(ablation, regimes[ablation], "greedy", held_out)
            if not view.select(results, REFERENCE_ARM).empty:
                out += [
                    f"Row {ablation}, {regimes[ablation]} cloud pools, {label}, greedy:",
                    headline_table(results, view),
                    "",
                ]
    return "\n".join(out)


def write_report(study_dir: Path) -> Path:
    """Recompute ``results.csv`` from the run directories and write ``report.md`` + figures."""
    study = load_study(study_dir / STUDY_FILE)
    results = collect_results(study, study_dir)
    if not plan(study, study_dir)[0].config.env.is_paper:
        return write_env_report(study, study_dir, results)
    regimes = training_regimes(results)
    baseline = next(iter(study.ablations))
    out = [
        f"# Study `{study.name}`",
        "",
        f"{_runs_line(study, study_dir, results)}; evaluation: {study.evaluation.episodes} "
        f"episodes per cell, seed {study.evaluation.seed}, same streams for every policy, env "
        f"parameters {study.evaluation.env_params}.",
        "",
        "Every run is judged in the world it trained in: its pool regime (`shared`: N agents on one "
        "cloud pool, a cell meaning N agents in that cell; `private`: each agent alone) and its own "
        "training cells (its `worker_cells`; every other cell is held out). The other regime is "
        "reported as a transfer result. Reference thresholds are tuned per row and regime, on the "
        "row's training cells only. Seed-level statistics: a model's mean over cells, then seeds; "
        "the individual arm is the mean of its models per seed (best/worst model beside it when "
        "private). IQM, its CI (stratified bootstrap, "
        f"{BOOTSTRAP_REPS} resamples) and P(X > Y) use per-cell normalised scores "
        "`(J - J_floor) / (J_oracle - J_floor)` (where a rule beats the greedy oracle in a held-out "
        "cell, that rule's return is the top); means, gaps and tests use raw returns. "
        "Reference policies in italics.",
        "",
    ]
    if study.seeds < 10:
        out += [f"**{study.seeds} seeds only**: too few for firm conclusions (the protocol asks 10).", ""]
    figures: dict[str, Callable[[Path], None]] = {
        "learning_curves.png": lambda p: plot_learning_curves(study, study_dir, baseline, p),
    }
    for ablation in study.headline_rows or [baseline]:
        if ablation not in regimes:
            continue
        own = regimes[ablation]
        other = next(r for r in REGIMES if r != own)
        out += [f"## Row `{ablation}` (trained with {own} cloud pools)", ""]
        for selection in study.evaluation.selections:
            out += _headline_section(results, ablation, own, False, selection)
        out += _headline_section(results, ablation, other, True, "greedy")
        for regime in (own, other):
            figures[f"per_cell_{ablation}_{regime}.png"] = functools.partial(
                plot_per_cell, results, ablation, regime
            )
            figures[f"heatmap_{ablation}_{regime}.png"] = functools.partial(
                plot_heatmap, results, ablation, regime
            )
        figures[f"percent_of_oracle_{ablation}_{own}.png"] = functools.partial(
            plot_percent_of_oracle, results, ablation, own
        )
    forest: dict[str, pd.DataFrame] = {}
    for held_out, label in ((True, "held-out cells"), (False, "training cells")):
        frame = comparison_rows(results, "greedy", held_out)
        forest[label] = frame
        out += [
            f"## A3C vs individual per ablation row, {label}, greedy, each row in its training regime",
            "",
            "Gap = A3C minus the individual arm's per-seed model mean (raw returns); CI from "
            "Welch's t; P(A3C > ind.) on normalised scores; p-values Holm-corrected across rows.",
            "",
            comparison_table(frame),
            "",
        ]
    own_cells = own_cell_table(study, results, study_dir, "greedy")
    if own_cells:
        out += [
            "## Individual models on their own cell, private cloud pools, greedy",
            "",
            "Mean return of each individual model alone: on the cell its worker trained in, on the "
            "other training cells, on held-out cells (means over seeds and models).",
            "",
            own_cells,
            "",
        ]
    figures["gap_forest.png"] = lambda p: plot_forest(forest, p)
    for name, draw in figures.items():
        draw(study_dir / name)
    out += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    path = study_dir / REPORT_FILE
    path.write_text("\n".join(out))
    return path
