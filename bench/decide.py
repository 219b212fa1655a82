"""Per-decision latency of a trained policy at batch 1 on one core: torch vs onnxruntime.

One decision is one step of the model with the recurrent state carried (the on-board loop):
torch ``model.step`` with one thread under ``no_grad``, and the exported ONNX graph through
onnxruntime with one intra-op thread and no spinning. Latencies after a warm-up; p50 and p99 in
microseconds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uavrl.experiments.export import export_policy, onnx_session
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


def run(model: ActorCritic, config: dict, decisions: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """Columns ``runtime, model, p50_us, p99_us, mean_us``."""
    model = model.eval()
    obs = np.random.default_rng(seed).random((decisions + WARMUP, model.spec.obs_dim), dtype=np.float32)
    spec = model.spec
    name = (
        f"{'GRU' if spec.recurrent else 'MLP'}-{spec.hidden_size}{' + LayerNorm' if spec.layer_norm else ''}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "policy.onnx"
        export_policy(model, path, config)
        rows = [
            ("onnxruntime", name, *_percentiles(onnx_latencies(path, obs, max(model.state_size, 1)))),
            ("torch", name, *_percentiles(torch_latencies(model, obs))),
        ]
    return pd.DataFrame(rows, columns=["runtime", "model", "p50_us", "p99_us", "mean_us"])
