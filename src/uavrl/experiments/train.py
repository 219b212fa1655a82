"""One training job -> one run directory.

``runs/<name>/config.yaml`` (the resolved config plus provenance under ``meta``) is written
before anything runs; ``summary.json`` closes the run, also when it fails.
"""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import yaml

from uavrl.config import Config, config_from_dict
from uavrl.envs.worlds import TRAIN_WORLD
from uavrl.errors import ConfigError, RunInterrupted
from uavrl.experiments.rundir import RunDir
from uavrl.fileio import write_atomically
from uavrl.nn.models import ActorCritic, clone_model
from uavrl.runners.registry import runner_for
from uavrl.runners.session import HookOutcome, ProgressHook, RunResult, check_envs
from uavrl.runners.supervise import refuse_unguarded_start

if TYPE_CHECKING:  # evaluation (pandas) is imported when a run evaluates: 0.4 s of start-up
    import pandas as pd


def git_commit() -> str | None:
    """The commit of the code that runs (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def provenance(config: Config) -> dict[str, Any]:
    import gymnasium

    import uavrl

    return {
        "config_hash": config.hash(),
        "git_commit": git_commit(),
        "uavrl": uavrl.__version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
    }


def write_config(config: Config, run_dir: Path) -> None:
    data = config.to_dict()
    data["meta"] = provenance(config)
    write_atomically(RunDir(run_dir).config_file, yaml.safe_dump(data, sort_keys=False))


def _summary(config: Config, result: RunResult) -> dict[str, Any]:
    counters = result.counters
    return {
        "status": "finished",
        "config_hash": config.hash(),
        "env_steps": counters["env_steps"],
        "updates": counters["updates"],
        "skipped_updates": counters["skipped_updates"],
        "episodes": counters["episodes"],
        "wall_time_s": result.wall_time_s,
        "env_steps_per_s": result.session_env_steps / max(result.session_wall_time_s, 1e-9),
        # epoch seconds, so that a launcher can time start-up from its own clock (bench solve)
        "first_update_at": result.first_update_at,
        **result.stats,
    }


def greedy_evaluation(config: Config, models: list[ActorCritic], episodes: int) -> pd.DataFrame:
    """Every model, greedy, in its training regime on the evaluation cells (``eval.seed``)."""
    from uavrl.experiments.evaluate import eval_worlds, evaluate_policies, run_policies, training_regime

    regime = training_regime(config)
    policies = run_policies(config, models, regime, greedy=True, seed=config.eval.seed)
    return evaluate_policies(policies, eval_worlds(config, regime), episodes, config.eval.seed, config.env.id)


def mean_over_cells(table: pd.DataFrame) -> tuple[float, pd.Series]:
    """The mean over cells (training world left out) and models, and each model's mean."""
    per_model = table[table["cell"] != TRAIN_WORLD].groupby("policy", sort=False)["mean"].mean()
    return float(per_model.mean()), per_model


def evaluate_final(config: Config, models: list[ActorCritic]) -> dict[str, Any]:
    """Greedy evaluation of every final model in its training regime on the evaluation cells.

    ``mean_return`` is the mean over cells (and over models when they are scored one by one);
    a shared-pool run also reports its training world (``train_world``) on its own.
    """
    table = greedy_evaluation(config, models, config.eval.episodes)
    cells = table[table["cell"] != TRAIN_WORLD]
    mean_return, per_model = mean_over_cells(table)
    summary = {
        "regime": str(table["regime"].iloc[0]),
        "mean_return": mean_return,
        "std": float(cells["std"].mean()),
        "episodes": config.eval.episodes,
        "cells": list(dict.fromkeys(cells["cell"])),
        "per_model": {str(k): float(v) for k, v in per_model.items()},
        "per_cell": {str(c): float(g["mean"].mean()) for c, g in table.groupby("cell", sort=False)},
    }
    return summary


