"""Hyperparameter tuning on Optuna: training cells only, several seeds, pruning on periodic
evaluation, resumable from its storage.

A tuning config names a base run config and a search space of ``--set`` keys::

    name: tune_paper
    base: paper_a3c.yaml
    seeds: 2
    eval_every_env_steps: 500000
    episodes: 50
    space:
      algo.lr: {low: 3.0e-4, high: 3.0e-3, log: true}
      algo.rollout_length: {choices: [10, 20, 40]}

Every trial trains ``seeds`` runs (seeds ``0 .. seeds - 1``) in serial mode. Its score is the
mean over seeds of the greedy return on the run's own training cells, in its training pool regime:
held-out cells are never evaluated here. During training, the model is evaluated every
``eval_every_env_steps`` on the same cells (fewer episodes) and reported to Optuna, whose median
pruner stops trials that fall behind; seed ``s``'s ``k``-th report is step ``s * n + k``, so
trials are compared seed by seed. The study lives in an RDB storage (default SQLite in the
tuning directory) with heartbeats: rerunning the same command continues it, and a trial whose
process died is retried.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from pydantic import Field, ValidationError, model_validator

from uavrl.config import (
    Config,
    ConfigSection,
    apply_overrides,
    config_from_dict,
    format_validation_error,
    read_with_base,
)
from uavrl.envs.worlds import TRAIN_WORLD
from uavrl.errors import ConfigError
from uavrl.experiments.evaluate import (
    evaluate_policies,
    regime_worlds,
    run_policies,
    training_cells,
    training_regime,
)
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.train import train
from uavrl.nn.models import ActorCritic

TUNE_FILE = "tune.yaml"
BEST_FILE = "best.yaml"


class SearchDimension(ConfigSection):
    """One tuned setting: a float or int range (``low``, ``high``, ``log``) or ``choices``."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either non-empty choices or low and high, not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low={self.low}, high={self.high}")
        elif self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        return self


class TuneConfig(ConfigSection):
    """What to tune, on which base run config, and how trials are scored."""

    name: str = "tune"
    base: dict[str, Any]
    seeds: int = Field(2, ge=2, description="seeds per trial; the score is their mean")
    eval_every_env_steps: int = Field(ge=1, description="periodic evaluation for pruning")
    episodes: int = Field(50, ge=1, description="evaluation episodes per training cell")
    eval_seed: int = Field(20_000, ge=0, description="evaluation streams (apart from the study's)")
    space: dict[str, SearchDimension]

    @model_validator(mode="after")
    def _space_applies(self) -> TuneConfig:
        if not self.space:
            raise ValueError("space must name at least one setting to tune")
        for key in self.space:
            if key in ("seed", "name", "runner.total_env_steps"):
                raise ValueError(f"space may not tune {key!r}")
        self.base_config()
        return self

    def base_config(self) -> Config:
        return config_from_dict(dict(self.base))


def load_tune(path: str | Path, overrides: list[str] | None = None) -> TuneConfig:
    """Read a tuning YAML (``base`` a mapping or a run config path relative to it, ``base_set``
    applied to it), apply ``--set`` overrides, validate."""
    data = read_with_base(path, overrides, "tuning config")
    try:
        return TuneConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


def suggest(trial: Any, space: dict[str, SearchDimension]) -> dict[str, Any]:
    """One value per tuned setting from an Optuna trial."""
    values = {}
    for key, dim in space.items():
        if dim.choices is not None:
            values[key] = trial.suggest_categorical(key, dim.choices)
        elif dim.integer:
            values[key] = trial.suggest_int(key, int(dim.low or 0), int(dim.high or 0), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, float(dim.low or 0), float(dim.high or 0), log=dim.log)
    return values


def trial_config(tune: TuneConfig, values: dict[str, Any], seed: int, number: int) -> Config:
    """The run config of one seed of one trial (serial, quiet)."""
    data = apply_overrides(
        tune.base_config().to_dict(),
        [
            *(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in values.items()),
            f"name={tune.name}/trial{number}/seed{seed}",
            f"seed={seed}",
            "runner.serial=true",
            "log.progress=false",
            "log.tensorboard=false",
        ],
    )
    return config_from_dict(data)


def training_score(config: Config, models: list[ActorCritic], episodes: int, seed: int) -> float:
    """Greedy mean return on the run's own training cells, in its training regime."""
    regime = training_regime(config)
    worlds = [w for w in regime_worlds(config, regime, training_cells(config)) if w.name != TRAIN_WORLD]
    table = evaluate_policies(run_policies(config, models, regime, True, seed), worlds, episodes, seed)
    score = float(table["mean"].mean())
    if not math.isfinite(score):
        raise RuntimeError(f"evaluation returned a non-finite score {score}")
    return score


