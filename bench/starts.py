"""The starting configs' robustness check: every seed learns every classic-control task of its kind.

``configs/start_*.yaml`` are what a user starts from on an env of their own: discrete or
continuous actions, an MLP or a GRU. Each is trained on each of Gymnasium's classic-control
tasks of its action kind (:data:`STARTS`), for every seed, to the config's own env-step budget,
every run a fresh process, ``parallel`` at a time. A seed passes when its final greedy
evaluation (``eval.episodes`` episodes on ``eval.seed``'s streams) reaches the task's
threshold. MountainCar-v0 and MountainCarContinuous-v0 are left out: their reward says nothing
until the goal, which random exploration almost never reaches (an exploration problem, not one
a starting config solves).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from uavrl.bench.solve import last_line, launch


@dataclass(frozen=True)
class StartCheck:
    """One starting config and the tasks it must learn, with each task's threshold."""

    config: str
    tasks: dict[str, float]


# CartPole-v1's and Acrobot-v1's registered reward thresholds; Pendulum-v1 registers none, and
# -200 is the usual bar (upright from any start)
DISCRETE_TASKS = {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}
CONTINUOUS_TASKS = {"Pendulum-v1": -200.0}
STARTS = {
    "discrete": StartCheck("configs/start_discrete.yaml", DISCRETE_TASKS),
    "discrete_gru": StartCheck("configs/start_discrete_gru.yaml", DISCRETE_TASKS),
    "continuous": StartCheck("configs/start_continuous.yaml", CONTINUOUS_TASKS),
    "continuous_gru": StartCheck("configs/start_continuous_gru.yaml", CONTINUOUS_TASKS),
}


def run_one(
    kind: str,
    env_id: str,
    seed: int,
    workdir: Path,
    max_seconds: float,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train one (starting config, task, seed) in a fresh process, with ``overrides`` after the
    check's own settings; its final greedy return."""
    check = STARTS[kind]
    out = workdir / f"{kind}-{env_id}-{seed}"
    sets = [f"env.id={env_id}", f"seed={seed}", "log.progress=false", "log.tensorboard=false", *overrides]
    command = [sys.executable, "-m", "uavrl.cli", "train", "--config", check.config, "--run-dir", str(out)]
    for item in sets:
        command += ["--set", item]
    started = time.time()
    log = out.with_suffix(".txt")
    code = launch(command, log, max_seconds)
    summary_path = out / "summary.json"
    final, error = np.nan, ""
    if code is None:
        error = f"stopped at max_seconds={max_seconds:g}"
    elif code == 0 and summary_path.exists():
        final = float(json.loads(summary_path.read_text())["eval"]["mean_return"])
    else:
        error = last_line(log, code)
    target = check.tasks[env_id]
    return {
        "config": Path(check.config).stem,
        "env": env_id,
        "seed": seed,
        "final_return": final,
        "target": target,
        "passed": bool(final >= target),
        "wall_s": time.time() - started,
        "error": error,
    }


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (config, env): seeds passed, median and worst final return, median wall time."""
    rows = []
    for (config, env), group in runs.groupby(["config", "env"], sort=False):
        finals = group["final_return"].astype(float)
        rows.append(
            {
                "config": config,
                "env": env,
                "passed": f"{int(group['passed'].sum())}/{len(group)}",
                "target": float(group["target"].iloc[0]),
                "median": float(finals.median()),
                "worst": float(finals.min()),  # NaN (a failed run) sorts as missing: see "passed"
                "median_wall_s": float(group["wall_s"].median()),
            }
        )
    return pd.DataFrame(rows)


def run(
    seeds: int = 8, kinds: tuple[str, ...] = tuple(STARTS), parallel: int = 2, max_seconds: float = 1800.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (starting config, task, seed), ``parallel`` runs at a time. Returns (per-run table,
    summary table)."""
    jobs = [(kind, env_id, seed) for kind in kinds for env_id in STARTS[kind].tasks for seed in range(seeds)]
    with tempfile.TemporaryDirectory(prefix="uavrl-starts-") as tmp, ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda job: run_one(*job, Path(tmp), max_seconds), jobs))
    runs = pd.DataFrame(results)
    return runs, summarize(runs)
