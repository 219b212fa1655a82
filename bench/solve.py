"""Wall time to a solved task: uavrl's runners beside Stable-Baselines3, every run a fresh process.

Every (row, seed) is launched as its own process and timed on this process's clock, from the
launch to the first greedy evaluation whose mean return reaches the task's target, imports and
start-up included. Both libraries evaluate alike: ``eval_episodes`` greedy episodes every
``eval_every`` env steps. uavrl reports the wall clock of its first booked update
(``first_update_at``) and of its first hit (``eval_during_training.first_hit.at``); the SB3
rows run :mod:`uavrl.bench.sb3_solve`, which does the same with SB3's callbacks. A seed that
does not reach the target within ``max_seconds`` (or its env-step budget) counts as unsolved,
and as infinitely slow in the median: a median of inf means fewer than half the seeds solved.

Tasks (:data:`TASKS`): ``CartPole-v1`` (Box observations, Discrete actions) and ``TaskGraph-v0``
(:mod:`uavrl.envs.task_graph`: Dict observations, MultiBinary actions; SB3 takes it with its
``MultiInputPolicy``).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SolveRow:
    """One row of the table: a uavrl config (``config``, with ``overrides`` as ``--set`` takes
    them) or an SB3 algorithm (``sb3``)."""

    label: str
    config: str | None = None
    sb3: str | None = None
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class SolveTask:
    """An env, its target (mean greedy return) and the rows timed on it. SB3 runs with its
    default hyperparameters but for ``sb3_kwargs`` (the task's own discount, where its steps are
    independent), with ``sb3_policy`` for the observation space."""

    env_id: str
    target: float
    rows: tuple[SolveRow, ...]
    sb3_policy: str = "MlpPolicy"
    sb3_kwargs: dict[str, Any] = field(default_factory=dict)
    budget: int = 500_000


SB3_ROWS = (SolveRow("sb3 A2C (8 envs)", sb3="a2c"), SolveRow("sb3 PPO (8 envs)", sb3="ppo"))
TASKS = {
    "CartPole-v1": SolveTask(
        "CartPole-v1",
        475.0,  # the env's reward threshold
        (
            SolveRow("uavrl a2c", config="configs/cartpole_a2c.yaml"),
            SolveRow("uavrl a3c", config="configs/cartpole_a3c.yaml"),
            SolveRow("uavrl impala", config="configs/cartpole_impala.yaml"),
        ),
    ),
    # -40 per 20 jobs: random bits score -54.3, the exact best -30.3 (60% of the way)
    "TaskGraph-v0": SolveTask(
        "uavrl.envs.task_graph:TaskGraph-v0",
        -40.0,
        (
            SolveRow("uavrl a3c (serial)", config="configs/task_graph_a3c.yaml"),
            SolveRow(
                "uavrl a2c",
                config="configs/task_graph_a3c.yaml",
                overrides=("runner.kind=a2c", "runner.backend=process", "algo.lr=0.003"),
            ),
        ),
        sb3_policy="MultiInputPolicy",
        sb3_kwargs={"gamma": 0.0},
    ),
}


def sb3_available() -> bool:
    try:
        import stable_baselines3  # noqa: F401
    except ImportError:
        return False
    return True


def _command(
    row: SolveRow,
    seed: int,
    out: Path,
    target: float,
    every: int,
    episodes: int,
    budget: int,
    task: SolveTask,
) -> list[str]:
    if row.sb3 is not None:
        return [
            sys.executable,
            "-m",
            "uavrl.bench.sb3_solve",
            row.sb3,
            str(seed),
            str(target),
            str(every),
            str(episodes),
            str(budget),
            str(out / "result.json"),
            task.env_id,
            task.sb3_policy,
            json.dumps(task.sb3_kwargs),
        ]
    assert row.config is not None
    sets = {
        "seed": seed,
        "runner.total_env_steps": budget,
        "eval.every_env_steps": every,
        "eval.periodic_episodes": episodes,
        "eval.stop_at_return": target,
        "eval.episodes": episodes,
        "log.progress": "false",
    }
    command = [sys.executable, "-m", "uavrl.cli", "train", "--config", row.config, "--run-dir", str(out)]
    for item in [*(f"{key}={value}" for key, value in sets.items()), *row.overrides]:
        command += ["--set", item]
    return command


def _read_times(row: SolveRow, out: Path) -> tuple[float | None, float | None]:
    """(wall clock of the first update or env step, of the first hit), epoch seconds or None."""
    if row.sb3 is not None:
        path = out / "result.json"
        if not path.exists():
            return None, None
        result = json.loads(path.read_text())
        return result.get("first_step_at"), result.get("first_hit_at")
    path = out / "summary.json"
    if not path.exists():
        return None, None
    summary = json.loads(path.read_text())
    hit = (summary.get("eval_during_training") or {}).get("first_hit")
    return summary.get("first_update_at"), (hit or {}).get("at")


def launch(command: list[str], log: Path, max_seconds: float) -> int | None:
    """Run ``command`` with its output in ``log``; its exit code, or None if stopped at
    ``max_seconds``."""
    with log.open("w") as output:
        try:
            return subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=max_seconds, check=False
            ).returncode
        except subprocess.TimeoutExpired:
            return None


def last_line(log: Path, code: int | None) -> str:
    """Why a run failed: the last line of its output (a traceback's error), or its exit code."""
    lines = log.read_text().strip().splitlines()
    return lines[-1][:200] if lines else f"exit code {code}, no output"


def time_one(
    row: SolveRow,
    seed: int,
    target: float,
    every: int,
    episodes: int,
    budget: int,
    max_seconds: float,
    workdir: Path,
    task: SolveTask = TASKS["CartPole-v1"],
) -> dict[str, Any]:
    """Launch one seed of ``row`` on ``task`` and time it from the launch. A run that exits with
    an error, or is stopped at ``max_seconds`` before a hit, gets the last line of its output in
    ``error``."""
    out = workdir / f"{re.sub(r'[^a-z0-9]+', '-', row.label.lower())}{seed}"
    command = _command(row, seed, out, target, every, episodes, budget, task)
    if row.sb3 is not None:
        out.mkdir(parents=True)
    launched = time.time()
    log = out.with_suffix(".txt")
    code = launch(command, log, max_seconds)
    first_step_at, hit_at = _read_times(row, out)
    # a run that crashed or hung says why, instead of passing for an unsolved seed
    error = ""
    if code is None and hit_at is None:
        error = f"no hit within max_seconds={max_seconds:g}, stopped"
    elif code not in (0, None):
        error = last_line(log, code)
    return {
        "row": row.label,
        "seed": seed,
        "exit_code": code,
        "startup_s": None if first_step_at is None else first_step_at - launched,
        "solve_s": None if hit_at is None else hit_at - launched,
        "total_s": time.time() - launched,
        "error": error,
    }


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per row: median, min and max time to solve (unsolved seeds count as inf), seeds solved,
    median start-up."""
    rows = []
    for label, group in runs.groupby("row", sort=False):
        solve = group["solve_s"].astype(float).fillna(math.inf).to_numpy()
        solved = solve[np.isfinite(solve)]
        startup = group["startup_s"].dropna().astype(float)
        rows.append(
            {
                "row": label,
                "solved": f"{solved.size}/{solve.size}",
                "median_s": float(np.median(solve)),
                "min_s": float(solved.min()) if solved.size else math.inf,
                "max_s": float(solve.max()),
                "startup_median_s": float(startup.median()) if len(startup) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def run(
    seeds: int,
    task: SolveTask = TASKS["CartPole-v1"],
    every: int = 10_000,
    episodes: int = 10,
    max_seconds: float = 180.0,
    include_sb3: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Time every row of ``task`` (and SB3's) on seeds ``0..seeds-1``, the rows interleaved seed
    by seed, so that drift of the machine's speed falls on every row alike. Returns (per-run
    table, summary table)."""
    rows = task.rows
    if include_sb3:
        if not sb3_available():
            raise ImportError("the SB3 rows need stable-baselines3: pip install -e '.[bench]'")
        rows = (*rows, *SB3_ROWS)
    results = []
    with tempfile.TemporaryDirectory(prefix="uavrl-solve-") as tmp:
        for seed in range(seeds):
            for row in rows:
                results.append(
                    time_one(
                        row, seed, task.target, every, episodes, task.budget, max_seconds, Path(tmp), task
                    )
                )
    runs = pd.DataFrame(results)
    return runs, summarize(runs)
