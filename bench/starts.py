"""The starting configs' robustness check: every seed learns every classic-control task of its kind.

``configs/start_discrete.yaml`` and ``configs/start_continuous.yaml`` are what a user starts
from on an env of their own. Each is trained, as an MLP and as a GRU (``model.recurrent`` with
LayerNorm), on each of Gymnasium's classic-control tasks of its action kind (:data:`STARTS`),
for every seed, to the config's own env-step budget, every run a fresh process, ``parallel`` at
a time. A seed passes when its final greedy evaluation (``eval.episodes`` episodes on
``eval.seed``'s streams) reaches the task's threshold. MountainCar-v0 and
MountainCarContinuous-v0 are left out: their reward says nothing until the goal, which random
exploration almost never reaches (an exploration problem, not one a starting config solves).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class StartCheck:
    """One starting config and the tasks it must learn, with each task's threshold."""

    config: str
    tasks: dict[str, float]


STARTS = {
    # CartPole-v1's and Acrobot-v1's reward thresholds (their registered ones)
    "discrete": StartCheck("configs/start_discrete.yaml", {"CartPole-v1": 475.0, "Acrobot-v1": -100.0}),
    # Pendulum-v1 registers none; -200 is the usual bar (an upright pendulum from any start)
    "continuous": StartCheck("configs/start_continuous.yaml", {"Pendulum-v1": -200.0}),
}
MODELS: dict[str, tuple[str, ...]] = {
    "mlp": (),
    "gru": ("model.recurrent=true", "model.layer_norm=true"),
}


def run_one(
    kind: str,
    model: str,
    env_id: str,
    seed: int,
    workdir: Path,
    max_seconds: float,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Train one (config, model, task, seed) in a fresh process, with ``overrides`` after the
    check's own settings; its final greedy return."""
    check = STARTS[kind]
    out = workdir / f"{kind}-{model}-{env_id}-{seed}"
    sets = [f"env.id={env_id}", f"seed={seed}", "log.progress=false", "log.tensorboard=false", *MODELS[model]]
    sets += overrides
    command = [sys.executable, "-m", "uavrl.cli", "train", "--config", check.config, "--run-dir", str(out)]
    for item in sets:
        command += ["--set", item]
    started = time.time()
    log = out.with_suffix(".txt")
    error = ""
    with log.open("w") as output:
        try:
            code = subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=max_seconds, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            code, error = -1, f"stopped at max_seconds={max_seconds:g}"
    summary_path = out / "summary.json"
    final = np.nan
    if code == 0 and summary_path.exists():
        final = float(json.loads(summary_path.read_text())["eval"]["mean_return"])
    elif not error:
        lines = log.read_text().strip().splitlines()
        error = lines[-1][:200] if lines else f"exit code {code}, no output"
    target = check.tasks[env_id]
    return {
        "config": Path(check.config).stem,
        "model": model,
        "env": env_id,
        "seed": seed,
        "final_return": final,
        "target": target,
        "passed": bool(final >= target),
        "wall_s": time.time() - started,
        "error": error,
    }


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (config, model, env): seeds passed, median and worst final return, median wall time."""
    rows = []
    for (config, model, env), group in runs.groupby(["config", "model", "env"], sort=False):
        finals = group["final_return"].astype(float)
        rows.append(
            {
                "config": config,
                "model": model,
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
    seeds: int = 8,
    kinds: tuple[str, ...] = tuple(STARTS),
    parallel: int = 2,
    max_seconds: float = 1800.0,
    models: tuple[str, ...] = tuple(MODELS),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (kind, model, task, seed), ``parallel`` runs at a time. Returns (per-run table,
    summary table)."""
    jobs = [
        (kind, model, env_id, seed)
        for kind in kinds
        for model in models
        for env_id in STARTS[kind].tasks
        for seed in range(seeds)
    ]
    with tempfile.TemporaryDirectory(prefix="uavrl-starts-") as tmp, ThreadPoolExecutor(parallel) as pool:
        results = list(pool.map(lambda job: run_one(*job, Path(tmp), max_seconds), jobs))
    runs = pd.DataFrame(results)
    return runs, summarize(runs)
