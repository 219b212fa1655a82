"""ONNX export: a 200-step rollout with a reset in the middle agrees with torch (parameters
within 1e-5, identical greedy discrete actions, greedy continuous ones within 1e-5) for MLP and
GRU models and every action head."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from uavrl.experiments.export import export_policy, onnx_session, onnx_step
from uavrl.nn.models import ModelSpec, build_model, reset_hidden

pytest.importorskip("onnxruntime")

ACTIONS = {
    "discrete": {"kind": "discrete", "n": 3},
    "gaussian": {"kind": "box", "low": [-1.0, 0.0], "high": [1.0, 2.0]},
    "hybrid": {"kind": "hybrid", "n": 3, "low": [0.0], "high": [1.0]},
    "multi_discrete": {"kind": "multi_discrete", "nvec": [3, 2], "shape": [2], "start": [0, 1]},
    "multi_binary": {"kind": "multi_binary", "n": 4, "shape": [4]},
    "composite": {
        "kind": "composite",
        "container": "dict",
        "keys": ["bits", "power", "server"],
        "parts": [
            {"kind": "multi_binary", "n": 2, "shape": [2]},
            {"kind": "box", "low": [0.0], "high": [1.0]},
            {"kind": "discrete", "n": 3, "start": 1},
        ],
    },
}


@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("head", list(ACTIONS))
def test_onnx_rollout_matches_torch(tmp_path: Path, recurrent: bool, head: str) -> None:
    torch.manual_seed(0)
    model = build_model(
        ModelSpec(obs_dim=48, action=ACTIONS[head], hidden_size=32, recurrent=recurrent)
    ).eval()
    with torch.no_grad():  # LayerNorm gains away from 1, so that nothing is trivially zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    sidecar = json.loads(
        export_policy(model, tmp_path / "policy.onnx", {"env": {"id": "uavrl/Offload-v0"}}).read_text()
    )
    assert sidecar["recurrent"] == recurrent and sidecar["action_space"] == ACTIONS[head]
    assert sidecar["observation_layout"]["task_time"] == 43
    assert "local_feasible" not in sidecar["observation_layout"]
    session = onnx_session(tmp_path / "policy.onnx")

    rng = np.random.default_rng(1)
    batch = 3
    h_torch = model.initial_state(batch)
    h_onnx = np.zeros((batch, sidecar["state_size"]), np.float32)
    for t in range(200):
        obs = rng.random((batch, 48), dtype=np.float32)
        reset = np.zeros(batch, np.float32)
        if t in (0, 100):
            reset[:] = 1.0  # an episode starts: the state is cleared
        reset[1] = float(t % 37 == 0)
        with torch.no_grad():
            params, value, h_torch = model.step(
                torch.from_numpy(obs), reset_hidden(h_torch, torch.from_numpy(reset))
            )
        o_params, o_value, h_onnx = onnx_step(session, obs, h_onnx, reset)
        np.testing.assert_allclose(o_params, params.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(o_value, value.numpy(), rtol=1e-5, atol=1e-5)
        if recurrent:
            np.testing.assert_allclose(h_onnx, h_torch.numpy(), rtol=1e-5, atol=1e-5)
        greedy_torch = model.policy.to_env(model.policy.distribution(params).mode())
        greedy_onnx = model.policy.to_env(model.policy.distribution(torch.from_numpy(o_params)).mode())
        parts = zip(_parts(greedy_torch), _parts(greedy_onnx), strict=True)
        for a, b in parts:  # discrete choices identical; continuous ones are the mean, as close as params
            if a.dtype.kind in "iu":
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_central_critic_model_exports_its_policy_on_the_agents_own_observation(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = build_model(ModelSpec(obs_dim=48 + 20, hidden_size=16, critic_state_dim=20)).eval()
    sidecar = json.loads(export_policy(model, tmp_path / "p.onnx", {"env": {}}).read_text())
    assert sidecar["inputs"]["obs"] == [None, 48] and sidecar["value_is_nan"]
    session = onnx_session(tmp_path / "p.onnx")
    obs = np.random.default_rng(0).random((4, 48), dtype=np.float32)
    h = np.zeros((4, sidecar["state_size"]), np.float32)
    o_params, o_value, _ = onnx_step(session, obs, h, np.ones(4, np.float32))
    with torch.no_grad():
        params, _, _ = model.step(torch.from_numpy(obs), torch.from_numpy(h))
    np.testing.assert_allclose(o_params, params.numpy(), rtol=1e-5, atol=1e-5)
    assert np.isnan(o_value).all()


def test_a_belief_model_exports_its_policy_with_both_states(tmp_path: Path) -> None:
    """A policy with a belief network runs on board from the agent's own columns; its state is
    the policy's and the belief's GRU states (2H), carried across steps as in torch."""
    torch.manual_seed(5)
    spec = ModelSpec(obs_dim=48 + 4, hidden_size=8, critic_state_dim=4, hidden_target_dim=4, belief=True)
    model = build_model(spec).eval()
    sidecar = json.loads(export_policy(model, tmp_path / "p.onnx", {"env": {}}).read_text())
    assert sidecar["inputs"]["obs"] == [None, 48] and sidecar["state_size"] == 16
    session = onnx_session(tmp_path / "p.onnx")
    rng = np.random.default_rng(1)
    h, h_torch = np.zeros((3, 16), np.float32), torch.zeros(3, 16)
    for _ in range(4):
        obs = rng.random((3, 48), dtype=np.float32)
        o_params, _, h = onnx_step(session, obs, h, np.zeros(3, np.float32))
        with torch.no_grad():
            params, h_torch = model.act(torch.from_numpy(obs), h_torch)
        np.testing.assert_allclose(o_params, params.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(h, h_torch.numpy(), rtol=1e-5, atol=1e-5)


def test_a_separate_critic_model_exports_its_value(tmp_path: Path) -> None:
    """A separate critic reads the agent's own observation: its value is exported, not NaN."""
    torch.manual_seed(4)
    model = build_model(ModelSpec(obs_dim=48, hidden_size=16, separate_critic=True)).eval()
    sidecar = json.loads(export_policy(model, tmp_path / "p.onnx", {"env": {}}).read_text())
    assert sidecar["inputs"]["obs"] == [None, 48] and not sidecar["value_is_nan"]
    obs = np.random.default_rng(0).random((4, 48), dtype=np.float32)
    h = np.zeros((4, sidecar["state_size"]), np.float32)
    o_params, o_value, _ = onnx_step(onnx_session(tmp_path / "p.onnx"), obs, h, np.ones(4, np.float32))
    with torch.no_grad():
        params, value, _ = model.step(torch.from_numpy(obs), torch.from_numpy(h))
    np.testing.assert_allclose(o_params, params.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o_value, value.numpy(), rtol=1e-5, atol=1e-5)


