"""Central inference (``runner.inference: server``): the server's answers are the actor's own
model's, a run with it trains, and a killed server is started again while the run goes on."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from uavrl.errors import ConfigError
from uavrl.experiments.train import train
from uavrl.nn.models import build_model, clone_model
from uavrl.runners.inference import InferenceSlots, ServedPolicy, serve
from uavrl.runners.ipc import Heartbeats, StopFlag
from uavrl.runners.session import model_spec
from uavrl.runners.supervise import ChildLink
from uavrl.runners.worker import make_collector, make_worker_env

NEEDS_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)])
def test_a_served_rollout_equals_the_one_the_actors_own_model_collects(make_config, device: str) -> None:
    """The same GRU weights, envs, streams and sampling seed: every tensor of the rollout (hidden
    states, behaviour parameters, actions, bootstrap values) is the same whether the actor's
    forward passes run in its own model on the CPU or in a server (on ``device``) answering its
    requests (to 1e-6 on the CPU, 1e-4 on a GPU)."""
    config = make_config(model={"hidden_size": 16, "recurrent": True}, runner={"envs_per_worker": 4})
    model = build_model(model_spec(config))
    ctx = mp.get_context("spawn")
    slots = InferenceSlots(model, 1, config.runner.envs_per_worker, ctx)
    link = ChildLink(0, None, StopFlag(ctx), Heartbeats(1, ctx))  # type: ignore[arg-type]
    stop = threading.Event()
    answering = (clone_model(model).to(device), slots, lambda m, v: 7, lambda: not stop.is_set())
    server = threading.Thread(target=serve, args=answering)
    server.start()
    slots.replies[0][1].send(1)  # a late reply to a dead predecessor's first request: dropped
    try:
        batches = []
        for acting in (model, ServedPolicy(clone_model(model), slots, 0, link, None, incarnation=1)):
            torch.manual_seed(0)
            collector = make_collector(config, acting, make_worker_env(config, 0, None), 11, 0)
            batches.append([collector.collect(acting, 6)[0] for _ in range(3)])  # h carried across
        assert isinstance(acting, ServedPolicy) and acting.take_version() == 7
    finally:
        stop.set()
        server.join(timeout=10)
    assert not server.is_alive()
    close = 1e-6 if device == "cpu" else 1e-4
    for own, served in zip(*batches, strict=True):
        for name in ("obs", "actions", "behaviour_params", "rewards", "h0", "last_value", "final_values"):
            torch.testing.assert_close(getattr(served, name), getattr(own, name), rtol=close, atol=close)


@pytest.mark.parametrize("kind", ["impala", "a3c_data"])
def test_a_run_with_an_inference_server_trains_its_budget(make_config, tmp_path: Path, kind: str) -> None:
    config = make_config(
        runner={"kind": kind, "serial": False, "inference": "server", "total_env_steps": 1500},
        algo={"rollout_length": 5, "lr": 1e-3, "gae_lambda": None if kind == "impala" else 0.95},
    )
    summary = train(config, tmp_path)
    assert summary["status"] == "finished" and summary["env_steps"] >= 1500
    assert summary["updates"] >= 1500 // (2 * 3 * 5)
    assert summary["faults"]["restarts"] == [0, 0, 0]  # two actors and the server
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["runner"]["inference"] == "server"


def test_a_killed_inference_server_is_started_again_and_the_run_trains_its_budget(
    make_config, tmp_path: Path
) -> None:
    config = make_config(
        runner={"kind": "impala", "serial": False, "inference": "server", "total_env_steps": 6000},
        algo={"rollout_length": 5, "lr": 1e-3, "gae_lambda": None},
    )
    killed: list[int] = []

    def hook(env_steps: int, models: Any) -> None:
        if not killed and env_steps >= 1500:
            (server,) = [p for p in mp.active_children() if p.name == "uavrl-inference"]
            os.kill(server.pid, signal.SIGKILL)
            killed.append(server.pid)

    summary = train(config, tmp_path, hook=hook)
    assert killed and summary["status"] == "finished" and summary["env_steps"] >= 6000
    assert summary["faults"]["restarts"] == [0, 0, 1]
    events = (tmp_path / "events.log").read_text().splitlines()
    assert len(events) == 1 and "inference server died (exit code -9)" in events[0]


@pytest.mark.parametrize(
    ("sets", "refusal"),
    [
        ({"serial": True}, "runner.backend: serial acts for every actor in one forward pass already"),
        ({"serial": False, "backend": "ray"}, "runner.backend: ray does not run runner.inference: server"),
    ],
)
def test_an_inference_server_is_refused_where_no_process_actor_acts(
    make_config, sets: dict, refusal: str
) -> None:
    with pytest.raises(ConfigError, match=refusal):
        make_config(runner={"kind": "impala", "inference": "server", **sets}, algo={"gae_lambda": None})
