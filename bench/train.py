"""Training throughput on a preset (default `paper`) with the GRU model.

Rows ``runner = a3c_data / impala / a2c``: the library's runners themselves (N actor processes
and the learner, or one a2c process stepping N x K envs), timed between their first round of
updates and a stop after ``seconds`` (start-up excluded). ``a3c_data`` and ``impala`` get a row
per learner device, actor device and inference mode asked for (``runner.learner_device``,
``runner.actor_device``, ``runner.inference``: ``actors`` act themselves, or one ``server``
process acts for all); every other row learns and acts on the CPU, each worker for itself.
Rows ``runner = a3c``: N worker processes running the library's :class:`Worker` (K envs each,
batched inference, rollout re-evaluation, shared model + SharedAdam under a lock).
Rows ``runner = reference``: N processes running a worker written like the classic A3C design:
one Gymnasium env, one forward per env step with the autograd graph kept through the rollout,
one update every 20 steps, gradients copied to the shared model. Both use one torch thread per
process and measure env steps per second after a warm-up.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import torch

from uavrl.algo.returns import n_step_returns
from uavrl.config import RUNNER_KINDS as RUNNER_CONFIGS
from uavrl.config import Config, load_config
from uavrl.envs import ENV_ID
from uavrl.envs.preset import get_preset
from uavrl.envs.presets import DEFAULT_PRESET
from uavrl.errors import ConfigError
from uavrl.nn.models import ActorCritic, build_model
from uavrl.runners.learner import transfer_gradients
from uavrl.runners.registry import RUNNERS
from uavrl.runners.session import HookOutcome, TrainingSession
from uavrl.runners.worker import Worker

WORKERS = (1, 2)
RUNNER_KINDS = ("a3c_data", "impala", "a2c")
# the kinds with a learner device, as the config types them
CENTRAL_LEARNER_KINDS = tuple(
    k for k, typed in RUNNER_CONFIGS.items() if "learner_device" in typed.model_fields
)
KINDS = ("reference", "a3c", *RUNNER_KINDS)
ENVS_PER_WORKER = (1, 8, 32, 64, 128)
WARMUP_UPDATES = 3


def bench_config(
    n_workers: int, envs_per_worker: int, *overrides: str, preset: str = DEFAULT_PRESET
) -> Config:
    """The design's A3C settings (GRU 128 + LayerNorm, T = 20) on ``preset``'s training cells,
    which the workers take in turn (worker ``i`` in cell ``i mod 5``), so any worker count works."""
    cells = [c.name for c in get_preset(preset).cell_sets["seen"]]
    return load_config(
        None,
        [
            f"env.params.preset={preset}",
            f"runner.n_workers={n_workers}",
            f"runner.envs_per_worker={envs_per_worker}",
            f"env.worker_cells={[cells[i % len(cells)] for i in range(n_workers)]}",
            "log.tensorboard=false",
            "log.progress=false",
            "runner.allow_many_processes=true",  # a row of many actors on few cores is measured, not refused
            *overrides,
        ],
    )


def _library_loop(worker: Worker, seconds: float) -> tuple[int, float]:
    for _ in range(WARMUP_UPDATES):
        worker.update()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        stats, _ = worker.update()
        steps += stats.env_steps
    return steps, time.perf_counter() - start


def _reference_loop(
    config: Config, worker_id: int, learner: ActorCritic, optimizer: Any, lock: Any, seconds: float
) -> tuple[int, float]:
    """The classic design: per-step forward with gradients, update every T steps."""
    algo = config.algo
    local = build_model(learner.spec)
    env = gym.make(ENV_ID, **{**config.env.params, "velocity": 5.0 + 10.0 * worker_id})
    obs, _ = env.reset(seed=worker_id)
    h = local.initial_state(1)
    steps, start, updates = 0, None, 0
    while start is None or time.perf_counter() - start < seconds:
        if updates == WARMUP_UPDATES:
            steps, start = 0, time.perf_counter()
        local.load_state_dict(learner.state_dict())
        h = h.detach()
        log_probs, values, entropies, rewards, dones = [], [], [], [], []
        for _ in range(algo.rollout_length):
            params, value, h = local.step(torch.as_tensor(obs).unsqueeze(0), h)
            dist = local.policy.distribution(params)
            action = dist.sample()
            obs, reward, terminated, _, _ = env.step(int(action.item()))
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            values.append(value)
            rewards.append(reward)
            dones.append(float(terminated))
            if terminated:
                obs, _ = env.reset()
                h = local.initial_state(1)
        with torch.no_grad():
            _, last_value, _ = local.step(torch.as_tensor(obs).unsqueeze(0), h)
        value_seq = torch.cat(values)
        returns = n_step_returns(
            torch.tensor(rewards).unsqueeze(1),
            last_value,
            torch.tensor(dones).unsqueeze(1),
            torch.zeros(len(rewards), 1),
            torch.zeros(len(rewards), 1),
            algo.gamma,
        ).squeeze(1)
        advantage = returns - value_seq
        loss = (
            -(torch.cat(log_probs) * advantage.detach()).mean()
            + algo.value_coef * 0.5 * advantage.pow(2).mean()
            - algo.entropy_coef * torch.cat(entropies).mean()
        )
        local.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(local.parameters(), algo.max_grad_norm)
        with lock:
            transfer_gradients(local, learner)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        steps += algo.rollout_length
        updates += 1
    assert start is not None
    return steps, time.perf_counter() - start


def _process(
    kind: str,
    config: Config,
    worker_id: int,
    learner: ActorCritic,
    optimizer: Any,
    lock: Any,
    seconds: float,
    results: Any,
) -> None:
    torch.set_num_threads(1)
    if kind == "a3c":
        worker = Worker.build(config, worker_id, learner, optimizer, lock, None, config.seed)
        results.put(_library_loop(worker, seconds))
    else:
        results.put(_reference_loop(config, worker_id, learner, optimizer, lock, seconds))


def measure(kind: str, n_workers: int, envs_per_worker: int, seconds: float, preset: str) -> float:
    """Env steps per second of ``n_workers`` processes updating one shared model."""
    config = bench_config(n_workers, envs_per_worker, preset=preset)
    with tempfile.TemporaryDirectory() as tmp:
        session = TrainingSession(config, Path(tmp), 1, n_workers, resume=False)
        lock, results = session.ctx.Lock(), session.ctx.Queue()
        processes = [
            session.ctx.Process(
                target=_process,
                args=(
                    kind,
                    config,
                    i,
                    session.models[0],
                    session.optimizers[0],
                    lock,
                    seconds,
                    results,
                ),
            )
            for i in range(n_workers)
        ]
        for p in processes:
            p.start()
        outcomes = [results.get(timeout=600) for _ in processes]
        for p in processes:
            p.join(timeout=60)
    return sum(steps / elapsed for steps, elapsed in outcomes)


class _Stopwatch:
    """A progress hook: notes (time, env steps) at the first round, stops the run ``seconds`` later."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.marks: list[tuple[float, int]] = []

    def __call__(self, env_steps: int, models: list[ActorCritic]) -> HookOutcome | None:
        now = time.perf_counter()
        if not self.marks or now - self.marks[0][0] < self.seconds:
            self.marks.append((now, env_steps))
            return None
        self.marks.append((now, env_steps))
        return HookOutcome(stop=True)

    def rate(self) -> float:
        (t0, s0), (t1, s1) = self.marks[0], self.marks[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)


