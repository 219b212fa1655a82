"""Environment throughput: the Gymnasium env (B = 1) against the batched core at several B."""

from __future__ import annotations

import time
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import pandas as pd

from uavrl.envs import ENV_ID, make_core

BATCHES = (1, 16, 64, 256)
ACTION_BLOCK = 1024


def _gym_steps_per_s(preset: str, seconds: float, seed: int) -> float:
    env = gym.make(ENV_ID, preset=preset).unwrapped
    actions = np.random.default_rng(seed).integers(0, 3, ACTION_BLOCK).tolist()
    env.reset(seed=seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            _, _, terminated, truncated, _ = env.step(a)
            if terminated or truncated:
                env.reset()
        steps += ACTION_BLOCK
    return steps / (time.perf_counter() - start)


def _core_steps_per_s(preset: str, batch: int, seconds: float, seed: int) -> float:
    core = make_core(preset, batch)
    actions = np.random.default_rng(seed).integers(0, 3, (ACTION_BLOCK // 8, batch))
    core.reset(seed=seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in actions:
            core.step(a)
        steps += actions.size
    return steps / (time.perf_counter() - start)


def run(
    preset: str = "paper", batches: Sequence[int] = BATCHES, seconds: float = 2.0, rounds: int = 3
) -> pd.DataFrame:
    """Random-action env steps per second; columns ``impl, batch, steps_per_s``.

    Each configuration is measured in ``rounds`` interleaved rounds of ``seconds / rounds`` and
    reported as the median, so that a passing load on the machine hits every row alike.
    """
    slice_s = seconds / rounds
    samples: dict[tuple[str, int], list[float]] = {("gymnasium", 1): []}
    samples.update({("batched_core", b): [] for b in batches})
    for _ in range(rounds):
        samples[("gymnasium", 1)].append(_gym_steps_per_s(preset, slice_s, 0))
        for b in batches:
            samples[("batched_core", b)].append(_core_steps_per_s(preset, b, slice_s, 0))
    rows = [(impl, b, float(np.median(v))) for (impl, b), v in samples.items()]
    return pd.DataFrame(rows, columns=["impl", "batch", "steps_per_s"])