def _parts(actions: Any) -> tuple[np.ndarray, ...]:
    """The arrays of an env action batch: an array, or a tuple or dict of them, nested."""
    if isinstance(actions, dict):
        actions = tuple(actions.values())
    if isinstance(actions, tuple):
        return tuple(a for part in actions for a in _parts(part))
    return (actions,)


def test_the_readme_deployment_example_runs_without_torch(tmp_path: Path) -> None:
    """Train a tiny run (observing the feasibility column, so the example must build its env from
    the sidecar), export it with the CLI, copy only the files it names into an empty directory
    (as onto a drone), and run README's example there in a fresh process."""
    import re
    import shutil
    import subprocess
    import sys

    from tests.runners.conftest import small_config
    from uavrl.cli import main
    from uavrl.experiments.train import train

    run = tmp_path / "run"
    env = {
        "id": "uavrl/Offload-v0",
        "params": {"preset": "paper", "episode_length": 30, "observe_feasibility": True},
        "worker_cells": ["v5-l200-c1000", "v50-l200-c1000"],
    }
    model = {"hidden_size": 16, "recurrent": True}
    train(small_config(env=env, model=model, runner={"total_env_steps": 300}), run)
    exported = tmp_path / "export"
    assert main(["export", "--run", str(run), "--out", str(exported / "policy.onnx")]) == 0
    assert sorted(p.name for p in exported.iterdir()) == ["policy.json", "policy.onnx"]
    drone = tmp_path / "drone"
    drone.mkdir()
    for name in ("policy.onnx", "policy.json"):
        shutil.copy(exported / name, drone / name)
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("## Deploying a trained policy") :]
    example = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert example is not None and len(example.group(1).splitlines()) <= 25
    code = example.group(1) + "\nimport sys; assert 'torch' not in sys.modules, 'torch was imported'\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=drone, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert re.match(r"return -?\d+\.\d\d", done.stdout)


def test_the_sidecar_names_the_feasibility_column_of_a_model_that_reads_it(tmp_path: Path) -> None:
    model = build_model(ModelSpec(obs_dim=49, hidden_size=8, recurrent=False)).eval()
    env = {"id": "uavrl/Offload-v0", "params": {"preset": "paper", "observe_feasibility": True}}
    sidecar = json.loads(export_policy(model, tmp_path / "policy.onnx", {"env": env}).read_text())
    assert sidecar["observation_layout"]["local_feasible"] == 48 == sidecar["inputs"]["obs"][1] - 1


def test_the_sidecar_names_the_payable_column_after_the_feasibility_column(tmp_path: Path) -> None:
    model = build_model(ModelSpec(obs_dim=50, hidden_size=8, recurrent=False)).eval()
    params = {"preset": "paper", "observe_feasibility": True, "observe_payable": True}
    env = {"id": "uavrl/Offload-v0", "params": params}
    sidecar = json.loads(export_policy(model, tmp_path / "policy.onnx", {"env": env}).read_text())
    layout = sidecar["observation_layout"]
    assert (layout["local_feasible"], layout["payable"]) == (48, 49) == (48, sidecar["inputs"]["obs"][1] - 1)


def test_the_sidecar_lays_out_the_encoded_observation_of_any_gymnasium_env() -> None:
    """A deployed model of an env with Dict or Tuple observations reads one float vector: the
    sidecar names each part's encoding and columns, so on-board code can build it."""
    from uavrl.experiments.export import observation_layout

    layout = observation_layout({"id": "Blackjack-v1", "params": {}})
    assert layout == {
        "observation[0]": {"encoding": "Discrete (one-hot)", "columns": [0, 32]},
        "observation[1]": {"encoding": "Discrete (one-hot)", "columns": [32, 43]},
        "observation[2]": {"encoding": "Discrete (one-hot)", "columns": [43, 45]},
    }
    assert observation_layout({"id": "CartPole-v1", "params": {}}) == {
        "observation": {"encoding": "Box", "columns": [0, 4]}
    }
    assert observation_layout({"id": "uavrl/Offload-v0", "params": {"preset": "mec"}}) is None
    assert observation_layout({"id": "uavrl/Offload-v0", "params": {"preset": "paper"}})["task_time"] == 43
