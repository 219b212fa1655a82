"""Training throughput on the `paper` preset with the GRU model.

Rows ``runner = a3c_data / impala / a2c``: the library's runners themselves (N actor processes
and the learner, or one a2c process stepping N x K envs), timed between their first round of
updates and a stop after ``seconds`` (start-up excluded), at the largest K measured.
Rows ``runner = a3c``: N worker processes running the library's :class:`Worker` (K envs each,
batched inference, rollout re-evaluation, shared model + SharedAdam under a lock).
Rows ``runner = reference``: N processes running a worker written like the classic A3C design:
one Gymnasium env, one forward per env step with the autograd graph kept through the rollout,
one update every 20 steps, gradients copied to the shared model. Both use one torch thread per
process and measure env steps per second after a warm-up.
"""

from __future__ import annotations

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
from uavrl.config import Config, load_config
from uavrl.envs import ENV_ID
from uavrl.envs.scenarios import CELL_SETS
from uavrl.nn.models import ActorCritic, build_model
from uavrl.runners.learner import transfer_gradients
from uavrl.runners.registry import RUNNERS
from uavrl.runners.session import HookOutcome, TrainingSession
from uavrl.runners.worker import Worker

WORKERS = (1, 2)
RUNNER_KINDS = ("a3c_data", "impala", "a2c")
ENVS_PER_WORKER = (1, 8, 32, 64, 128)
WARMUP_UPDATES = 3


def bench_config(n_workers: int, envs_per_worker: int, *overrides: str) -> Config:
    """The design's A3C settings (GRU 128 + LayerNorm, T = 20) on the training cells, which the
    workers take in turn (worker ``i`` in cell ``i mod 5``), so any worker count works."""
    cells = [c.name for c in CELL_SETS["seen"]]
    return load_config(
        None,
        [
            f"runner.n_workers={n_workers}",
            f"runner.envs_per_worker={envs_per_worker}",
            f"env.worker_cells={[cells[i % len(cells)] for i in range(n_workers)]}",
            "log.tensorboard=false",
            "log.progress=false",
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
    config_data: dict[str, Any],
    worker_id: int,
    learner: ActorCritic,
    optimizer: Any,
    lock: Any,
    seconds: float,
    results: Any,
) -> None:
    torch.set_num_threads(1)
    config = Config.model_validate(config_data)
    if kind == "a3c":
        worker = Worker.build(config, worker_id, learner, optimizer, lock, None, config.seed)
        results.put(_library_loop(worker, seconds))
    else:
        results.put(_reference_loop(config, worker_id, learner, optimizer, lock, seconds))


def measure(kind: str, n_workers: int, envs_per_worker: int, seconds: float) -> float:
    """Env steps per second of ``n_workers`` processes updating one shared model."""
    config = bench_config(n_workers, envs_per_worker)
    with tempfile.TemporaryDirectory() as tmp:
        session = TrainingSession(config, Path(tmp), 1, n_workers, resume=False)
        lock, results = session.ctx.Lock(), session.ctx.Queue()
        processes = [
            session.ctx.Process(
                target=_process,
                args=(
                    kind,
                    config.to_dict(),
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
            p.join()
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


def measure_runner(kind: str, n_workers: int, envs_per_worker: int, seconds: float) -> float:
    """Env steps per second of a whole ``kind`` run (actors and learner) after its first round."""
    budget = "runner.total_env_steps=1000000000000"  # the stopwatch ends the run
    config = bench_config(n_workers, envs_per_worker, f"runner.kind={kind}", budget)
    stopwatch = _Stopwatch(seconds)
    with tempfile.TemporaryDirectory() as tmp:
        RUNNERS[kind](config, Path(tmp), False, stopwatch)
    return stopwatch.rate()


def run(
    workers: Sequence[int] = WORKERS,
    envs_per_worker: Sequence[int] = ENVS_PER_WORKER,
    seconds: float = 10.0,
    rounds: int = 3,
) -> pd.DataFrame:
    """Columns ``runner, n_workers, envs_per_worker, steps_per_s``.

    Every configuration is measured once per round for ``seconds / rounds``, rounds interleaved,
    and reported as its median: this machine's speed drifts by up to 3x within minutes, and
    interleaving spreads the drift over all rows instead of penalising whichever ran during a
    slow spell.
    """
    grid = [("reference", n, 1) for n in workers]
    grid += [("a3c", n, k) for n in workers for k in envs_per_worker]
    grid += [(kind, n, max(envs_per_worker)) for kind in RUNNER_KINDS for n in workers]
    samples: dict[tuple[str, int, int], list[float]] = {key: [] for key in grid}
    for _ in range(rounds):
        for key in grid:
            timer = measure_runner if key[0] in RUNNER_KINDS else measure
            samples[key].append(timer(*key, seconds / rounds))
    rows = [(*key, float(np.median(samples[key]))) for key in grid]
    return pd.DataFrame(rows, columns=["runner", "n_workers", "envs_per_worker", "steps_per_s"])
