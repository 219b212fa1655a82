"""``report.md`` and figures of a study, recomputed from its run directories.

Aggregation follows experiments.md: a model's returns are averaged over cells, the seed is the
unit. The individual arm is the mean of its N models per seed, with its best and worst model
per seed shown beside it; models are never pooled as if they were seeds.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from uavrl.envs.scenarios import resolve_cells
from uavrl.envs.worlds import REGIMES
from uavrl.experiments import stats
from uavrl.experiments.figures import (
    plot_forest,
    plot_heatmap,
    plot_learning_curves,
    plot_normalised,
    plot_per_cell,
    plot_row_curves,
)
from uavrl.experiments.normalise import scale
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.scores import (
    NON_PRIVILEGED_RULES,
    REFERENCE_ORDER,
    View,
    normalised,
    reference_means,
    reference_table,
    seed_scores,
    table_arms,
    train_world_values,
    training_regimes,
    view_scale,
)
from uavrl.experiments.study import (
    CONFIRMATORY_FILE,
    INDIVIDUAL_ARMS,
    REFERENCE_ARM,
    REFERENCES_FILE,
    REFERENCES_META_FILE,
    RESULTS_FILE,
    SHARED_MODEL_ARMS,
    STUDY_FILE,
    StudyConfig,
    collect_results,
    load_study,
    metric_columns,
    plan,
    study_standing,
)
from uavrl.fileio import write_atomically

REPORT_FILE = "report.md"
PROVENANCE_FILE = "provenance.json"
PUBLISHED_FILES = (
    REFERENCES_FILE,
    REFERENCES_META_FILE,
    REPORT_FILE,
    STUDY_FILE,
    CONFIRMATORY_FILE,
)

BOOTSTRAP_REPS = 2000


@dataclass(frozen=True)
class ArmRow:
    name: str
    summary: stats.SeedSummary
    iqm: float
    iqm_ci: tuple[float, float]
    percent: float


def arm_row(name: str, scores: np.ndarray, norm: np.ndarray) -> ArmRow:
    """Raw seed statistics; IQM, its CI and the normalised % on the per-cell normalised
    scores ``norm``."""
    summary = stats.seed_summary(scores)
    ci = stats.seed_bootstrap_ci(norm, "iqm", BOOTSTRAP_REPS)
    return ArmRow(name, summary, stats.iqm(norm), ci, float(100.0 * norm.mean()))


@dataclass(frozen=True)
class RuleTest:
    """A learned arm against the strongest tuned rule of a view, paired over seeds: each seed's
    mean over cells minus the rule's, on the same evaluation streams (common random numbers)."""

    arm: str
    rule: str
    gap: float
    ci: tuple[float, float]
    p_one_sided: float


def strongest_rule(results: pd.DataFrame, view: View) -> str | None:
    """The non-privileged rule with the highest mean over the view's cells."""
    means = reference_means(results, view)
    rules = [r for r in NON_PRIVILEGED_RULES if r in means.index]
    return max(rules, key=lambda r: means[r]) if rules else None


def rule_test(
    arm: str, scores: np.ndarray, rule: str, rule_returns: np.ndarray, level: float = 0.95
) -> RuleTest:
    """H1: the arm's mean return over the view's cells exceeds the rule's; one-sided paired t
    test over seeds of ``mean_c(J_arm[s, c] - J_rule[c])``, with a two-sided ``level`` CI."""
    diffs = (scores - rule_returns).mean(axis=1)
    gap = float(diffs.mean())
    if diffs.size < 2:
        return RuleTest(arm, rule, gap, (float("nan"), float("nan")), float("nan"))
    se = float(diffs.std(ddof=1) / np.sqrt(diffs.size))
    if se == 0.0:
        return RuleTest(arm, rule, gap, (gap, gap), 0.0 if gap > 0 else 1.0)
    half = float(sps.t.ppf(0.5 + level / 2, diffs.size - 1)) * se
    p = float(sps.t.sf(gap / se, diffs.size - 1))
    return RuleTest(arm, rule, gap, (gap - half, gap + half), p)


def rule_tests(results: pd.DataFrame, view: View) -> list[RuleTest]:
    """Every learned arm of the view against its strongest rule."""
    rule = strongest_rule(results, view)
    if rule is None:
        return []
    rule_returns = reference_table(results, view).loc[rule].to_numpy()
    tests = []
    for arm in table_arms(results, view.ablation, view.regime):
        scores = seed_scores(results, arm, view)
        if scores.size:
            tests.append(rule_test(arm, scores, rule, rule_returns))
    return tests


