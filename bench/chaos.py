"""Chaos: faults injected into short training runs, and what each run did about them.

Each trial trains one short run of a runner kind as its own process (``uavrl train``), and while
it trains, again and again, picks a fault at random: ``kill -9`` of a random child (a worker or an
actor; on the Ray backend a rollout actor or the learner), SIGSTOP of a random child (left
stopped: the supervisor, or the Ray driver, must notice its silence), or, once in a while,
``kill -9`` of the run's own process, after which the trial runs ``uavrl train --resume`` (or
trains the directory again when it holds no checkpoint yet). Per trial it checks:

- the run finished within its time limit (``hang`` otherwise, and it is killed);
- no process of the run outlives it (every process the run started, Ray's included, carries the
  trial's tag in its environment; one still there 15 s after the run's end is an ``orphan``;
  on Ray 75 s, as Ray's two agents take 60 s to notice a killed driver's Ray is gone);
- ``training_log.csv`` has no (worker, episode) row twice, and how many episode numbers are
  missing (``lost``: rows of updates a killed child booked and could not send);
- the last checkpoint loads.

The time to recover from a child fault is the time from the fault until the run's events log
records the child's death (with its restart, or the learner's from the last checkpoint). A
stopped child is found once its heartbeat lapses (``runner.heartbeat_timeout_s``,
:data:`HEARTBEAT_S` here).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from uavrl.experiments.rundir import RunDir
from uavrl.runners.supervise import process_status

KINDS = ("a3c", "individual", "a3c_data", "impala", "a2c")
RAY_KINDS = ("a3c", "a3c_data", "impala")
HEARTBEAT_S = 4.0
ORPHAN_WAIT_S = 15.0
RAY_ORPHAN_WAIT_S = 75.0
# Ray's processes that outlive a driver killed with -9 by up to 60 s (Ray's own timeout)
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
RAY_TARGETS = ("ray::RolloutActor", "ray::LearnerActor")
TAG = "UAVRL_CHAOS_TRIAL"
# The runs: 3 workers of 4 envs on the `paper` preset, a budget of some tens of seconds.
WORKERS, ENVS, ENV_STEPS = 3, 4, 250_000


def trial_config(kind: str, backend: str = "process") -> dict[str, Any]:
    """The run config of a trial of runner ``kind`` (``individual``: a3c without sharing) on
    ``backend``."""
    runner = "a3c" if kind == "individual" else kind
    ray = backend == "ray"
    return {
        "name": f"chaos-{kind}-{backend}",
        "seed": 0,
        "env": {
            "id": "uavrl/Offload-v0",
            "params": {"preset": "paper", "episode_length": 50},
            "shared_pool": not ray,  # Ray's actors own their envs' pools
        },
        "model": {"hidden_size": 32, "recurrent": False},
        "algo": {"rollout_length": 10},
        "runner": {
            "kind": runner,
            "share": kind != "individual",
            "n_workers": WORKERS,
            "envs_per_worker": ENVS,
            "total_env_steps": ENV_STEPS,
            "checkpoint_every": 20,
            "max_restarts": 1000,  # the trial decides how often a child dies
            "heartbeat_timeout_s": HEARTBEAT_S,
            "backend": "serial" if kind == "a2c" else backend,
        },
        "eval": {"episodes": 2},
        "log": {"tensorboard": False, "progress": False},
    }


@dataclass
class Trial:
    """What one trial did and saw."""

    kind: str
    backend: str = "process"
    kills: int = 0
    stops: int = 0
    parent_kills: int = 0
    hang: bool = False
    orphans: int = 0
    duplicated_rows: int = 0
    lost_rows: int = 0
    finished: bool = False
    checkpoint_loads: bool = False
    recover_s: list[float] = field(default_factory=list)
    orphan_info: list[str] = field(default_factory=list)
    error: str = ""


def _processes_tagged(tag: str) -> list[int]:
    """Pids of the live processes whose environment holds ``TAG=tag``."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        status = process_status(pid)
        if needle in environ.split(b"\0") and status is not None and status[0] != "Z":
            found.append(pid)
    return found


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid: int, tag: str, backend: str) -> list[int]:
    """The run's worker and actor processes: on processes, the children of ``pid`` that
    multiprocessing spawned (not its resource tracker, nor a child still between fork and exec);
    on Ray, the run's rollout and learner actor processes."""
    if backend == "ray":
        return [p for p in _processes_tagged(tag) if _cmdline(p).startswith(RAY_TARGETS)]
    kids = []
    for child in _pids():
        status = process_status(child)
        if status is not None and status[1] == pid and status[0] != "Z" and "spawn_main" in _cmdline(child):
            kids.append(child)
    return kids


