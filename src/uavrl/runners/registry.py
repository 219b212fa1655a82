"""``runner.kind`` -> the function that trains it (each writes logs and checkpoints to a run
directory and returns a :class:`~uavrl.runners.session.RunResult`); :func:`runner_for` picks
it by kind and ``runner.backend``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from uavrl.config import Config
from uavrl.runners.a2c import run_a2c
from uavrl.runners.a3c import run_a3c
from uavrl.runners.actor_learner import run_actor_learner
from uavrl.runners.session import ProgressHook, RunResult


class Runner(Protocol):
    def __call__(
        self, config: Config, run_dir: Path, resume: bool = False, hook: ProgressHook | None = None
    ) -> RunResult: ...


RUNNERS: dict[str, Runner] = {
    "a3c": run_a3c,
    "a2c": run_a2c,
    "a3c_data": run_actor_learner,
    "impala": run_actor_learner,
}


def runner_for(config: Config) -> Runner:
    """The configured runner: by ``runner.kind`` on this machine's processes, or the Ray driver
    for ``runner.backend: ray`` (imported only then: Ray is the optional extra ``uavrl[ray]``)."""
    if config.runner.backend == "ray":
        from uavrl.runners.ray_backend import run_ray

        return run_ray
    return RUNNERS[config.runner.kind]