# how rule_test_table's lines are computed, said above each one in a report
RULE_TEST_METHOD = (
    "The headline claim as a test of its own: per seed, the arm's mean over the cells minus the "
    "strongest rule's (the non-privileged rule "
    "with the highest mean there, tuned on the row's training cells), on the same evaluation "
    "streams; one-sided paired t test over seeds (H1: the arm scores more), Holm-adjusted over "
    "the lines of the table."
)


def rule_test_table(results: pd.DataFrame, views: list[View]) -> str:
    """The headline claim "learned beats the strongest tuned rule", one line per (view, arm),
    its one-sided p-values Holm-adjusted together (Markdown)."""
    found = [(view, t) for view in views for t in rule_tests(results, view)]
    if not found:
        return ""
    finite = [i for i, (_, t) in enumerate(found) if np.isfinite(t.p_one_sided)]
    adjusted = np.full(len(found), np.nan)
    adjusted[finite] = stats.holm([found[i][1].p_one_sided for i in finite])
    lines = [
        "| cells | selection | arm | strongest rule | gap [95% CI] | one-sided p | Holm p |",
        "|---|---|---|---|---|---|---|",
    ]
    for (view, t), p_holm in zip(found, adjusted, strict=True):
        cells = "held-out" if view.held_out else "training"
        lines.append(
            f"| {cells} | {view.selection} | {t.arm} | {t.rule} | {t.gap:+.2f} [{_fmt(t.ci[0])}, "
            f"{_fmt(t.ci[1])}] | {_p(t.p_one_sided)} | {_p(p_holm)} |"
        )
    return "\n".join(lines)


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


