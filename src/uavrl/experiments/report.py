"""``report.md`` and figures of a study, recomputed from its run directories.

Aggregation follows experiments.md: a model's returns are averaged over cells, the seed is the
unit. The individual arm is the mean of its N models per seed, with its best and worst model
per seed shown beside it; models are never pooled as if they were seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats as sps

from uavrl.experiments import stats
from uavrl.experiments.evaluate import oracle_score
from uavrl.experiments.study import (
    REFERENCE_ARM,
    REFERENCES_FILE,
    STUDY_FILE,
    StudyConfig,
    collect_results,
    load_study,
    plan,
)

REPORT_FILE = "report.md"
BOOTSTRAP_REPS = 2000
CURVE_BINS = 40
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


def seed_scores(results: pd.DataFrame, arm: str, ablation: str, selection: str, held_out: bool) -> np.ndarray:
    """(seeds, cells) matrix of one arm; ``individual`` averages its models per seed and cell.

    ``arm`` may also be :data:`INDIVIDUAL_BEST` / :data:`INDIVIDUAL_WORST`: per seed the
    individual model with the highest / lowest mean over these cells.
    """
    source = "individual" if arm in (INDIVIDUAL_BEST, INDIVIDUAL_WORST) else arm
    rows = results[
        (results["arm"] == source)
        & (results["ablation"] == ablation)
        & (results["selection"] == selection)
        & (results["held_out"] == held_out)
    ]
    if rows.empty:
        return np.empty((0, 0))
    table = rows.pivot_table(index=["seed", "model"], columns="cell", values="mean_return", aggfunc="mean")
    if arm == source:
        return table.groupby(level="seed").mean().to_numpy()
    per_model = table.mean(axis=1)
    pick = (
        per_model.groupby(level="seed").idxmax
        if arm == INDIVIDUAL_BEST
        else per_model.groupby(level="seed").idxmin
    )
    return table.loc[pick().to_list()].to_numpy()


def reference_means(results: pd.DataFrame, held_out: bool) -> pd.Series:
    """Mean over cells of every reference policy."""
    rows = results[(results["arm"] == REFERENCE_ARM) & (results["held_out"] == held_out)]
    return rows.groupby("model")["mean_return"].mean()


@dataclass(frozen=True)
class ArmRow:
    name: str
    summary: stats.SeedSummary
    iqm: float
    iqm_ci: tuple[float, float]
    pct_oracle: float


def arm_row(name: str, scores: np.ndarray, references: pd.Series) -> ArmRow:
    summary = stats.seed_summary(scores)
    ci = stats.stratified_bootstrap_ci(scores, "iqm", BOOTSTRAP_REPS)
    return ArmRow(name, summary, stats.iqm(scores), ci, float(oracle_score(summary.mean, references)))


@dataclass(frozen=True)
class Comparison:
    """A3C minus individual on seed values: the gap with its Welch CI and the two tests."""

    gap: float
    ci: tuple[float, float]
    p_improvement: float
    welch_p: float
    mwu_p: float


def compare(x: np.ndarray, y: np.ndarray, level: float = 0.95) -> Comparison:
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
        stats.probability_of_improvement(x, y),
        welch_p,
        stats.mann_whitney_u(xs, ys).p_value,
    )


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "n/a" if not np.isfinite(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")


def _arms(results: pd.DataFrame, ablation: str) -> list[str]:
    present = set(results.loc[results["ablation"] == ablation, "arm"])
    names = [a for a in ("a3c", "a3c_equal_updates") if a in present]
    if "individual" in present:
        names += ["individual", INDIVIDUAL_BEST, INDIVIDUAL_WORST]
    return names


def headline_table(results: pd.DataFrame, ablation: str, selection: str, held_out: bool) -> str:
    references = reference_means(results, held_out)
    lines = [
        "| policy | seeds | mean | std | CV | worst seed | IQM [95% CI] | % of oracle |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in _arms(results, ablation):
        scores = seed_scores(results, arm, ablation, selection, held_out)
        if scores.size == 0:
            continue
        r = arm_row(arm, scores, references)
        s = r.summary
        lines.append(
            f"| {arm} | {s.n_seeds} | {s.mean:.2f} | {_fmt(s.std)} | {_fmt(s.cv, 3)} | {s.worst:.2f} | "
            f"{r.iqm:.2f} [{r.iqm_ci[0]:.2f}, {r.iqm_ci[1]:.2f}] | {r.pct_oracle:.0f}% |"
        )
    for name in REFERENCE_ORDER:
        if name in references.index:
            pct = float(oracle_score(references[name], references))
            lines.append(f"| *{name}* | - | {references[name]:.2f} | - | - | - | - | {pct:.0f}% |")
    return "\n".join(lines)


def arm_comparisons(results: pd.DataFrame, ablation: str, selection: str, held_out: bool) -> str:
    """A3C (and its equal-update variant) against the individual arm's per-seed model mean."""
    y = seed_scores(results, "individual", ablation, selection, held_out)
    lines = [
        "| comparison | gap [95% CI] | P(X > Y) | Welch p | MWU p |",
        "|---|---|---|---|---|",
    ]
    for arm in ("a3c", "a3c_equal_updates"):
        x = seed_scores(results, arm, ablation, selection, held_out)
        if x.size == 0 or y.size == 0:
            continue
        c = compare(x, y)
        lines.append(
            f"| {arm} vs individual | {c.gap:+.2f} [{_fmt(c.ci[0])}, {_fmt(c.ci[1])}] | "
            f"{c.p_improvement:.2f} | {_p(c.welch_p)} | {_p(c.mwu_p)} |"
        )
    return "\n".join(lines) if len(lines) > 2 else ""