class PruningHook:
    """Called by the runner with the run-wide env steps; evaluates at every multiple of
    ``every`` and lets Optuna prune the trial."""

    def __init__(self, trial: Any, tune: TuneConfig, config: Config, seed_index: int) -> None:
        self.trial, self.tune, self.config = trial, tune, config
        self.points = max(1, config.runner.total_env_steps // tune.eval_every_env_steps)
        self.offset = seed_index * (self.points + 1)
        self.next_point = 1

    def __call__(self, env_steps: int, models: list[ActorCritic]) -> None:
        import optuna

        if self.next_point > self.points or env_steps < self.next_point * self.tune.eval_every_env_steps:
            return
        episodes = max(1, self.tune.episodes // 2)
        with torch.random.fork_rng(devices=[]):  # the run's actions are drawn from it (serial)
            score = training_score(self.config, [m.eval() for m in models], episodes, self.tune.eval_seed)
        for m in models:
            m.train()
        self.trial.report(score, self.offset + self.next_point)
        self.next_point += 1
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {env_steps} env steps with score {score:.3f}")


def _open_study(tune: TuneConfig, url: str, job: int) -> Any:
    """The study in ``url`` (created or continued), with a sampler seeded for this job."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():  # heartbeats are marked experimental; they are what resumes trials
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        rdb = RDBStorage(
            url,
            heartbeat_interval=30,
            grace_period=90,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )
    return optuna.create_study(
        study_name=tune.name,
        storage=rdb,
        load_if_exists=True,
        direction="maximize",
        # jobs sharing a study draw different candidates: equal samplers would repeat trials
        sampler=optuna.samplers.TPESampler(seed=tune.base_config().seed + job),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )


def _optimize(tune: TuneConfig, tune_dir: Path, url: str, job: int, total_trials: int) -> None:
    """Run trials in this process until the study holds ``total_trials`` finished or running ones."""
    import optuna

    study = _open_study(tune, url, job)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, tune.space)
        scores = []
        for seed in range(tune.seeds):
            config = trial_config(tune, values, seed, trial.number)
            run_dir = tune_dir / f"trial{trial.number}" / f"seed{seed}"
            _say(f"trial {trial.number}, seed {seed}: training {config.runner.total_env_steps:,} env steps")
            train(config, run_dir, hook=PruningHook(trial, tune, config, seed))
            models, _ = RunDir(run_dir).load_models()
            scores.append(training_score(config, models, tune.episodes, tune.eval_seed))
            trial.set_user_attr(f"seed{seed}", scores[-1])
        return float(np.mean(scores))

    while len(study.trials) < total_trials:  # re-read: other jobs add trials too
        study.optimize(objective, n_trials=1, catch=(RuntimeError,))
        last = study.trials[-1]
        score = "" if last.value is None else f" {last.value:.3f}"
        _say(f"trial {last.number}: {last.state.name.lower()}{score} ({len(study.trials)} of {total_trials})")


def _say(line: str) -> None:
    """A progress line on stderr (also from a tuning job's own process)."""
    print(f"tune: {line}", file=sys.stderr, flush=True)


def run_tuning(
    tune: TuneConfig, tune_dir: Path, trials: int, storage: str | None = None, jobs: int = 1
) -> Any:
    """Run ``trials`` more trials of the study (created or continued) in ``jobs`` processes at
    once, each one trial at a time; writes ``best.yaml``."""
    import multiprocessing as mp

    from uavrl.runners.supervise import refuse_unguarded_start

    refuse_unguarded_start()
    tune_dir.mkdir(parents=True, exist_ok=True)
    (tune_dir / TUNE_FILE).write_text(yaml.safe_dump(tune.model_dump(mode="json"), sort_keys=False))
    url = storage or f"sqlite:///{(tune_dir / 'optuna.db').resolve()}"
    study = _open_study(tune, url, 0)
    total = len(study.trials) + trials
    if jobs == 1:
        _optimize(tune, tune_dir, url, 0, total)
    else:
        ctx = mp.get_context("spawn")
        processes = [
            ctx.Process(target=_optimize, args=(tune, tune_dir, url, job, total), name=f"uavrl-tune-{job}")
            for job in range(jobs)
        ]
        for p in processes:
            p.start()
        try:
            for p in processes:
                p.join()
        finally:  # Ctrl-C: no job outlives the command; the storage keeps every finished trial
            for p in processes:
                if p.is_alive():
                    p.terminate()
                    p.join()
        failed = [p.name for p in processes if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"tuning job(s) {', '.join(failed)} failed; rerun the command to continue")
    study = _open_study(tune, url, 0)
    write_best(tune, study, tune_dir, url)
    return study


def write_best(tune: TuneConfig, study: Any, tune_dir: Path, url: str) -> Path | None:
    """The base config with the best trial's values, headed by a comment naming the study."""
    complete = [t for t in study.trials if t.value is not None and t.state.name == "COMPLETE"]
    if not complete:
        return None
    best = max(complete, key=lambda t: t.value)
    config = apply_overrides(
        tune.base_config().to_dict(),
        [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in best.params.items()],
    )
    header = (
        f"# Tuned by `uavrl tune`: Optuna study {tune.name!r} in {url}, trial {best.number} of "
        f"{len(study.trials)}, score {best.value:.4f} (greedy mean return on the training cells, "
        f"mean of {tune.seeds} seeds); tuned: {', '.join(best.params)}.\n"
    )
    path = tune_dir / BEST_FILE
    path.write_text(header + yaml.safe_dump(config_from_dict(config).to_dict(), sort_keys=False))
    return path