def headline_table(results: pd.DataFrame, view: View) -> str:
    references = reference_means(results, view)
    per_cell = reference_table(results, view)
    found = view_scale(results, view)
    lines = [
        f"Normalised per cell: {found.label}.",
        "",
        "| policy | seeds | mean | std | CV | worst seed | normalised IQM [95% CI] | normalised % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for arm in table_arms(results, view.ablation, view.regime):
        scores = seed_scores(results, arm, view)
        if scores.size == 0:
            continue
        r = arm_row(arm, scores, normalised(results, view, scores))
        s = r.summary
        lines.append(
            f"| {arm} | {s.n_seeds} | {s.mean:.2f} | {_fmt(s.std)} | {_fmt(s.cv, 3)} | {s.worst:.2f} | "
            f"{r.iqm:.3f} [{r.iqm_ci[0]:.3f}, {r.iqm_ci[1]:.3f}] | {r.percent:.0f}% |"
        )
    for name in REFERENCE_ORDER:
        if name in references.index:
            pct = found.percent(per_cell.loc[name].to_numpy())
            lines.append(f"| *{name}* | - | {references[name]:.2f} | - | - | - | - | {pct:.0f}% |")
    return "\n".join(lines)


def train_world_table(results: pd.DataFrame, ablation: str, selection: str) -> str:
    """The shared training world (N agents in their N training cells, one pool) on its own."""
    references = train_world_values(results, REFERENCE_ARM, ablation, selection)
    if references.empty:
        return ""
    found = scale(references.to_frame("train_world"))

    def percent(value: float) -> str:
        return "-" if found is None else f"{found.percent(np.array([value])):.0f}%"

    header = f"normalised % ({found.label})" if found else "normalised %"
    lines = [f"| policy | seeds | mean | worst seed | {header} |", "|---|---|---|---|---|"]
    for arm in table_arms(results, ablation, "shared"):
        values = train_world_values(results, arm, ablation, selection)
        if not values.empty:
            mean, worst = values.mean(), values.min()
            lines.append(f"| {arm} | {values.size} | {mean:.2f} | {worst:.2f} | {percent(mean)} |")
    for name in REFERENCE_ORDER:
        if name in references.index:
            lines.append(f"| *{name}* | - | {references[name]:.2f} | - | {percent(references[name])} |")
    return "\n".join(lines)


def arm_comparisons(results: pd.DataFrame, view: View) -> str:
    """A3C (its equal-update variant, its relatives) against each individual arm's per-seed
    model mean."""
    lines = [
        "| comparison | gap [95% CI] | P(X > Y) | Welch p | MWU p |",
        "|---|---|---|---|---|",
    ]
    for individual in INDIVIDUAL_ARMS:
        y = seed_scores(results, individual, view)
        for arm in SHARED_MODEL_ARMS:
            x = seed_scores(results, arm, view)
            if x.size == 0 or y.size == 0:
                continue
            c = compare(x, y, normalised(results, view, x), normalised(results, view, y))
            lines.append(
                f"| {arm} vs {individual} | {c.gap:+.2f} [{_fmt(c.ci[0])}, {_fmt(c.ci[1])}] | "
                f"{c.p_improvement:.2f} | {_p(c.welch_p)} | {_p(c.mwu_p)} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def wall_time_table(study: StudyConfig, study_dir: Path) -> str:
    """Per row and arm: training wall time per run (mean and max over its finished seeds) and
    env steps per run, from each run's ``summary.json``."""
    times: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for run in plan(study, study_dir):
        summary = RunDir(run.run_dir).finished_summary()
        if summary is not None:
            times.setdefault((run.ablation, run.arm), []).append(
                (float(summary["wall_time_s"]), int(summary["env_steps"]))
            )
    lines = [
        "| row | arm | runs | env steps per run | wall time per run, mean (max) |",
        "|---|---|---|---|---|",
    ]
    for (ablation, arm), values in times.items():
        seconds = [s for s, _ in values]
        lines.append(
            f"| {ablation} | {arm} | {len(values)} | {values[0][1]:,} | "
            f"{np.mean(seconds) / 60:.1f} min ({max(seconds) / 60:.1f}) |"
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


def env_views(results: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The views of a study without the headline report: for a preset's (`mec`), training and
    held-out cells in the training regime, then both again with the clouds of the other regime
    (a transfer), each present view with its label; for an env without a preset, its one world."""
    if not results["transfer"].astype(bool).any():  # no other regime: an env without a preset
        return [("", results)]
    held_out, transfer = results["held_out"].astype(bool), results["transfer"].astype(bool)
    views = []
    for moved in (False, True):
        for out, cells in ((False, "training cells"), (True, "held-out cells")):
            view = results[(held_out == out) & (transfer == moved)]
            if view.empty:
                continue
            regime = str(view["regime"].iloc[0])
            label = f"{cells}, {regime} clouds" + (" (transfer)" if moved else " (as trained)")
            views.append((label, view))
    return views


def _env_rule_tests(study: StudyConfig, results: pd.DataFrame) -> list[str]:
    """Per row, the headline test in the regime it trained in: every learned arm against the
    strongest tuned rule on the training and the held-out cells (a `mec` study)."""
    out = []
    for ablation, regime in training_regimes(results[results["arm"] != REFERENCE_ARM]).items():
        views = [
            View(ablation, regime, selection, held_out)
            for held_out in (False, True)
            for selection in study.evaluation.selections
        ]
        tests = rule_test_table(results, views)
        if tests:
            out += [f"### Row `{ablation}` ({regime} clouds, as trained)", "", tests, ""]
    if not out:
        return []
    return [
        "## Learned against the strongest tuned rule",
        "",
        RULE_TEST_METHOD,
        "",
        *out,
    ]


def final_returns_table(study: StudyConfig, results: pd.DataFrame) -> str:
    """Per row and arm: the final model's evaluation return, mean over seeds with a 95%
    bootstrap CI over seeds, for each selection, beside each reference policy of the row (the
    random policy; for `mec`, its rules too), with the greedy normalised score where the
    references give a scale (per cell: 0 = best constant policy, 100 = strongest privileged
    reference; the mean over cells) (Markdown)."""
    selections = study.evaluation.selections
    learned = results[results["arm"] != REFERENCE_ARM]
    references = results[results["arm"] == REFERENCE_ARM]
    rules = list(dict.fromkeys(references["model"]))
    header = ["row", "arm", "workers", "rollout", "seeds"] + [f"{s} mean [95% CI]" for s in selections]
    header += ["greedy %"] + [f"*{rule}*" for rule in rules]
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
                low, high = stats.seed_bootstrap_ci(values, "mean", BOOTSTRAP_REPS)
                text += f" [{_fmt(low)}, {_fmt(high)}]"
            cells.append(text)
        cells.insert(4, str(seeds))
        cells.append(_normalised_greedy(group, references[references["ablation"] == ablation]))
        for rule in rules:
            value = references.loc[
                (references["ablation"] == ablation) & (references["model"] == rule), "mean_return"
            ]
            cells.append(f"*{_fmt(float(value.mean()))}*" if not value.empty else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _normalised_greedy(learned: pd.DataFrame, references: pd.DataFrame) -> str:
    """The greedy models' normalised score over the cells (their per-cell mean over seeds) on the
    scale of the row's references; empty without a scale."""
    found = scale(references.pivot_table(index="model", columns="cell", values="mean_return", sort=False))
    greedy = learned[learned["selection"] == "greedy"]
    if found is None or greedy.empty:
        return ""
    per_cell = greedy.groupby("cell")["mean_return"].mean().reindex(found.floor.index)
    return _fmt(found.percent(per_cell))


def task_metrics_table(results: pd.DataFrame) -> str:
    """Per row and arm, the greedy final models' task metrics (mean over seeds), then each
    reference policy's (once where rows share its values) (Markdown; a `mec` study)."""
    metrics = metric_columns(results)
    learned = results[(results["arm"] != REFERENCE_ARM) & (results["selection"] == "greedy")]
    # a reference is scored per cell; averaged over the view's cells as the learned rows are
    references = (
        results[results["arm"] == REFERENCE_ARM]
        .groupby(["ablation", "model"], sort=False)[metrics]
        .mean()
        .reset_index()
        .drop_duplicates(["model", *metrics])
    )
    lines = ["| row | policy | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for (ablation, arm), group in learned.groupby(["ablation", "arm"], sort=False):
        per_seed = group.groupby("seed")[metrics].mean()
        lines.append(f"| {ablation} | {arm} | " + " | ".join(_fmt(v, 3) for v in per_seed.mean()) + " |")
    for ref in references.to_dict("records"):
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
    ]
    views = env_views(results)
    for label, view in views:
        out += [f"## Final returns{': ' + label if label else ''}", "", final_returns_table(study, view), ""]
    if plan(study, study_dir)[0].config.env.uavrl_preset is not None:
        out += _env_rule_tests(study, results)
    if metric_columns(results):
        label, first = views[0]
        out += [
            f"## Task metrics, greedy{', ' + label if label else ''} (latency in s, energy in J per task)",
            "",
            task_metrics_table(first),
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


def tuned_parameters_table(study_dir: Path) -> str:
    """Each rule's tuned parameters per ablation row and regime, from ``references.csv``."""
    path = study_dir / REFERENCES_FILE
    if not path.exists():
        return ""
    references = pd.read_csv(path)
    if "params" not in references:
        return ""
    rows = references[references["params"].fillna("{}") != "{}"].drop_duplicates(
        ["ablation", "regime", "policy"]
    )
    lines = ["| row | pools | rule | parameters |", "|---|---|---|---|"]
    for r in rows.to_dict("records"):
        params = ", ".join(f"{k}={v}" for k, v in json.loads(r["params"]).items())
        lines.append(f"| {r['ablation']} | {r['regime']} | {r['policy']} | {params} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _headline_section(
    results: pd.DataFrame, ablation: str, regime: str, transfer: bool, selection: str, standing: str
) -> list[str]:
    how = "transfer: evaluated in the regime it did not train in" if transfer else "its training regime"
    out = []
    for held_out, label in ((False, "training cells"), (True, "held-out cells")):
        view = View(ablation, regime, selection, held_out)
        if view.select(results, REFERENCE_ARM).empty:
            continue
        out += [
            f"### Row `{ablation}`, {regime} cloud pools ({how}), {label}, {selection} ({standing})",
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


def _headline_report(study: StudyConfig, study_dir: Path) -> bool:
    """The study's env has a preset whose studies get the headline report."""
    preset = plan(study, study_dir)[0].config.env.uavrl_preset
    return preset is not None and preset.headline_report


def headline_summary(study_dir: Path) -> str:
    """The headline tables of a study whose report was written: every headline row in its
    training regime, greedy, training and held-out cells (Markdown); for an env without cells,
    the final returns of every row, in each of its views (:func:`env_views`)."""
    study = load_study(study_dir / STUDY_FILE)
    results = pd.read_csv(study_dir / RESULTS_FILE)
    if not _headline_report(study, study_dir):
        return "\n\n".join(
            (f"{label}:\n" if label else "") + final_returns_table(study, view)
            for label, view in env_views(results)
        )
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
    if not _headline_report(study, study_dir):
        return write_env_report(study, study_dir, results)
    regimes = training_regimes(results)
    baseline = next(iter(study.ablations))
    standing, why = study_standing(study, study_dir)
    out = [
        f"# Study `{study.name}`",
        "",
        f"**{standing.capitalize()}**: {why}. Every table below is {standing}.",
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
        "private). IQM, its CI (bootstrap over whole seeds, "
        f"{BOOTSTRAP_REPS} resamples) and P(X > Y) use per-cell normalised scores "
        "`(J - J_floor) / (J_top - J_floor)`: the floor is the best constant policy of the cell, the "
        "top its hindsight bound where the study computed one, else its strongest privileged "
        "reference; a normalised % is 100 x the mean over cells of those scores. Means, gaps and "
        "tests use raw returns. Reference policies in italics.",
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
            out += _headline_section(results, ablation, own, False, selection, standing)
        out += _headline_section(results, ablation, other, True, "greedy", standing)
        views = [
            View(ablation, own, selection, held_out)
            for held_out in (False, True)
            for selection in study.evaluation.selections
            if not View(ablation, own, selection, held_out).select(results, REFERENCE_ARM).empty
        ]
        tests = rule_test_table(results, views)
        if tests:
            out += [
                f"### Row `{ablation}`: learned against the strongest tuned rule ({own} cloud pools, "
                f"{standing})",
                "",
                RULE_TEST_METHOD,
                "",
                tests,
                "",
            ]
        for regime in (own, other):
            figures[f"per_cell_{ablation}_{regime}.png"] = functools.partial(
                plot_per_cell, results, ablation, regime
            )
            figures[f"heatmap_{ablation}_{regime}.png"] = functools.partial(
                plot_heatmap, results, ablation, regime
            )
        figures[f"normalised_{ablation}_{own}.png"] = functools.partial(
            plot_normalised, results, ablation, own
        )
    forest: dict[str, pd.DataFrame] = {}
    for held_out, label in ((True, "held-out cells"), (False, "training cells")):
        frame = comparison_rows(results, "greedy", held_out)
        if frame.empty:  # a study without both arms (study_private: A3C only)
            continue
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
    wall = wall_time_table(study, study_dir)
    if wall:
        out += ["## Training wall time per arm", "", wall, ""]
    tuned = tuned_parameters_table(study_dir)
    if tuned:
        out += [
            "## Tuned reference parameters",
            "",
            "Per row's training world (its pool regime and training cells), on the tuning streams "
            f"({study.evaluation.tuning_episodes} episodes per candidate).",
            "",
            tuned,
            "",
        ]
    if forest:
        figures["gap_forest.png"] = lambda p: plot_forest(forest, p)
    for name, draw in figures.items():
        draw(study_dir / name)
    out += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    path = study_dir / REPORT_FILE
    path.write_text("\n".join(out))
    return path


def provenance(study: StudyConfig, study_dir: Path) -> dict[str, object]:
    """Where a study's results come from: its hash, its runs planned and finished (seeds), and
    for every finished run its config hash and the commit of the code that trained it."""
    runs: dict[str, dict[str, object]] = {}
    for run in plan(study, study_dir):
        summary = RunDir(run.run_dir).finished_summary()
        if summary is None:
            continue
        commit = RunDir(run.run_dir).provenance().get("git_commit")
        runs[run.label] = {"config_hash": summary.get("config_hash"), "git_commit": commit}
    planned = plan(study, study_dir)
    return {
        "study": study.name,
        "study_hash": study.hash(),
        "standing": study_standing(study, study_dir)[0],
        "runs_planned": len(planned),
        "runs_finished": len(runs),
        "seeds_finished": sorted({study.first_seed + r.seed for r in planned if r.label in runs}),
        "git_commits_of_runs": sorted({str(r["git_commit"]) for r in runs.values()}),
        "runs": runs,
    }


def publish(study_dir: Path, target: Path) -> list[Path]:
    """Copy a study's small result files (:data:`PUBLISHED_FILES`, those it has) to ``target``
    (``results/<study>/``, to be committed), ``results.csv`` gzipped (reproducibly: no time in
    its header; megabytes of text otherwise), with ``provenance.json``; returns the files
    written. ``pandas.read_csv`` reads the ``.gz`` as it is."""
    study = load_study(study_dir / STUDY_FILE)
    target.mkdir(parents=True, exist_ok=True)
    results = target / f"{RESULTS_FILE}.gz"
    write_atomically(results, gzip.compress((study_dir / RESULTS_FILE).read_bytes(), mtime=0))
    (target / RESULTS_FILE).unlink(missing_ok=True)  # an uncompressed copy of an earlier publish
    written = [results]
    for name in PUBLISHED_FILES:
        if (study_dir / name).exists():
            write_atomically(target / name, (study_dir / name).read_text())
            written.append(target / name)
    write_atomically(target / PROVENANCE_FILE, json.dumps(provenance(study, study_dir), indent=2))
    return [*written, target / PROVENANCE_FILE]
