"""One run directory: where its files are, and what can be read back from them.

```
<run_dir>/
  config.yaml        the resolved config (+ provenance under ``meta``), written before training
  summary.json       closes the run: finished, failed or interrupted
  training_log.csv   one row per worker-episode; an update's losses on its first row only
  eval_log.csv       periodic evaluations (``eval.every_env_steps``)
  checkpoints/       <tag>.safetensors + <tag>.json (config, architecture, counters)
  tensorboard/
```

Training writes these (``experiments.train``, ``runners.session``); everything that reads a
finished or interrupted run (evaluate, export, bench decide, study, tune, pareto) reads it
through :class:`RunDir`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from uavrl.config import Config, load_config
from uavrl.errors import CheckpointError, ConfigError
from uavrl.fileio import write_atomically
from uavrl.runners.metrics import EVAL_LOG_FILE, LOG_FILE, TENSORBOARD_DIR
from uavrl.runners.session import CHECKPOINT_DIR, LAST

if TYPE_CHECKING:  # torch is imported when models are loaded
    from uavrl.nn.models import ActorCritic

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"


def next_free_run_dir(base: Path) -> Path:
    """``base`` if no run has checkpoints there, else the first of ``base_2``, ``base_3``, ...
    without one (a second run of one config gets a numbered directory, as RL-Zoo's logs do)."""
    candidate, number = base, 1
    while RunDir(candidate).has_checkpoint():
        number += 1
        candidate = base.with_name(f"{base.name}_{number}")
    return candidate


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory, by what they are."""

    path: Path

    def __init__(self, path: str | Path) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def training_log(self) -> Path:
        return self.path / LOG_FILE

    @property
    def eval_log(self) -> Path:
        return self.path / EVAL_LOG_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD_DIR

    def holds_run(self) -> bool:
        """A run was started here: it wrote a summary or a checkpoint."""
        return self.summary_file.exists() or self.checkpoints.exists()

    def has_checkpoint(self) -> bool:
        """A checkpoint to resume from was written (``last``, or the pair it replaced)."""
        return self.checkpoints.is_dir() and any(self.checkpoints.glob("*.json"))

    def clear_attempt(self) -> None:
        """Remove what a run that never checkpointed left (summary, logs, TensorBoard files), so
        that it can start over in this directory; its config is rewritten by the new start."""
        if self.has_checkpoint():
            raise ConfigError(f"{str(self.path)!r} holds checkpoints: resume it with --resume {self.path}")
        for path in (self.summary_file, self.training_log, self.eval_log):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.tensorboard, ignore_errors=True)
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def config(self) -> Config:
        """The run's resolved ``config.yaml``."""
        if not self.config_file.exists():
            raise ConfigError(f"{str(self.path)!r} is not a run directory: no {CONFIG_FILE} there")
        return load_config(self.config_file)

    def provenance(self) -> dict[str, Any]:
        """The ``meta`` of ``config.yaml``: config hash, commit and versions that trained the run
        (empty when there is none)."""
        if not self.config_file.exists():
            return {}
        meta = (yaml.safe_load(self.config_file.read_text()) or {}).get("meta")
        return meta if isinstance(meta, dict) else {}

    def summary(self) -> dict[str, Any] | None:
        """``summary.json``, or None before the run wrote one."""
        if not self.summary_file.exists():
            return None
        try:
            summary = json.loads(self.summary_file.read_text())
        except json.JSONDecodeError:
            summary = None
        if not isinstance(summary, dict):
            raise ConfigError(f"{self.summary_file}: not a valid summary (a JSON object expected)")
        return summary

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` whole or not at all: a run killed while writing it keeps the
        one it had, and can be resumed."""
        write_atomically(self.summary_file, json.dumps(summary, indent=2))

    def finished_summary(self) -> dict[str, Any] | None:
        """The summary of a run that finished its whole budget (``runner.total_env_steps`` of its
        ``config.yaml``, or stopped at its target return), else None: a failed, interrupted or
        extended run has more to do."""
        summary = self.summary()
        if summary is None or summary.get("status") != "finished":
            return None
        complete = summary.get("env_steps", 0) >= self.config().runner.total_env_steps
        return summary if complete or summary.get("stopped_at_target", False) else None

    def is_trained(self, config_hash: str) -> bool:
        """``summary.json`` says the run finished training with this config (a study's test: a
        directory holding another config's run must be trained again)."""
        try:
            summary = self.summary()
        except ConfigError:
            return False
        return (
            summary is not None
            and summary.get("status") == "finished"
            and summary.get("config_hash") == config_hash
        )

    def load_models(self, tag: str = LAST) -> tuple[list[ActorCritic], dict[str, Any]]:
        """The models of checkpoint ``tag`` (one, or one per worker for individual learning) and
        its metadata (config, architecture, counters); safetensors, so loading runs no code."""
        from uavrl.runners.checkpoint import load_models

        return load_models(self.checkpoints, tag)

    def checkpointed_wall_time(self) -> float:
        """The wall time the run had at its last checkpoint (0 without one)."""
        return self._checkpointed("wall_time_s")

    def checkpointed_env_steps(self) -> int:
        """The env steps the run had taken at its last checkpoint (0 without one)."""
        return int(self._checkpointed("env_steps"))

    def _checkpointed(self, counter: str) -> float:
        from uavrl.runners.checkpoint import read_meta

        try:
            return float(read_meta(self.checkpoints, LAST)["counters"].get(counter, 0.0))
        except (CheckpointError, KeyError, ValueError):
            return 0.0
