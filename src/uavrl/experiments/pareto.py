"""The multi-objective study of the `mec` preset: one policy per cost-weight vector.

Each weight vector ``(w_latency, w_energy, w_drop, w_discard)`` trains ``seeds`` runs of the base
config with those weights; each run's greedy policy is scored on its training cells with the task
metrics (a point is the mean over the cells), beside the mec reference policies (their margins
tuned for the same weights on the same cells). The
learned latency-energy front (and drop rate against energy) is plotted with a 95% t-interval
over the seeds at each point, the references as single points.

Layout of the output directory::

    w<i>/seed<k>/      one training run (skipped on a rerun once finished)
    pareto.csv         one row per point: kind, weights, seed, policy, return and metrics
    pareto.png         the fronts
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uavrl.config import Config, apply_overrides, config_from_dict
from uavrl.envs.mec.core import OBJECTIVES
from uavrl.errors import ConfigError

WEIGHT_KEYS = ("w_latency", "w_energy", "w_drop", "w_discard")
POINT_METRICS = ("latency_mean", "latency_p95", "energy_per_task", "drop_rate", "completion_rate")


def parse_weights(text: str) -> list[tuple[float, ...]]:
    """``"1,1,4,2;1,5,4,2"`` -> weight vectors of (latency, energy, drop, discard), each >= 0."""
    vectors = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        try:
            values = tuple(float(x) for x in part.split(","))
        except ValueError:
            raise ConfigError(f"--weights: {part!r} is not 4 comma-separated numbers") from None
        if len(values) != len(OBJECTIVES) or min(values) < 0:
            raise ConfigError(
                f"--weights: each vector needs {len(OBJECTIVES)} numbers >= 0 "
                f"({', '.join(OBJECTIVES)}), got {part!r}"
            )
        vectors.append(values)
    if not vectors:
        raise ConfigError(f"--weights must name at least one vector, got {text!r}")
    return vectors


def weighted_config(base: Config, weights: Sequence[float], seed: int, env_steps: int | None) -> Config:
    """The base run config with ``weights`` as its cost weights, ``seed``, and optionally a budget."""
    preset = base.env.uavrl_preset
    if preset is None or preset.objectives != OBJECTIVES:
        raise ConfigError(
            f"uavrl pareto weighs the objectives {', '.join(OBJECTIVES)} of the mec preset; the base "
            f"config's env is {base.env.id!r} preset {base.env.preset!r}"
        )
    overrides = [f"env.params.{key}={value}" for key, value in zip(WEIGHT_KEYS, weights, strict=True)]
    overrides += [f"seed={seed}", "log.progress=false", "log.tensorboard=false"]
    if env_steps is not None:
        overrides.append(f"runner.total_env_steps={env_steps}")
    return config_from_dict(apply_overrides(base.to_dict(), overrides))


def run_pareto(
    base: Config,
    weights: Sequence[Sequence[float]],
    seeds: int,
    out: Path,
    episodes: int = 50,
    env_steps: int | None = None,
    report: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Train (or reuse) every (weight vector, seed) run, score it and the references; write
    ``pareto.csv`` and ``pareto.png`` into ``out`` and return the table. ``report(line)`` hears
    each step (training, evaluating, the references) as it starts."""
    say = report or (lambda _: None)
    from uavrl.experiments.evaluate import (
        evaluate_policies,
        regime_worlds,
        run_policies,
        run_references,
        training_cells,
        training_regime,
    )
    from uavrl.experiments.rundir import RunDir
    from uavrl.experiments.train import resume, train

    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    rows: list[dict[str, Any]] = []
    for i, w in enumerate(weights):
        label = ",".join(f"{x:g}" for x in w)
        for seed in range(seeds):
            config = weighted_config(base, w, base.seed + seed, env_steps)
            run_dir = out / f"w{i}" / f"seed{seed}"
            run = RunDir(run_dir)
            where = f"weights {i + 1}/{len(weights)} ({label}), seed {seed + 1}/{seeds}"
            if run.config_file.exists():
                if run.finished_summary() is None:
                    say(f"{where}: resuming {run_dir}")
                    resume(run_dir)
                else:
                    say(f"{where}: trained already in {run_dir}")
            else:
                say(f"{where}: training into {run_dir}")
                train(config, run_dir)
            say(f"{where}: evaluating the learned policy on {len(training_cells(config))} cell(s)")
            models, _ = run.load_models()
            regime, eval_seed = training_regime(config), config.eval.seed
            worlds = regime_worlds(config, regime, training_cells(config))
            learned = run_policies(config, models, regime, True, eval_seed)
            rows += _points(evaluate_policies(learned, worlds, episodes, eval_seed), "learned", label, seed)
            if seed == 0:  # the references do not learn: one set per weight vector
                say(f"weights {i + 1}/{len(weights)} ({label}): tuning and evaluating the references")
                references = run_references(config, regime, episodes, eval_seed)
                rows += _points(
                    evaluate_policies(references, worlds, episodes, eval_seed), "reference", label, -1
                )
    frame = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "pareto.csv", index=False)
    plot_fronts(frame, out / "pareto.png")
    return frame


