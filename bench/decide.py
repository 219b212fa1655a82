"""Per-decision latency of a trained policy at batch 1 on one core: torch vs onnxruntime.

One decision is one step of the model with the recurrent state carried (the on-board loop):
torch ``model.step`` with one thread under ``no_grad``, and the exported ONNX graph through
onnxruntime with one intra-op thread and no spinning, called with a feed dict and with I/O
bound once to preallocated arrays. The process is pinned to one core while it times. Latencies
after a warm-up; p50 and p99 in microseconds.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uavrl.experiments.export import OUTPUTS, export_policy, onnx_session
from uavrl.nn.models import ActorCritic

WARMUP = 500


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    us = np.asarray(samples) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99)), float(us.mean())


def torch_latencies(model: ActorCritic, obs: np.ndarray) -> list[float]:
    torch.set_num_threads(1)
    h = model.initial_state(1)
    times = []
    with torch.no_grad():
        for row in obs:
            start = time.perf_counter()
            _, _, h = model.step(torch.from_numpy(row[None]), h)
            times.append(time.perf_counter() - start)
    return times[WARMUP:]


def onnx_latencies(path: Path, obs: np.ndarray, state_size: int) -> list[float]:
    session = onnx_session(path)
    h = np.zeros((1, state_size), np.float32)
    reset = np.zeros(1, np.float32)
    times = []
    for row in obs:
        start = time.perf_counter()
        _, _, h = session.run(None, {"obs": row[None], "h": h, "reset": reset})
        times.append(time.perf_counter() - start)
    return times[WARMUP:]


class BoundPolicy:
    """An exported policy on onnxruntime with I/O binding: inputs and outputs are bound once to
    preallocated arrays, so a decision is one ``run_with_iobinding`` with no feed dict and no
    output allocation. ``step(obs_row)`` returns views of the bound outputs and carries the
    recurrent state (the next state is copied into the bound input state)."""

    def __init__(self, path: Path, obs_dim: int, state_size: int, param_dim: int) -> None:
        self.session = onnx_session(path)
        self.obs = np.zeros((1, obs_dim), np.float32)
        self.h = np.zeros((1, state_size), np.float32)
        self.reset = np.zeros(1, np.float32)
        self.outputs = {
            "params": np.zeros((1, param_dim), np.float32),
            "value": np.zeros(1, np.float32),
            "h_next": np.zeros((1, state_size), np.float32),
        }
        self.binding = self.session.io_binding()
        for name, array in (("obs", self.obs), ("h", self.h), ("reset", self.reset)):
            self.binding.bind_cpu_input(name, array)
        for name in OUTPUTS:
            array = self.outputs[name]
            self.binding.bind_output(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)

    def step(self, obs_row: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(params (1, P), value (1,), h (1, H)) after one decision on ``obs_row`` (D,)."""
        self.obs[0] = obs_row
        self.session.run_with_iobinding(self.binding)
        self.h[:] = self.outputs["h_next"]
        return self.outputs["params"], self.outputs["value"], self.h


def onnx_bound_latencies(policy: BoundPolicy, obs: np.ndarray) -> list[float]:
    times = []
    for row in obs:
        start = time.perf_counter()
        policy.step(row)
        times.append(time.perf_counter() - start)
    return times[WARMUP:]


@contextlib.contextmanager
def _one_core() -> Iterator[None]:
    """Pin this process to one of its cores while it times (as on board): a migration between
    cores shows in the tail (p99 111 -> 82 us for the GRU-128 policy here)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(cores)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, cores)


def run(model: ActorCritic, config: dict, decisions: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Columns ``runtime, model, p50_us, p99_us, mean_us``."""
    model = model.eval()
    spec = model.spec
    # on board the policy sees the agent's own columns only (a centralised critic's state is absent)
    obs = np.random.default_rng(seed).random((decisions + WARMUP, spec.actor_obs_dim), dtype=np.float32)
    name = (
        f"{'GRU' if spec.recurrent else 'MLP'}-{spec.hidden_size}{' + LayerNorm' if spec.layer_norm else ''}"
    )
    with tempfile.TemporaryDirectory() as tmp, _one_core():
        path = Path(tmp) / "policy.onnx"
        export_policy(model, path, config)
        state = max(model.state_size, 1)
        policy = BoundPolicy(path, spec.actor_obs_dim, state, model.policy.param_dim)
        bound = onnx_bound_latencies(policy, obs)
        rows = [
            ("onnxruntime", name, *_percentiles(onnx_latencies(path, obs, state))),
            ("onnxruntime io-binding", name, *_percentiles(bound)),
            ("torch", name, *_percentiles(torch_latencies(model, obs))),
        ]
    return pd.DataFrame(rows, columns=["runtime", "model", "p50_us", "p99_us", "mean_us"])