def _deaths_logged(run_dir: Path) -> int:
    """Child deaths in the run's events log (a worker's, an actor's, the learner's)."""
    events = run_dir / "events.log"
    return events.read_text().count(" died (") if events.exists() else 0


def _launch(args: list[str], tag: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, TAG: tag}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "uavrl.cli", "train", *args], env=env, stdout=out, stderr=out
        )


def run_trial(
    kind: str, directory: Path, rng: random.Random, faults: int, time_limit_s: float, backend: str = "process"
) -> Trial:
    """One run of ``kind`` on ``backend`` with up to ``faults`` faults, at random instants and
    targets."""
    trial = Trial(kind, backend)
    tag = f"{os.getpid()}-{directory.name}"
    config_file = directory / "config.yaml"
    config_file.write_text(yaml.safe_dump(trial_config(kind, backend)))
    # every worker or actor (and on Ray the learner) up before a fault
    expected = WORKERS + 1 if backend == "ray" else 0 if kind == "a2c" else WORKERS
    run_dir, log = directory / "run", directory / "train.log"
    started = time.monotonic()
    process = _launch(["--config", str(config_file), "--run-dir", str(run_dir)], tag, log)
    time.sleep(rng.uniform(3.0, 6.0))  # past the children's start-up, mostly
    while process.poll() is None and trial.kills + trial.stops + trial.parent_kills < faults:
        if time.monotonic() - started > time_limit_s:
            break
        children = _children(process.pid, tag, backend)
        if len(children) < expected:  # still starting its workers
            time.sleep(0.2)
            continue
        choice = rng.random()
        if choice < 0.1 or not children:  # the run itself (a2c has no other): kill -9, then resume
            process.kill()
            process.wait()
            trial.parent_kills += 1
            _wait_gone(tag, trial, ORPHAN_WAIT_S, spare=RAY_AGENTS)  # they are counted at the end
            has_checkpoint = (run_dir / "checkpoints" / "last.safetensors").exists()
            again = (
                ["--resume", str(run_dir)]
                if has_checkpoint
                else ["--config", str(config_file), "--run-dir", str(run_dir)]
            )
            process = _launch(again, tag, log)
        else:
            victim = rng.choice(children)
            before = _deaths_logged(run_dir)
            stopped = choice < 0.25
            fault_at = time.monotonic()
            try:
                os.kill(victim, signal.SIGSTOP if stopped else signal.SIGKILL)
            except ProcessLookupError:
                continue
            trial.stops += stopped
            trial.kills += not stopped
            deadline = fault_at + HEARTBEAT_S + 60
            while _deaths_logged(run_dir) <= before and process.poll() is None:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            if _deaths_logged(run_dir) > before:
                trial.recover_s.append(time.monotonic() - fault_at)
        time.sleep(rng.uniform(0.3, 1.5))
    try:
        process.wait(timeout=max(1.0, time_limit_s - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        trial.hang = True
        process.kill()
        process.wait()
    _wait_gone(tag, trial, RAY_ORPHAN_WAIT_S if backend == "ray" else ORPHAN_WAIT_S)
    summary = RunDir(run_dir).summary() if (run_dir / "summary.json").exists() else None
    trial.finished = process.returncode == 0 and summary is not None and summary.get("status") == "finished"
    if not trial.finished and not trial.hang:
        trial.error = (log.read_text().strip().splitlines() or ["(no output)"])[-1][:200]
    _check_log(run_dir, trial)
    try:
        RunDir(run_dir).load_models()
        trial.checkpoint_loads = True
    except Exception as err:  # any failure to load is what the trial reports
        trial.error = trial.error or f"checkpoint: {err}"
    return trial


def _wait_gone(tag: str, trial: Trial, wait_s: float, spare: tuple[str, ...] = ()) -> None:
    """Give the run's processes ``wait_s`` to end; count and kill those that do not, but those
    whose command line starts with one of ``spare`` (left to end by themselves)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = [p for p in _processes_tagged(tag) if not (spare and _cmdline(p).startswith(spare))]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for pid in left:
        trial.orphans += 1
        trial.orphan_info.append(_describe(pid))
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _describe(pid: int) -> str:
    """An orphan's state letter and command line, for the report."""
    status = process_status(pid)
    return f"{pid} gone" if status is None else f"{pid} state {status[0]}: {_cmdline(pid)[:80]}"


def _check_log(run_dir: Path, trial: Trial) -> None:
    path = run_dir / "training_log.csv"
    if not path.exists():
        return
    log = pd.read_csv(path)
    trial.duplicated_rows = int(log.duplicated(["worker_id", "episode"]).sum())
    for _, rows in log.groupby("worker_id"):
        episodes = rows["episode"].drop_duplicates()
        trial.lost_rows += int(episodes.max() - len(episodes))


def run(
    kills: int,
    kinds: tuple[str, ...] = KINDS,
    seed: int = 0,
    faults_per_trial: int = 8,
    time_limit_s: float = 600.0,
    directory: Path | None = None,
    backend: str = "process",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials on ``backend``, kinds in turn, until ``kills`` faults have been injected; returns
    one row per trial and the table per kind."""
    rng = random.Random(seed)
    root = Path(directory or tempfile.mkdtemp(prefix="uavrl-chaos-"))
    trials: list[Trial] = []
    injected = 0
    while injected < kills:
        kind = kinds[len(trials) % len(kinds)]
        trial_dir = root / f"trial{len(trials):03d}-{kind}-{backend}"
        trial_dir.mkdir(parents=True)
        faults = min(faults_per_trial, kills - injected)
        trial = run_trial(kind, trial_dir, rng, faults, time_limit_s, backend)
        trials.append(trial)
        injected += trial.kills + trial.stops + trial.parent_kills
    rows = pd.DataFrame(
        [
            {
                **t.__dict__,
                "recover_s": ";".join(f"{r:.2f}" for r in t.recover_s),
                "orphan_info": " | ".join(t.orphan_info),
            }
            for t in trials
        ]
    )
    return rows, summarise(trials)


def summarise(trials: list[Trial]) -> pd.DataFrame:
    """Per kind and in total: trials, faults by target, and what went wrong."""
    table = []
    for kind in [*dict.fromkeys(t.kind for t in trials), "all"]:
        group = [t for t in trials if kind in ("all", t.kind)]
        recover = pd.Series([r for t in group for r in t.recover_s], dtype=float)
        table.append(
            {
                "kind": kind,
                "backend": "/".join(dict.fromkeys(t.backend for t in group)),
                "trials": len(group),
                "child kills": sum(t.kills for t in group),
                "child stops": sum(t.stops for t in group),
                "run kills": sum(t.parent_kills for t in group),
                "finished": sum(t.finished for t in group),
                "hangs": sum(t.hang for t in group),
                "orphans": sum(t.orphans for t in group),
                "duplicated rows": sum(t.duplicated_rows for t in group),
                "lost rows": sum(t.lost_rows for t in group),
                "checkpoints load": sum(t.checkpoint_loads for t in group),
                "recover median (s)": float(recover.median()) if len(recover) else float("nan"),
                "recover worst (s)": float(recover.max()) if len(recover) else float("nan"),
            }
        )
    return pd.DataFrame(table)
