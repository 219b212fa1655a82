"""Multi-seed studies: arms x ablation rows x seeds, trained in parallel, resumable, evaluated alike.

A study directory holds::

    study.yaml                          the resolved study config
    references.csv (+ .json)            reference policies on every evaluation cell
    runs/<arm>/<ablation>/seed<k>/      one training run (config.yaml with its hash,
                                        training_log.csv, checkpoints/, summary.json, job.log)
                                        plus eval.csv and eval.json (the study's evaluation)
    results.csv                         one row per (arm, ablation, seed, model, cell, selection)

Each run executes in its own process (``python -m uavrl.experiments.study RUN_DIR``), at most
``parallel`` at a time. A rerun skips every run whose ``summary.json`` is finished with the same
config hash and whose evaluation matches the study's; an interrupted run resumes from its last
checkpoint; a run whose config changed is moved aside (``<dir>.stale-<hash>``) and rerun.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import Field, ValidationError, model_validator

from uavrl.config import (
    HASH_NEUTRAL,
    RUNNER_ADAPTER,
    Config,
    ConfigSection,
    apply_overrides,
    config_from_dict,
    content_hash,
    format_validation_error,
    read_with_base,
    run_config_identity,
)
from uavrl.envs.presets import DEFAULT_PRESET
from uavrl.envs.tuning import policy_params
from uavrl.envs.worlds import REGIMES, TRAIN_WORLD, Regime, World
from uavrl.errors import ConfigError
from uavrl.experiments.evaluate import (
    bound_results,
    eval_worlds,
    evaluate_policies,
    regime_worlds,
    run_policies,
    run_references,
    training_cells,
    training_regime,
)
from uavrl.experiments.rundir import RunDir
from uavrl.experiments.train import git_commit, resume, train, write_config
from uavrl.fileio import write_atomically
from uavrl.runners.supervise import refuse_unguarded_start

Selection = Literal["greedy", "stochastic"]

RESULTS_COLUMNS = [
    "arm",
    "ablation",
    "seed",
    "model",
    "cell",
    "regime",
    "transfer",
    "held_out",
    "train_cells",
    "selection",
    "episodes",
    "mean_return",
]
REFERENCE_ARM = "reference"
REFERENCE_SELECTION = "rule"
EVAL_FILE = "eval.csv"
EVAL_META = "eval.json"
STUDY_EVAL_FILE = "study_eval.json"
JOB_LOG = "job.log"
STUDY_FILE = "study.yaml"
REFERENCES_FILE = "references.csv"
REFERENCES_META_FILE = "references.json"
# Bumped when the set of reference policies changes: older references.csv files are recomputed.
REFERENCES_VERSION = 2
RESULTS_FILE = "results.csv"
CONFIRMATORY_FILE = "confirmatory.json"
# Settings that define an arm or a seed; an ablation row may not change them.
_RESERVED = ("seed", "name", "runner.share", "runner.total_env_steps", "runner.kind")


def _both_selections() -> list[Selection]:
    return ["greedy", "stochastic"]


Arm = Literal["a3c", "individual", "a2c", "a3c_data", "impala"]
SHARED_MODEL_ARMS = ("a3c", "a3c_equal_updates", "a2c", "a3c_data", "impala")
"""Arms whose run trains one model for all workers (A3C and its relatives)."""
RUNNER_ARMS = ("a2c", "a3c_data", "impala")
"""Arms that are a runner kind of their own (the others are ``a3c`` with or without sharing)."""
INDIVIDUAL_ARMS = ("individual", "individual_equal_steps", "individual_all_cells", "individual_tuned")
"""Arms whose run trains one model per worker, without sharing."""


@dataclass(frozen=True)
class ControlArm:
    """A control of the A3C-vs-individual comparison: the ``a3c`` or ``individual`` arm with one
    thing changed, run in the ablation rows that its study field (``rows_field``) names.

    ``worker_budgets``: the run's env steps in units of ``env_steps_per_worker``, given the
    number of workers N (the ``a3c`` and ``individual`` arms get N). ``overrides_field``: a
    study field of ``--set`` overrides applied after the row's (the arm's own tuned values)."""

    rows_field: str
    worker_budgets: Callable[[int], int]
    overrides: tuple[str, ...] = ()
    overrides_field: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        """The study fields that define this arm."""
        return (self.rows_field,) + ((self.overrides_field,) if self.overrides_field else ())


CONTROL_ARMS = {
    # as many updates of the A3C model as one individual model gets
    "a3c_equal_updates": ControlArm("equal_updates_rows", lambda n: 1),
    # as many env steps per individual model as the A3C model gets
    "individual_equal_steps": ControlArm("equal_steps_rows", lambda n: n * n),
    # each individual model steps every training cell, as the A3C model does
    "individual_all_cells": ControlArm("all_cells_rows", lambda n: n, ("env.cells_by=copy",)),
    # the individual arm with values tuned for it (its own Optuna study)
    "individual_tuned": ControlArm("individual_tuned_rows", lambda n: n, (), "individual_tuned_set"),
}
LEARNED_ARMS = (*SHARED_MODEL_ARMS, *INDIVIDUAL_ARMS)


def _both_arms() -> list[Arm]:
    return ["a3c", "individual"]


def _baseline_only() -> dict[str, list[str]]:
    return {"baseline": []}


class StudyEvaluation(ConfigSection):
    """How every policy is evaluated: the same cells, streams and env parameters for all.

    ``env_params`` (preset, reward scale...) are the evaluation's, not the training run's, so
    returns are comparable across ablation rows that train with another reward scale or
    cloud capacity. ``held_out`` in ``results.csv`` marks the cells of ``held_out_cells``.
    """

    episodes: int = Field(100, ge=1)
    seed: int = Field(1_000_000, ge=0)
    train_cells: list[str] = Field(default_factory=lambda: ["seen"])
    held_out_cells: list[str] = Field(default_factory=lambda: ["held_out"])
    selections: list[Selection] = Field(default_factory=_both_selections)
    env_params: dict[str, Any] = Field(default_factory=lambda: {"preset": DEFAULT_PRESET})
    tuning_episodes: int = Field(100, ge=1, description="episodes per candidate when tuning the rules")
    # What the references hold, not how a run is evaluated: left out of the hash at their defaults.
    bound: bool = Field(
        True,
        description="paper: the hindsight bound of every evaluation world, a row of references.csv",
        json_schema_extra=HASH_NEUTRAL,
    )
    bound_time_limit: float = Field(
        1.0,
        gt=0.0,
        description="seconds per episode's integer programme; past it the solver's dual bound "
        "(still a bound) is reported",
        json_schema_extra=HASH_NEUTRAL,
    )

    def hash(self) -> str:
        return content_hash(self)


class StudyConfig(ConfigSection):
    """Arms x ablation rows x seeds on a base run config.

    - ``base``: a run config (as in ``configs/*.yaml``), on ``uavrl/Offload-v0`` or any
      Gymnasium env. An env without scenario cells is evaluated in one world (the env with the
      base's params, named by its id), greedy and stochastic, beside a uniformly random policy;
      ``evaluation``'s cells and ``env_params`` apply to ``uavrl/Offload-v0`` only.
    - ``arms``: ``a3c`` (share=True) and ``individual`` (share=False), identical otherwise;
      ``a2c``, ``a3c_data`` and ``impala`` are those runner kinds on the same config, seeds and
      env-step budget (``impala`` with V-trace targets instead of ``algo.gae_lambda``; when the
      base runs serially, its learner takes one worker's rollout per update, so later workers'
      rollouts were acted by weights up to N - 1 updates old, as in Hogwild);
      the control arms (:data:`CONTROL_ARMS`) run in the rows their field names:
      ``a3c_equal_updates`` (``equal_updates_rows``) is A3C with ``1 / n_workers`` of the env
      steps, so its global model receives as many updates as one individual model;
      ``individual_equal_steps`` (``equal_steps_rows``) is the individual arm with ``n_workers``
      times the env steps, so each of its models gets as many env steps as the A3C model;
      ``individual_all_cells`` (``all_cells_rows``) is the individual arm with every worker
      stepping every training cell (``env.cells_by: copy``), as the A3C model does;
      ``individual_tuned`` (``individual_tuned_rows``) is the individual arm with the
      ``--set`` overrides of ``individual_tuned_set`` after the row's: values tuned for it.
    - ``env_steps_per_worker``: every worker of every arm and row gets this many env steps
      (``runner.total_env_steps = env_steps_per_worker * n_workers``).
    - ``ablations``: row name -> ``--set`` overrides of the base; the first row is the baseline
      and must be empty.
    - ``parallel``: training runs at once, default one per core (each run is one process in
      serial mode, or N + 1 processes otherwise).
    - ``confirmatory``: the study tests claims fixed before it ran (experiments.md). Its seeds
      (``first_seed`` ..) must lie outside ``development_seeds`` (the probes' and tuning's), and
      its evaluation seed outside ``development_eval_seeds``. The first run records the study's
      hash; a report of a study changed since is marked exploratory.
    """

    name: str = "study"
    base: dict[str, Any]
    arms: list[Arm] = Field(default_factory=_both_arms)
    equal_updates_rows: list[str] = Field(default_factory=list)
    equal_steps_rows: list[str] = Field(default_factory=list)
    all_cells_rows: list[str] = Field(default_factory=list, json_schema_extra=HASH_NEUTRAL)
    individual_tuned_rows: list[str] = Field(default_factory=list, json_schema_extra=HASH_NEUTRAL)
    individual_tuned_set: list[str] = Field(default_factory=list, json_schema_extra=HASH_NEUTRAL)
    seeds: int = Field(10, ge=1)
    first_seed: int = Field(0, ge=0)
    env_steps_per_worker: int = Field(ge=1)
    ablations: dict[str, list[str]] = Field(default_factory=_baseline_only)
    parallel: int | None = Field(None, ge=1)
    headline_rows: list[str] = Field(
        default_factory=list, description="rows with full tables (default: baseline)"
    )
    evaluation: StudyEvaluation = Field(default_factory=StudyEvaluation)
    confirmatory: bool = False
    development_seeds: tuple[int, int] = (0, 99)
    development_eval_seeds: list[int] = Field(default_factory=lambda: [1_000_000])

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        if not self.ablations:
            raise ValueError("ablations must name at least the baseline row")
        if self.confirmatory:
            self._check_confirmatory_seeds()
        first, overrides = next(iter(self.ablations.items()))
        if overrides:
            raise ValueError(f"the first ablation row ({first!r}) is the baseline and must be empty")
        if len(set(self.arms)) != len(self.arms) or not self.arms:
            raise ValueError(f"arms must be distinct and non-empty, got {self.arms}")
        for field in [*(arm.rows_field for arm in CONTROL_ARMS.values()), "headline_rows"]:
            for row in getattr(self, field):
                if row not in self.ablations:
                    raise ValueError(f"{field} names {row!r}, not one of {list(self.ablations)}")
        for row, items in self.ablations.items():
            if "/" in row or row.startswith("."):
                raise ValueError(f"ablation row name {row!r} must not contain '/' or start with '.'")
            for item in items:
                key = item.partition("=")[0]
                if key in _RESERVED:
                    raise ValueError(f"ablation {row!r} may not set {key!r} (the study sets it)")
        for item in self.individual_tuned_set:
            key = item.partition("=")[0]
            if key in _RESERVED or "=" not in item:
                raise ValueError(
                    f"individual_tuned_set: {item!r} must be KEY=VALUE of a setting the study does not set "
                    f"(not one of {list(_RESERVED)})"
                )
        if self.individual_tuned_rows and not self.individual_tuned_set:
            raise ValueError(
                "individual_tuned_rows needs individual_tuned_set: the individual arm's tuned values"
            )
        if (self.base.get("runner") or {}).get("kind", "a3c") != "a3c":
            raise ValueError("base must be an a3c run: the arms choose the runner kind")
        runs = plan(self, Path("."))
        envs = {run.config.env.id for run in runs}
        if len(envs) > 1:
            raise ValueError(f"every row must train on one env, got {sorted(envs)}")
        preset = runs[0].config.env.uavrl_preset
        if preset is not None:
            preset.resolve_cells([*self.evaluation.train_cells, *self.evaluation.held_out_cells])
        return self

    def _check_confirmatory_seeds(self) -> None:
        low, high = self.development_seeds
        first, last = self.first_seed, self.first_seed + self.seeds - 1
        if first <= high and last >= low:
            raise ValueError(
                f"confirmatory: seeds {first}-{last} (first_seed={first}, seeds={self.seeds}) overlap the "
                f"development seeds {low}-{high} that probes and tuning used; set first_seed > {high}, "
                "or confirmatory: false for an exploratory study"
            )
        if self.evaluation.seed in self.development_eval_seeds:
            raise ValueError(
                f"confirmatory: evaluation.seed {self.evaluation.seed} was used in development "
                f"(development_eval_seeds {self.development_eval_seeds}); fix a new one before the run"
            )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def hash(self) -> str:
        # how many runs train at once is not what a study tests: a resumed study may use more cores
        return content_hash(self, {"base": run_config_identity(self.base), "parallel": None})

    @property
    def runs_at_once(self) -> int:
        return self.parallel or os.cpu_count() or 1


def load_study(path: str | Path, overrides: list[str] | None = None) -> StudyConfig:
    """Read a study YAML, apply ``--set`` overrides (``seeds=2``, ``base.algo.lr=1e-3``), validate.

    ``base`` may be a mapping or the path of a run config, relative to the study file; then
    ``base_set`` (a list of ``--set`` strings) is applied to it.
    """
    data = read_with_base(path, overrides, "study config")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


@dataclass(frozen=True)
class PlannedRun:
    arm: str
    ablation: str
    seed: int
    config: Config
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.arm}/{self.ablation}/seed{self.seed}"


def run_config(study: StudyConfig, arm: str, ablation: str, seed: int) -> Config:
    """The resolved run config of one (arm, ablation row, seed)."""
    data = apply_overrides(copy.deepcopy(study.base), study.ablations[ablation])
    try:
        n_workers = config_from_dict(data).runner.n_workers
    except ConfigError as err:
        raise ConfigError(f"ablation {ablation!r}: {err}") from None
    control = CONTROL_ARMS.get(arm)
    budgets = n_workers if control is None else control.worker_budgets(n_workers)
    overrides = [
        f"name={study.name}/{arm}/{ablation}/seed{seed}",
        f"seed={study.first_seed + seed}",
        f"runner.share={arm not in INDIVIDUAL_ARMS}",
        f"runner.total_env_steps={study.env_steps_per_worker * budgets}",
        "log.progress=false",
        *(() if control is None else control.overrides),
        *(getattr(study, control.overrides_field) if control and control.overrides_field else ()),
    ]
    if arm in RUNNER_ARMS:
        overrides.append(f"runner.kind={arm}")
    if arm == "impala":
        overrides.append("algo.gae_lambda=null")
        if RUNNER_ADAPTER.validate_python(data.get("runner", {})).serial:
            overrides.append("runner.learner_batch=1")
    data = apply_overrides(data, overrides)
    try:
        return config_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"ablation {ablation!r}, arm {arm!r}: {err}") from None


def plan(study: StudyConfig, study_dir: Path) -> list[PlannedRun]:
    """Every run of the study, rows in config order, then arms, then seeds."""
    runs = []
    for ablation in study.ablations:
        arms: list[str] = list(study.arms)
        arms += [name for name, c in CONTROL_ARMS.items() if ablation in getattr(study, c.rows_field)]
        for arm in arms:
            for seed in range(study.seeds):
                config = run_config(study, arm, ablation, seed)
                run_dir = study_dir / "runs" / arm / ablation / f"seed{seed}"
                runs.append(PlannedRun(arm, ablation, seed, config, run_dir))
    return runs


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(run_dir: Path, config_hash: str, eval_hash: str) -> bool:
    """Trained to the end with this config and evaluated with this evaluation."""
    meta = _read_json(run_dir / EVAL_META)
    return (
        RunDir(run_dir).is_trained(config_hash)
        and meta is not None
        and meta.get("config_hash") == config_hash
        and meta.get("eval_hash") == eval_hash
        and (run_dir / EVAL_FILE).exists()
    )


def prepare_run(run: PlannedRun, evaluation: StudyEvaluation) -> None:
    """Write the run's config and evaluation; a directory holding another config is moved aside."""
    config_path = RunDir(run.run_dir).config_file
    if config_path.exists():
        stored = yaml.safe_load(config_path.read_text()) or {}
        old_hash = (stored.get("meta") or {}).get("config_hash")
        if old_hash != run.config.hash():
            run.run_dir.rename(run.run_dir.with_name(f"{run.run_dir.name}.stale-{old_hash}"))
    if not config_path.exists():
        run.run_dir.mkdir(parents=True, exist_ok=True)
        write_config(run.config, run.run_dir)
    write_atomically(run.run_dir / STUDY_EVAL_FILE, evaluation.model_dump_json())


def evaluation_cells(evaluation: StudyEvaluation, config: Config) -> list[tuple[Any, bool]]:
    """(cell, held out) for every evaluation cell of a run, its own training cells first (cells
    of its preset's grid).

    A run's training cells are its own ``worker_cells``; every other cell of the study's
    ``train_cells`` and ``held_out_cells`` is held out for it.
    """
    own = training_cells(config)
    named = config.env.cell_preset.resolve_cells([*evaluation.train_cells, *evaluation.held_out_cells])
    others = [c for c in named if c not in own]
    return [(c, False) for c in own] + [(c, True) for c in others]


def run_regimes(config: Config) -> list[tuple[Regime, bool]]:
    """(regime, transfer): the run's training regime first, then the other one as a transfer
    (an env without cloud pools or clouds has only its own)."""
    trained_in = training_regime(config)
    if config.env.uavrl_preset is None:
        return [(trained_in, False)]
    return [(trained_in, False)] + [(r, True) for r in REGIMES if r != trained_in]


def study_worlds(
    evaluation: StudyEvaluation, config: Config, regime: Regime
) -> tuple[list[World], dict[str, bool]]:
    """A run's evaluation worlds in ``regime`` (evaluation env params, as its preset keeps them)
    and each one's held-out flag; for an env without cells, its one world."""
    if config.env.uavrl_preset is None:
        return eval_worlds(config), {config.env.id: False}
    cells = evaluation_cells(evaluation, config)
    worlds = regime_worlds(config, regime, [c for c, _ in cells], evaluation.env_params)
    held_out = {c.name: flag for c, flag in cells} | {TRAIN_WORLD: False}
    return worlds, held_out


def _evaluate_in_worlds(
    config: Config,
    policies: list[Any],
    worlds: list[World],
    evaluation: StudyEvaluation,
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """``evaluate_policies`` in ``worlds`` with the evaluation's episodes and seed."""
    return evaluate_policies(policies, worlds, evaluation.episodes, evaluation.seed, config.env.id, progress)


def metric_columns(results: pd.DataFrame) -> list[str]:
    """The task-metric columns of ``results.csv`` (its preset's, after :data:`RESULTS_COLUMNS`)."""
    return [c for c in results.columns if c not in RESULTS_COLUMNS]


def _metric_columns(config: Config, table: pd.DataFrame) -> dict[str, pd.Series]:
    """The task-metric columns of a table of a run's evaluation (its preset's), by name."""
    preset = config.env.uavrl_preset
    return {m: table[m] for m in (preset.metrics if preset is not None else ())}


def evaluate_run(run_dir: Path, evaluation: StudyEvaluation) -> pd.DataFrame:
    """Every final model of a run in every evaluation world, in both regimes, each selection mode."""
    models, meta = RunDir(run_dir).load_models()
    config = config_from_dict(meta["config"])
    frames = []
    for regime, transfer in run_regimes(config):
        worlds, held_out = study_worlds(evaluation, config, regime)
        for selection in evaluation.selections:
            policies = run_policies(config, models, regime, selection == "greedy", evaluation.seed)
            frame = _evaluate_in_worlds(config, policies, worlds, evaluation)
            frame["selection"] = selection
            frame["transfer"] = transfer
            frame["held_out"] = frame["cell"].map(held_out)
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    return pd.DataFrame(
        {
            "model": table["policy"],
            "cell": table["cell"],
            "regime": table["regime"],
            "transfer": table["transfer"],
            "held_out": table["held_out"],
            "train_cells": train_cells_label(config),
            "selection": table["selection"],
            "episodes": table["episodes"],
            "mean_return": table["mean"],
            **_metric_columns(config, table),
        }
    )


def cell_list(cells: list[Any]) -> str:
    """Cell names joined with ``;`` (a run's training cells in ``results.csv``)."""
    return ";".join(c.name for c in cells)


def train_cells_label(config: Config) -> str:
    """A run's training cells in ``results.csv``: its cells, or the env id for an env without."""
    return cell_list(training_cells(config)) if config.env.uavrl_preset is not None else config.env.id


def run_job(run_dir: Path) -> None:
    """Train (or resume, or skip if trained) one run, then evaluate it for the study."""
    run = RunDir(run_dir)
    config = run.config()
    evaluation = StudyEvaluation.model_validate_json((run_dir / STUDY_EVAL_FILE).read_text())
    if not run.is_trained(config.hash()):
        if run.has_checkpoint():
            resume(run_dir)
        else:  # a failed attempt that never checkpointed starts over with the same config
            train(config, run_dir)
    table = evaluate_run(run_dir, evaluation)
    table.to_csv(run_dir / EVAL_FILE, index=False)
    meta = {"config_hash": config.hash(), "eval_hash": evaluation.hash()}
    write_atomically(run_dir / EVAL_META, json.dumps(meta, indent=2))


def write_references(
    study: StudyConfig, study_dir: Path, report: Callable[[str], None] | None = None
) -> pd.DataFrame:
    """Reference policies in every world the study's runs are judged in.

    One set per ablation row and regime its runs are judged in (an env without cloud pools: one
    regime, a random policy): thresholds tuned in that regime on the row's own training cells
    (its baseline run config; every arm and seed of a row shares them), then evaluated in every
    evaluation world of the row. Rows with the same training world reuse one computation.
    ``report(text)`` hears what it is doing (a `mec` study's references take minutes).
    """
    say = report or (lambda _: None)
    evaluation = study.evaluation
    path, meta_path = study_dir / REFERENCES_FILE, study_dir / REFERENCES_META_FILE
    meta = _read_json(meta_path)
    keys = _reference_keys(study)
    signature = {
        "eval_hash": evaluation.hash(),
        "rows": keys,
        "references": REFERENCES_VERSION,
        "bound": [evaluation.bound, evaluation.bound_time_limit],
    }
    if path.exists() and meta is not None and {k: meta.get(k) for k in signature} == signature:
        return pd.read_csv(path)
    frames, tuned, done = [], {}, {}
    if evaluation.bound:
        say("hindsight bounds")
    bounds = _bound_tables(study, lambda i, n, name: say(f"hindsight bounds: {i + 1} of {n} worlds ({name})"))
    for ablation, config in _row_configs(study).items():
        for regime, _ in run_regimes(config):
            key = f"{regime}|{keys[ablation]}"
            if key not in done:
                where = f"row {ablation}, {regime}"
                say(f"{where}: tuning the rules")
                worlds, held_out = study_worlds(evaluation, config, regime)
                policies = run_references(
                    config, regime, evaluation.tuning_episodes, evaluation.seed, evaluation.env_params
                )
                table = _evaluate_in_worlds(
                    config, policies, worlds, evaluation, _evaluation_reporter(say, where)
                )
                table["params"] = table["policy"].map(
                    {p.name: json.dumps(policy_params(p)) for p in policies}
                )
                if bounds:
                    table = pd.concat([table, *(bounds[_world_key(w)] for w in worlds)], ignore_index=True)
                table["held_out"] = table["cell"].map(held_out)
                table["train_cells"] = train_cells_label(config)
                done[key] = table
                tuned[key] = {p.name: policy_params(p) for p in policies if policy_params(p)}
            frames.append(done[key].assign(ablation=ablation))
    table = pd.concat(frames, ignore_index=True)
    table.to_csv(path, index=False)
    meta_path.write_text(json.dumps({**signature, "params": tuned}, indent=2))
    return table


def _evaluation_reporter(say: Callable[[str], None], where: str) -> Callable[[int, int, str], None]:
    def world(i: int, n: int, name: str) -> None:
        say(f"{where}: evaluating {i + 1}/{n} ({name})")

    return world


def record_confirmatory(study: StudyConfig, study_dir: Path) -> None:
    """A confirmatory study's first run fixes what it tests: the study (its settings and hash)
    and the commit. A later run of the study with arms added (in every row) or control arms added
    in some rows, and nothing else changed, records an amendment, provided none of the added runs
    has started: their seeds and evaluation were fixed before they ran, so the study stays
    confirmatory. Any other change is left unrecorded, and the report says exploratory."""
    path = study_dir / CONFIRMATORY_FILE
    if not study.confirmatory:
        return
    entry = {
        "study_hash": study.hash(),
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d"),
        "study": study.to_dict(),
    }
    record = _read_json(path)
    if record is None:
        write_atomically(path, json.dumps(entry, indent=2))
        return
    latest = _latest_recorded(record)
    added = None if latest is None or latest.hash() == study.hash() else _added_controls(latest, study)
    if latest is None or added is None:
        return
    previous = {r.label for r in plan(latest, study_dir)}
    if any(r.run_dir.exists() for r in plan(study, study_dir) if r.label not in previous):
        return
    record.setdefault("amendments", []).append({**entry, "added": added})
    write_atomically(path, json.dumps(record, indent=2))


def _latest_recorded(record: dict[str, Any]) -> StudyConfig | None:
    """The study as last recorded in ``confirmatory.json`` (first run or last amendment), from
    its settings (its hash is the one of the code of its day); None when it holds none."""
    entry = (record.get("amendments") or [record])[-1]
    try:
        return StudyConfig.model_validate(entry["study"])
    except (KeyError, TypeError, ValidationError):
        return None


def _added_controls(before: StudyConfig, after: StudyConfig) -> dict[str, list[str]] | None:
    """The arms and control arms ``after`` adds to ``before`` (arm -> rows), or None unless
    ``after`` is ``before`` with arms added (in every row) or control arms added in some rows,
    and nothing else changed."""
    fields = {arm: control.rows_field for arm, control in CONTROL_ARMS.items()}
    added = {
        arm: [row for row in getattr(after, field) if row not in getattr(before, field)]
        for arm, field in fields.items()
    } | {arm: list(after.ablations) for arm in after.arms if arm not in before.arms}
    kept = set(before.arms) <= set(after.arms) and all(
        set(getattr(before, field)) <= set(getattr(after, field)) for field in fields.values()
    )
    # an arm's own overrides may be set with its first rows, never changed once it has run
    settled = all(
        getattr(before, c.overrides_field) == getattr(after, c.overrides_field)
        for c in CONTROL_ARMS.values()
        if c.overrides_field and getattr(before, c.rows_field)
    )
    arm_fields = ["arms", *(field for control in CONTROL_ARMS.values() for field in control.fields)]
    unchanged = after.model_copy(update={field: getattr(before, field) for field in arm_fields})
    if not kept or not settled or unchanged.hash() != before.hash() or not any(added.values()):
        return None
    return {arm: rows for arm, rows in added.items() if rows}


def _named_controls(amendment: dict[str, Any]) -> str:
    added = amendment.get("added") or {}
    return " and ".join(f"{arm} ({', '.join(rows)})" for arm, rows in added.items()) or "control arms"


def study_standing(study: StudyConfig, study_dir: Path) -> tuple[str, str]:
    """``("confirmatory", why)`` for a confirmatory study unchanged since its first run or its
    last amendment (:func:`record_confirmatory`), else ``("exploratory", why)``."""
    if not study.confirmatory:
        return "exploratory", "seeds and settings were not fixed as a confirmatory study"
    record = _read_json(study_dir / CONFIRMATORY_FILE)
    if record is None:
        return "exploratory", f"no {CONFIRMATORY_FILE}: the study never ran as confirmatory"
    amendments = record.get("amendments") or []
    latest = _latest_recorded(record)
    recorded = (amendments or [record])[-1].get("study_hash")
    if (recorded if latest is None else latest.hash()) != study.hash():
        return "exploratory", f"the study changed since its last recorded run (hash {recorded})"
    seeds = f"{study.first_seed}-{study.first_seed + study.seeds - 1}"
    why = (
        f"seeds {seeds} and evaluation seed {study.evaluation.seed} fixed before the run; study hash "
        f"{record['study_hash']}, first run on {record.get('started', record.get('date'))} at commit "
        f"{record.get('git_commit')}"
    )
    for amendment in amendments:
        why += (
            f"; amended on {amendment.get('date')} at commit {amendment.get('git_commit')} (hash "
            f"{amendment.get('study_hash')}) to add, before they ran, {_named_controls(amendment)}"
        )
    return "confirmatory", why


def _world_key(world: World) -> str:
    """What a world's hindsight bound depends on: its agents' env parameters and pool sharing."""
    return json.dumps([world.name, world.shared, world.agent_params], sort_keys=True)


def _bound_tables(
    study: StudyConfig, progress: Callable[[int, int, str], None] | None = None
) -> dict[str, pd.DataFrame]:
    """The hindsight bound of every evaluation world of a `paper` study (each distinct world
    solved once, ``study.runs_at_once`` worlds at a time), by :func:`_world_key`; empty for
    another env or with ``evaluation.bound`` off. ``progress(i, n, world)`` hears of each world
    solved."""
    evaluation = study.evaluation
    if not evaluation.bound:
        return {}
    worlds: dict[str, World] = {}
    for config in _row_configs(study).values():
        preset = config.env.uavrl_preset
        if preset is None or not preset.has_bound:
            return {}
        for regime, _ in run_regimes(config):
            for world in study_worlds(evaluation, config, regime)[0]:
                worlds.setdefault(_world_key(world), world)
    table = bound_results(
        list(worlds.values()),
        evaluation.episodes,
        evaluation.seed,
        evaluation.bound_time_limit,
        progress=progress,
        processes=study.runs_at_once,
    )
    table["params"] = "{}"
    return {key: table.iloc[[i]] for i, key in enumerate(worlds)}


def _row_configs(study: StudyConfig) -> dict[str, Config]:
    """The A3C seed-0 config of every ablation row (what the row's training world is made of)."""
    return {row: run_config(study, "a3c", row, 0) for row in study.ablations}


def _reference_keys(study: StudyConfig) -> dict[str, str]:
    """Per row, the identity of its training world: worker cells, env params and pool sharing."""
    keys = {}
    for row, config in _row_configs(study).items():
        env, preset = config.env, config.env.uavrl_preset
        if preset is not None:
            keys[row] = preset.world_key(
                env.params, env.worker_cells, config.runner.n_workers, env.shared_pool
            )
        else:  # one world, whatever the workers: the env with its params
            keys[row] = f"{env.id}|{json.dumps(env.params, sort_keys=True)}"
    return keys


def collect_results(study: StudyConfig, study_dir: Path) -> pd.DataFrame:
    """``results.csv``: every evaluated run's rows plus the reference policies' rows (per row and
    regime, each in the worlds of that row)."""
    frames = []
    for run in plan(study, study_dir):
        path = run.run_dir / EVAL_FILE
        if not is_finished(run.run_dir, run.config.hash(), study.evaluation.hash()):
            continue
        frame = pd.read_csv(path)
        frame.insert(0, "arm", run.arm)
        frame.insert(1, "ablation", run.ablation)
        frame.insert(2, "seed", run.seed)
        frames.append(frame)
    references = pd.read_csv(study_dir / REFERENCES_FILE)
    row_configs = _row_configs(study)
    study_config = next(iter(row_configs.values()))  # every row trains on one env
    trained_in = {row: training_regime(c) for row, c in row_configs.items()}
    frames.append(
        pd.DataFrame(
            {
                "arm": REFERENCE_ARM,
                "ablation": references["ablation"],
                "seed": study.evaluation.seed,
                "model": references["policy"],
                "cell": references["cell"],
                "regime": references["regime"],
                "transfer": references["regime"] != references["ablation"].map(trained_in),
                "held_out": references["held_out"],
                "train_cells": references["train_cells"],
                "selection": REFERENCE_SELECTION,
                "episodes": references["episodes"],
                "mean_return": references["mean"],
                **_metric_columns(study_config, references),
            }
        )
    )
    results = pd.concat(frames, ignore_index=True)
    results = results[RESULTS_COLUMNS + list(_metric_columns(study_config, results))]
    results.to_csv(study_dir / RESULTS_FILE, index=False)
    return results


@dataclass
class Progress:
    total: int
    done: int = 0
    skipped: int = 0
    running: int = 0
    failed: int = 0
    started: float = 0.0
    durations: tuple[float, ...] = ()
    references: str = ""  # what the references are doing; "" once written
    inside: tuple[str, ...] = ()  # each running run's stage (run_stage), where it can be read

    @property
    def left(self) -> int:
        return self.total - self.done - self.skipped - self.running - self.failed

    def eta_s(self, parallel: int) -> float | None:
        if not self.durations:
            return None
        return float(np.mean(self.durations)) * (self.left + self.running) / parallel

    def line(self, parallel: int) -> str:
        eta = self.eta_s(parallel)
        eta_text = "?" if eta is None else f"{eta / 60:.1f} min"
        line = (
            f"runs: {self.done + self.skipped}/{self.total} done ({self.skipped} skipped), "
            f"{self.running} running, {self.left} left, {self.failed} failed; "
            f"elapsed {(time.time() - self.started) / 60:.1f} min, ETA {eta_text}"
        )
        line += "".join(f"; {stage}" for stage in self.inside)
        return line + (f"; references: {self.references}" if self.references else "")


def run_stage(run: PlannedRun) -> str:
    """Where a running run stands, read from its directory: ``label: starting``, ``label:
    training 40%`` (env steps of its training log's last row over its budget, in steps of 10%)
    or ``label: evaluating`` once its summary says it finished training."""
    run_dir = RunDir(run.run_dir)
    try:
        if run_dir.summary_file.exists() and run_dir.is_trained(run.config.hash()):
            return f"{run.label}: evaluating"
        with run_dir.training_log.open("rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            rows = log.read().decode(errors="replace").splitlines()
        step = float(rows[-1].split(",", 1)[0]) if len(rows) > 1 else 0.0
    except (OSError, ValueError, ConfigError):
        return f"{run.label}: starting"
    share = min(step / run.config.runner.total_env_steps, 1.0)
    return f"{run.label}: training {10 * int(10 * share)}%"


class ReferencesThread(threading.Thread):
    """:func:`write_references` in a thread of the study's parent, beside the runs: no run needs
    the references (each evaluates only its own models), so the first runs start at once
    instead of after minutes of rule tuning and evaluation. ``state`` says what it is doing."""

    def __init__(self, study: StudyConfig, study_dir: Path) -> None:
        super().__init__(name="references", daemon=True)  # an interrupted study leaves no file
        self.study, self.study_dir = study, study_dir
        self.state = "starting"
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            write_references(self.study, self.study_dir, self._report)
        except BaseException as err:  # re-raised by run_study in the parent's thread
            self.error = err
        finally:
            self.state = ""

    def _report(self, text: str) -> None:
        self.state = text


class StudyFailed(RuntimeError):
    """Some runs failed; the others are finished and in ``results.csv``."""


class ProcessJobs:
    """Each run as a ``python -m uavrl.experiments.study RUN_DIR`` process on this machine,
    ``parallel`` at a time, its output in the run's ``job.log``."""

    def __init__(self, parallel: int) -> None:
        self.parallel = parallel
        self.running: dict[str, tuple[PlannedRun, subprocess.Popen[bytes], float]] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def has_room(self) -> bool:
        return len(self.running) < self.parallel

    def local_runs(self) -> list[PlannedRun]:
        """The running runs, their directories on this machine's disk as they train."""
        return [run for run, _, _ in self.running.values()]

    def start(self, run: PlannedRun) -> None:
        with (run.run_dir / JOB_LOG).open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uavrl.experiments.study", str(run.run_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        self.running[run.label] = (run, process, time.time())

    def finished(self, wait_s: float) -> list[tuple[PlannedRun, str | None, float]]:
        """Runs that ended since the last call: (run, error or None, seconds it took)."""
        time.sleep(wait_s)
        done: list[tuple[PlannedRun, str | None, float]] = []
        for label, (run, process, start) in list(self.running.items()):
            code = process.poll()
            if code is None:
                continue
            del self.running[label]
            error = None if code == 0 else f"exit {code}, see {run.run_dir / JOB_LOG}"
            done.append((run, error, time.time() - start))
        return done

    def stop(self) -> None:
        """SIGINT lets each run checkpoint before it exits."""
        for _, process, _ in self.running.values():
            process.send_signal(signal.SIGINT)
        for _, process, _ in self.running.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()


def read_tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, by relative path."""
    return {str(f.relative_to(directory)): f.read_bytes() for f in directory.rglob("*") if f.is_file()}


def write_tree(directory: Path, files: dict[str, bytes]) -> None:
    """Write :func:`read_tree`'s files under ``directory`` (replacing those of the same name)."""
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)


def ray_run_job(files: dict[str, bytes]) -> dict[str, bytes]:
    """A Ray task: one run, from its directory's files (config, evaluation spec, and what an
    earlier attempt checkpointed) to all of its files after :func:`run_job`, so the run
    directory lives on the driver's disk whichever node trained it."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="uavrl-run-") as tmp:
        write_tree(Path(tmp), files)
        run_job(Path(tmp))
        return read_tree(Path(tmp))


class RayJobs:
    """Each run as a Ray task across the cluster: one CPU for a serial run, N + 1 for a run
    of N worker processes; a run that fails is retried once (Ray places the retry, on
    another node where the cluster has room). Results are written back into the run's
    directory on this machine's disk."""

    def __init__(self, address: str | None, local_cpus: int) -> None:
        import ray

        from uavrl.runners.ray_backend import connect

        self.ray = ray
        self.started = connect(address, local_cpus)
        self.running: dict[Any, tuple[PlannedRun, float]] = {}
        self.task = ray.remote(ray_run_job)

    def has_room(self) -> bool:
        return True  # Ray queues what the cluster cannot run yet

    def local_runs(self) -> list[PlannedRun]:
        return []  # a Ray task's run directory comes back only when it ends

    def start(self, run: PlannedRun) -> None:
        r = run.config.runner
        cpus = 1 if r.serial or r.kind == "a2c" else r.n_workers + 1
        task = self.task.options(
            num_cpus=cpus, max_retries=1, retry_exceptions=True, scheduling_strategy="SPREAD"
        )
        self.running[task.remote(read_tree(run.run_dir))] = (run, time.time())

    def finished(self, wait_s: float) -> list[tuple[PlannedRun, str | None, float]]:
        if not self.running:
            time.sleep(wait_s)
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=wait_s)
        done: list[tuple[PlannedRun, str | None, float]] = []
        for ref in ready:
            run, start = self.running.pop(ref)
            try:
                files: dict[str, bytes] = self.ray.get(ref)
            except self.ray.exceptions.RayError as err:
                (run.run_dir / JOB_LOG).write_text(f"failed twice on Ray:\n{err}\n")
                done.append((run, f"failed on Ray twice, see {run.run_dir / JOB_LOG}", time.time() - start))
                continue
            write_tree(run.run_dir, files)
            done.append((run, None, time.time() - start))
        return done

    def stop(self) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        if self.started:
            self.ray.shutdown()


def run_study(
    study: StudyConfig,
    study_dir: Path,
    report: Callable[[Progress], None] | None = None,
    poll_s: float = 0.5,
    backend: Literal["process", "ray"] = "process",
    address: str | None = None,
) -> tuple[pd.DataFrame, Progress]:
    """Run (or finish) every run of the study, then write ``results.csv``.

    ``backend``: ``process`` runs ``study.parallel`` runs at a time on this machine; ``ray``
    runs them as Ray tasks on the cluster at ``address`` (default: Ray started here). Either
    way finished runs are skipped by config and evaluation hash, and every run directory is
    under ``study_dir``.
    """
    refuse_unguarded_start()
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / STUDY_FILE).write_text(yaml.safe_dump(study.to_dict(), sort_keys=False))
    record_confirmatory(study, study_dir)
    runs = plan(study, study_dir)
    eval_hash = study.evaluation.hash()
    progress = Progress(total=len(runs), started=time.time())
    pending = []
    for run in runs:
        if is_finished(run.run_dir, run.config.hash(), eval_hash):
            progress.skipped += 1
        else:
            prepare_run(run, study.evaluation)
            pending.append(run)
    references = ReferencesThread(study, study_dir)
    references.start()
    # Seed by seed across rows and arms: a study stopped early still has every row's first seeds.
    pending.sort(key=lambda run: run.seed)
    failures: list[str] = []
    jobs: ProcessJobs | RayJobs = (
        RayJobs(address, study.runs_at_once) if backend == "ray" else ProcessJobs(study.runs_at_once)
    )
    try:
        while pending or jobs.running or references.is_alive():
            while pending and jobs.has_room():
                jobs.start(pending.pop(0))
                progress.running = len(jobs.running)
            progress.references = references.state
            progress.inside = tuple(run_stage(run) for run in jobs.local_runs())
            if report:
                report(progress)
            for run, error, seconds in jobs.finished(poll_s):
                if error is None:
                    progress.done += 1
                    progress.durations = (*progress.durations, seconds)
                else:
                    progress.failed += 1
                    failures.append(f"{run.label} ({error})")
            progress.running = len(jobs.running)
    finally:  # also on Ctrl-C or an error here
        jobs.stop()
    progress.references, progress.inside = "", ()
    if report:
        report(progress)
    if references.error is not None:
        raise references.error
    results = collect_results(study, study_dir)
    if failures:
        raise StudyFailed(f"{len(failures)} run(s) failed: " + "; ".join(failures))
    return results, progress


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    run_job(Path(sys.argv[1]))