def comparison_rows(results: pd.DataFrame, selection: str, held_out: bool) -> pd.DataFrame:
    """A3C vs individual per ablation row, with Holm-adjusted p-values across rows."""
    rows = []
    for ablation in dict.fromkeys(results.loc[results["arm"] != REFERENCE_ARM, "ablation"]):
        x = seed_scores(results, "a3c", ablation, selection, held_out)
        y = seed_scores(results, "individual", ablation, selection, held_out)
        if x.size == 0 or y.size == 0:
            continue
        c = compare(x, y)
        rows.append(
            {
                "ablation": ablation,
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
        "| ablation | A3C | individual | gap [95% CI] | P(A3C > ind.) | Welch p (Holm) | MWU p (Holm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in frame.to_dict("records"):
        lines.append(
            f"| {r['ablation']} | {r['a3c']:.2f} | {r['individual']:.2f} | {r['gap']:+.2f} "
            f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {r['p_improvement']:.2f} | "
            f"{_p(r['welch_p'])} ({_p(r['welch_p_holm'])}) | {_p(r['mwu_p'])} ({_p(r['mwu_p_holm'])}) |"
        )
    return "\n".join(lines)


def learning_curves(
    study: StudyConfig, study_dir: Path, ablation: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per arm: env steps per worker at the bin ends (bins,) and the mean training episode
    return per bin of every seed (seeds, bins)."""
    curves: dict[str, list[np.ndarray]] = {}
    steps: dict[str, np.ndarray] = {}
    for run in plan(study, study_dir):
        log = run.run_dir / "training_log.csv"
        if run.ablation != ablation or not log.exists():
            continue
        frame = pd.read_csv(log, usecols=["step", "return"])
        total = run.config.runner.total_env_steps
        edges = np.linspace(0, total, CURVE_BINS + 1)
        bins = np.clip(np.digitize(frame["step"], edges[1:-1]), 0, CURVE_BINS - 1)
        means = frame.groupby(bins)["return"].mean().reindex(range(CURVE_BINS))
        curves.setdefault(run.arm, []).append(means.to_numpy(dtype=np.float64))
        steps[run.arm] = edges[1:] / run.config.runner.n_workers
    return {arm: (steps[arm], np.vstack(rows)) for arm, rows in curves.items()}


def plot_learning_curves(study: StudyConfig, study_dir: Path, ablation: str, path: Path) -> None:
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for arm, (steps, curves) in learning_curves(study, study_dir, ablation).items():
        median, low, high = np.full((3, CURVE_BINS), np.nan)
        for b, column in enumerate(curves.T):
            values = column[np.isfinite(column)]
            if values.size:
                median[b] = np.median(values)
                low[b], high[b] = stats.stratified_bootstrap_ci(values, "median", 1000)
        ax.plot(steps, median, label=f"{arm} ({curves.shape[0]} seeds)")
        ax.fill_between(steps, low, high, alpha=0.25)
    ax.set_xlabel("env steps per worker")
    ax.set_ylabel("training episode return (training reward scale)")
    ax.set_title(f"learning curves, row {ablation}: median and 95% CI over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_per_cell(results: pd.DataFrame, references: pd.DataFrame, ablation: str, path: Path) -> None:
    """Greedy return per cell: learned arms (mean and t-CI over seeds) and reference policies."""
    cells = list(dict.fromkeys(references["cell"]))
    series: list[tuple[str, np.ndarray, np.ndarray]] = []
    for arm in ("a3c", "individual"):
        rows = results[
            (results["arm"] == arm) & (results["ablation"] == ablation) & (results["selection"] == "greedy")
        ]
        if rows.empty:
            continue
        per_seed = rows.groupby(["seed", "cell"])["mean_return"].mean().unstack()[cells]
        n = per_seed.shape[0]
        half = sps.t.ppf(0.975, n - 1) * per_seed.std(ddof=1) / np.sqrt(n) if n > 1 else per_seed.mean() * 0
        series.append((arm, per_seed.mean().to_numpy(), half.to_numpy()))
    for name in REFERENCE_ORDER:
        ref = references[references["policy"] == name].set_index("cell").reindex(cells)
        if ref["mean"].notna().any():
            series.append((name, ref["mean"].to_numpy(), (ref["ci_high"] - ref["mean"]).to_numpy()))
    fig = Figure(figsize=(max(10.0, 0.45 * len(cells)), 5))
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(cells))
    for i, (name, mean, half) in enumerate(series):
        ax.bar(x + i * width, mean, width, yerr=half, label=name, capsize=1.5)
    ax.set_xticks(x + 0.4 - width / 2, cells, rotation=75, fontsize=7)
    ax.set_ylabel("mean episode return (evaluation reward scale)")
    ax.set_title(f"per cell, greedy, row {ablation}: 95% CI (over seeds for learned policies)")
    ax.legend(fontsize=7, ncol=3)
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
    ax.set_xlabel("A3C - individual, greedy mean return (95% Welch CI over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_percent_of_oracle(results: pd.DataFrame, ablation: str, path: Path) -> None:
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    names = [*_arms(results, ablation), *REFERENCE_ORDER]
    for offset, held_out in ((-0.2, False), (0.2, True)):
        references = reference_means(results, held_out)
        means, halves = [], []
        for name in names:
            if name in REFERENCE_ORDER:
                means.append(float(oracle_score(references.get(name, np.nan), references)))
                halves.append(0.0)
                continue
            values = np.asarray(
                oracle_score(
                    seed_scores(results, name, ablation, "greedy", held_out).mean(axis=1), references
                )
            )
            n = values.size
            means.append(float(values.mean()))
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
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(study_dir: Path) -> Path:
    """Recompute ``results.csv`` from the run directories and write ``report.md`` + figures."""
    study = load_study(study_dir / STUDY_FILE)
    results = collect_results(study, study_dir)
    references = pd.read_csv(study_dir / REFERENCES_FILE)
    baseline = next(iter(study.ablations))
    evaluated = results.loc[results["arm"] != REFERENCE_ARM, ["arm", "ablation", "seed"]].drop_duplicates()
    out = [
        f"# Study `{study.name}`",
        "",
        f"{len(evaluated)} of {len(plan(study, study_dir))} runs evaluated; {study.seeds} seed(s) per arm, "
        f"{study.env_steps_per_worker:,} env steps per worker; evaluation: {study.evaluation.episodes} "
        f"episodes per cell, seed {study.evaluation.seed}, same streams for every policy, env "
        f"parameters {study.evaluation.env_params}. Seed-level statistics: a model's mean over cells, "
        "then seeds; the individual arm is the mean of its models per seed (best/worst model shown "
        f"beside it). IQM CIs: stratified bootstrap ({BOOTSTRAP_REPS} resamples). Reference policies "
        "in italics.",
        "",
    ]
    if study.seeds < 10:
        out += [f"**{study.seeds} seeds only**: too few for firm conclusions (the protocol asks 10).", ""]
    figures = {
        "learning_curves.png": lambda p: plot_learning_curves(study, study_dir, baseline, p),
        "per_cell.png": lambda p: plot_per_cell(results, references, baseline, p),
        "percent_of_oracle.png": lambda p: plot_percent_of_oracle(results, baseline, p),
    }
    for selection in study.evaluation.selections:
        for held_out, label in ((False, "training cells"), (True, "held-out cells")):
            out += [
                f"## {label.capitalize()}, {selection} selection, row `{baseline}`",
                "",
                headline_table(results, baseline, selection, held_out),
                "",
                arm_comparisons(results, baseline, selection, held_out),
                "",
            ]
    forest: dict[str, pd.DataFrame] = {}
    for held_out, label in ((True, "held-out cells"), (False, "training cells")):
        frame = comparison_rows(results, "greedy", held_out)
        forest[label] = frame
        out += [
            f"## A3C vs individual per ablation row, {label}, greedy",
            "",
            "Gap = A3C minus the individual arm's per-seed model mean; CI from Welch's t; "
            "p-values Holm-corrected across rows.",
            "",
            comparison_table(frame),
            "",
        ]
    figures["gap_forest.png"] = lambda p: plot_forest(forest, p)
    for name, draw in figures.items():
        draw(study_dir / name)
    out += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    path = study_dir / REPORT_FILE
    path.write_text("\n".join(out))
    return path