def _points(table: pd.DataFrame, kind: str, weights: str, seed: int) -> list[dict[str, Any]]:
    """One point per policy: its return and metrics, each the mean over the table's cells."""
    means = table.groupby("policy", sort=False)[["mean", *POINT_METRICS]].mean()
    return [
        {"kind": kind, "weights": weights, "seed": seed, "policy": policy, "mean_return": r["mean"]}
        | {m: r[m] for m in POINT_METRICS}
        for policy, r in means.iterrows()
    ]


def seed_interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval over seeds (0 for one seed)."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return float(values.mean()), 0.0
    half = stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / np.sqrt(values.size)
    return float(values.mean()), float(half)


OFF_AXES_FACTOR = 2.0
"""A reference that spends more than this times the learned points' largest energy per task is
left off the axes (named in the legend), so that the front is not squeezed into a corner."""


def split_off_axes(references: pd.DataFrame, learned: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(references drawn, references left off the axes): off are those spending more than
    :data:`OFF_AXES_FACTOR` times the learned points' largest energy per task."""
    if learned.empty:
        return references, references.iloc[:0]
    far = references["energy_per_task"] > OFF_AXES_FACTOR * learned["energy_per_task"].max()
    return references[~far], references[far]


def plot_fronts(frame: pd.DataFrame, path: Path) -> None:
    """Latency and drop rate against energy: learned points (seed mean, 95% CI) joined in
    order of their energy, reference policies (first weight vector's) as labelled markers;
    references far off the front (:data:`OFF_AXES_FACTOR`) are named in the legend only."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2)
    learned = frame[frame["kind"] == "learned"]
    references = frame[(frame["kind"] == "reference") & (frame["weights"] == frame["weights"].iloc[0])]
    references, far = split_off_axes(references, learned)
    for ax in axes:
        for _, r in far.iterrows():
            ax.plot([], [], " ", label=f"{r['policy']} off the axes ({r['energy_per_task']:.3f} J)")
    for ax, metric, label in zip(
        axes, ("latency_mean", "drop_rate"), ("mean latency (s)", "drop rate"), strict=True
    ):
        points = []
        for weights, group in learned.groupby("weights", sort=False):
            x, dx = seed_interval(group["energy_per_task"].to_numpy())
            y, dy = seed_interval(group[metric].to_numpy())
            points.append((x, y))
            ax.errorbar(x, y, xerr=dx, yerr=dy, fmt="o", color="C0", capsize=3)
            ax.annotate(f"w={weights}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if points:
            xs, ys = zip(*sorted(points), strict=True)
            ax.plot(xs, ys, color="C0", alpha=0.5, label="learned (mean, 95% CI over seeds)")
        for j, (_, r) in enumerate(references.iterrows()):
            ax.scatter(r["energy_per_task"], r[metric], marker="s", color=f"C{j + 1}", label=r["policy"])
        ax.set_xlabel("energy per task (J)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(
        "mec: learned front per cost weights (latency, energy, drop, discard) beside the references"
    )
    figure.savefig(path, dpi=120)