class PeriodicEvaluation:
    """A progress hook: every ``eval.every_env_steps`` run-wide env steps, a greedy evaluation of
    a snapshot of the models on the same seeded streams each time; asks the run to stop at the
    first one that reaches ``eval.stop_at_return``."""

    def __init__(self, config: Config, prior_wall_time_s: float = 0.0) -> None:
        if config.eval.every_env_steps is None:
            raise ValueError("PeriodicEvaluation needs eval.every_env_steps")
        self.config = config
        self.every = config.eval.every_env_steps
        self.next_at: int | None = None
        self.clock_origin = time.time() - prior_wall_time_s
        self.first_hit: dict[str, float] | None = None

    def __call__(self, env_steps: int, models: list[ActorCritic]) -> HookOutcome | None:
        if self.next_at is None:  # a resumed run evaluates at the next multiple
            self.next_at = (env_steps // self.every + 1) * self.every
        if env_steps < self.next_at:
            return None
        self.next_at = (env_steps // self.every + 1) * self.every
        # A serial run samples its actions from torch's generator: the evaluation must leave it
        # as it was (building the snapshot draws initial weights from it, for one).
        with torch.random.fork_rng(devices=[]):
            snapshot = [clone_model(m) for m in models]  # workers may go on updating the originals
            table = greedy_evaluation(self.config, snapshot, self.config.eval.periodic_episodes)
        score, _ = mean_over_cells(table)
        wall = time.time() - self.clock_origin
        row = {
            "step": env_steps,
            "wall_time": wall,
            "mean_return": score,
            "episodes": self.config.eval.periodic_episodes,
        }
        target = self.config.eval.stop_at_return
        reached = target is not None and score >= target
        if reached and self.first_hit is None:
            self.first_hit = {
                "env_steps": env_steps,
                "wall_time_s": wall,
                "mean_return": score,
                "at": time.time(),
            }
        return HookOutcome(row, stop=reached)

    def summary(self) -> dict[str, Any]:
        return {"stop_at_return": self.config.eval.stop_at_return, "first_hit": self.first_hit}


def chain_hooks(*hooks: ProgressHook | None) -> ProgressHook | None:
    """One hook calling each given one in turn: the last evaluation row is logged, and the run
    stops if any of them asks."""
    active = [h for h in hooks if h is not None]
    if len(active) <= 1:
        return active[0] if active else None

    def chained(env_steps: int, models: list[ActorCritic]) -> HookOutcome | None:
        outcomes = [o for o in (h(env_steps, models) for h in active) if o is not None]
        if not outcomes:
            return None
        rows = [o.eval_row for o in outcomes if o.eval_row is not None]
        return HookOutcome(rows[-1] if rows else None, any(o.stop for o in outcomes))

    return chained


def train(config: Config, run_dir: Path | None = None, hook: ProgressHook | None = None) -> dict[str, Any]:
    """Run a fresh training job; returns ``summary.json``'s content.

    ``hook(env_steps, models)`` is called after every round of updates (see ``ProgressHook``).
    A directory whose earlier run stopped before its first checkpoint is trained into again
    (what that run left is cleared first); one with a checkpoint is refused with the way on.
    """
    refuse_unguarded_start()
    run_dir = run_dir or Path("runs") / config.name
    run = RunDir(run_dir)
    if run.has_checkpoint():
        raise ConfigError(
            f"run directory {str(run_dir)!r} already holds a run with checkpoints; continue it with "
            f"--resume {run_dir}, or train into another --run-dir"
        )
    check_envs(config)  # every refusal that can be known before training, before anything is written
    if run_dir.exists():
        run.clear_attempt()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(config, run_dir)
    return _execute(config, run_dir, resume=False, hook=hook)


def resume(
    run_dir: Path,
    ray_address: str | None = None,
    learner_device: str | None = None,
    actor_device: str | None = None,
) -> dict[str, Any]:
    """Continue a run from its last checkpoint, with its config and counters (on the Ray
    cluster at ``ray_address``, with the learner on ``learner_device`` and the actors' forward
    passes on ``actor_device``, if given: where a run goes on does not change it, and
    checkpoints hold host tensors that load on any device).

    A run that finished its budget is left as it is and its summary returned unchanged
    (``uavrl evaluate`` scores it again).
    """
    refuse_unguarded_start()
    run = RunDir(run_dir)
    finished = run.finished_summary()
    if finished is not None:
        return finished
    config = run.config()
    if not run.has_checkpoint():
        raise ConfigError(
            f"{str(run_dir)!r} has no checkpoint to resume from (its run stopped before the first "
            f"one); start it over with: uavrl train --config {run.config_file} --run-dir {run_dir}"
        )
    moved = {
        name: value
        for name, value in (
            ("ray_address", ray_address),
            ("learner_device", learner_device),
            ("actor_device", actor_device),
        )
        if value is not None
    }
    if moved:
        data = config.to_dict()
        data["runner"].update(moved)
        config = config_from_dict(data)
    return _execute(config, run_dir, resume=True)


def _execute(config: Config, run_dir: Path, resume: bool, hook: ProgressHook | None = None) -> dict[str, Any]:
    run = RunDir(run_dir)
    runner = runner_for(config)
    periodic = None
    if config.eval.every_env_steps is not None:
        periodic = PeriodicEvaluation(config, run.checkpointed_wall_time() if resume else 0.0)
    try:
        result = runner(config, run_dir, resume=resume, hook=chain_hooks(periodic, hook))
    except KeyboardInterrupt as err:  # RunInterrupted once training ran; bare during start-up
        env_steps = err.env_steps if isinstance(err, RunInterrupted) else None
        stopped = {"status": "interrupted", "config_hash": config.hash(), "env_steps": env_steps}
        run.write_summary(stopped)
        raise
    except BaseException as err:
        failure = {"status": "failed", "config_hash": config.hash(), "error": f"{type(err).__name__}: {err}"}
        run.write_summary(failure)
        raise
    summary = _summary(config, result)
    if periodic is not None:
        summary["eval_during_training"] = periodic.summary()
        # a run stopped at its target return is finished, short of its env-step budget
        summary["stopped_at_target"] = periodic.first_hit is not None and result.counters["env_steps"] < (
            config.runner.total_env_steps
        )
    summary["eval"] = evaluate_final(config, result.models)
    run.write_summary(summary)
    return summary
