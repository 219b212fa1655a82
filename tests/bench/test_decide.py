"""bench decide: the I/O-bound onnxruntime policy decides as the torch model does, and the
table has a row per runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from uavrl.bench.decide import BoundPolicy, run

from uavrl.config import load_config
from uavrl.experiments.export import export_policy
from uavrl.nn.models import ModelSpec, build_model

CONFIGS = Path(__file__).parent.parent.parent / "configs"


def test_bound_policy_matches_torch_step_by_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(obs_dim=6, hidden_size=16, recurrent=True)).eval()
    path = tmp_path / "policy.onnx"
    export_policy(model, path, load_config(CONFIGS / "paper_a3c.yaml").to_dict())
    policy = BoundPolicy(path, obs_dim=6, state_size=16, param_dim=model.policy.param_dim)
    h = model.initial_state(1)
    for row in np.random.default_rng(1).random((30, 6), dtype=np.float32):
        with torch.no_grad():
            params, value, h = model.step(torch.from_numpy(row[None]), h)
        bound_params, bound_value, bound_h = policy.step(row)
        np.testing.assert_allclose(bound_params, params.numpy(), atol=1e-5)
        np.testing.assert_allclose(bound_value, value.numpy(), atol=1e-5)
        np.testing.assert_allclose(bound_h, h.numpy(), atol=1e-5)


@pytest.mark.parametrize("critic_state_dim", [0, 4], ids=["own_critic", "central_critic"])
def test_the_table_has_a_row_per_runtime(critic_state_dim: int) -> None:
    """A centralised critic's state is absent on board: the policy is timed on its own columns."""
    torch.manual_seed(0)
    spec = ModelSpec(
        obs_dim=6 + critic_state_dim, hidden_size=16, recurrent=True, critic_state_dim=critic_state_dim
    )
    model = build_model(spec)
    table = run(model, load_config(CONFIGS / "paper_a3c.yaml").to_dict(), decisions=200)
    assert table["runtime"].tolist() == ["onnxruntime", "onnxruntime io-binding", "torch"]
    assert (table["p50_us"] > 0).all() and (table["p99_us"] >= table["p50_us"]).all()