def measure_runner(
    kind: str,
    n_workers: int,
    envs_per_worker: int,
    seconds: float,
    preset: str,
    learner_device: str,
    actor_device: str = "cpu",
    inference: str = "actors",
) -> float:
    """Env steps per second of a whole ``kind`` run (actors and learner, the learner on
    ``learner_device``, the actors' forward passes on ``actor_device``, in each actor or in an
    inference ``server``) after its first round."""
    budget = "runner.total_env_steps=1000000000000"  # the stopwatch ends the run
    device = (
        [
            f"runner.learner_device={learner_device}",
            f"runner.actor_device={actor_device}",
            f"runner.inference={inference}",
        ]
        if kind in CENTRAL_LEARNER_KINDS
        else []
    )
    config = bench_config(n_workers, envs_per_worker, f"runner.kind={kind}", budget, *device, preset=preset)
    stopwatch = _Stopwatch(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        RUNNERS[kind](config, Path(tmp), False, stopwatch)
    return stopwatch.rate()


Row = tuple[str, str, str, str, int, int]
"""runner, learner device, actor device, inference, actors (workers), envs per actor"""
CPU_ONLY = (["cpu"], ["cpu"], ["actors"])  # learner device, actor device, inference of the other kinds


def grid(
    kinds: Sequence[str],
    workers: Sequence[int],
    envs_per_worker: Sequence[int],
    learner_devices: Sequence[str],
    actor_devices: Sequence[str] = ("cpu",),
    inference: Sequence[str] = ("actors",),
) -> list[Row]:
    """The rows of :func:`run`: the reference at one env per worker; every other kind at every
    worker count and K, ``a3c_data`` and ``impala`` once per learner device, actor device and
    inference mode (the others learn and act on the CPU, each worker for itself)."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"--kinds: bench train has no rows {', '.join(unknown)}; kinds: {', '.join(KINDS)}")
    rows: list[Row] = []
    for kind in KINDS:
        if kind not in kinds:
            continue
        choices = (learner_devices, actor_devices, inference) if kind in CENTRAL_LEARNER_KINDS else CPU_ONLY
        for device, acting, mode in itertools.product(*choices):
            for k in [1] if kind == "reference" else envs_per_worker:
                rows += [(kind, device, acting, mode, n, k) for n in workers]
    return rows


def run(
    workers: Sequence[int] = WORKERS,
    envs_per_worker: Sequence[int] = ENVS_PER_WORKER,
    seconds: float = 10.0,
    rounds: int = 3,
    kinds: Sequence[str] = KINDS,
    learner_devices: Sequence[str] = ("cpu",),
    preset: str = DEFAULT_PRESET,
    actor_devices: Sequence[str] = ("cpu",),
    inference: Sequence[str] = ("actors",),
) -> pd.DataFrame:
    """Columns ``runner, learner_device, actor_device, inference, n_workers, envs_per_worker,
    steps_per_s``.

    Every configuration is measured once per round for ``seconds / rounds``, rounds interleaved,
    and reported as its median: this machine's speed drifts by up to 3x within minutes, and
    interleaving spreads the drift over all rows instead of penalising whichever ran during a
    slow spell.
    """
    rows = grid(kinds, workers, envs_per_worker, learner_devices, actor_devices, inference)
    samples: dict[Row, list[float]] = {row: [] for row in rows}
    for _ in range(rounds):
        for row in rows:
            kind, device, acting, mode, n, k = row
            if kind in RUNNER_KINDS:
                rate = measure_runner(kind, n, k, seconds / rounds, preset, device, acting, mode)
            else:
                rate = measure(kind, n, k, seconds / rounds, preset)
            samples[row].append(rate)
    table = [(*row, float(np.median(samples[row]))) for row in rows]
    columns = [
        "runner",
        "learner_device",
        "actor_device",
        "inference",
        "n_workers",
        "envs_per_worker",
        "steps_per_s",
    ]
    return pd.DataFrame(table, columns=columns)
