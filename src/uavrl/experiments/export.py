"""A trained policy as an ONNX file for on-board inference, with a JSON sidecar.

The exported graph is one decision step of the model: inputs ``obs`` (B, D) float32, ``h``
(B, H) float32 (the recurrent state; H = 1 and passed through unchanged for a feed-forward
model) and ``reset`` (B,) float32 (1 where ``obs`` starts an episode: the state is cleared);
outputs ``params`` (B, P) (the action distribution's parameters, as the head's ``distribution``
reads them), ``value`` (B,) and ``h_next`` (B, H). The sidecar ``<name>.json`` holds what a
runtime needs without torch or uavrl: the observation layout, the action space, how to turn
``params`` into an action, and the model config.

Export needs the ``[export]`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from uavrl.envs.preset import get_preset
from uavrl.envs.presets import DEFAULT_PRESET, ENV_ID
from uavrl.errors import ConfigError
from uavrl.nn.models import ActorCritic, reset_hidden

INPUTS = ("obs", "h", "reset")
OUTPUTS = ("params", "value", "h_next")
OPSET = 18


class DecisionStep(nn.Module):
    """One step of a model with the state reset folded in (what the ONNX graph computes)."""

    def __init__(self, model: ActorCritic) -> None:
        super().__init__()
        self.model = model
        self.recurrent = model.state_size > 0

    def forward(self, obs: torch.Tensor, h: torch.Tensor, reset: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self.recurrent:
            params, value, _ = self.model.step(obs, obs[:, :0])
            return params, value, h
        params, value, h_next = self.model.step(obs, reset_hidden(h, reset))
        return params, value, h_next

    def state_size(self) -> int:
        return self.model.state_size if self.recurrent else 1


def observation_layout(env: dict[str, Any]) -> dict[str, Any] | None:
    """How the model's input columns are laid out: its preset's (the `paper` preset's named columns), or for
    another Gymnasium env each part of its observation space with its encoding and columns
    (:mod:`uavrl.envs.spaces`); None for the `mec` preset (its columns are ``MecObs``)."""
    params, env_id = dict(env.get("params", {})), str(env.get("id", ENV_ID))
    if env_id == ENV_ID:
        return get_preset(str(params.get("preset", DEFAULT_PRESET))).observation_layout(params)
    from uavrl.envs.vector import GymVecEnv

    probe = GymVecEnv(env_id, 1, **params)
    try:
        return {
            key: {"encoding": kind, "columns": [first, last]}
            for key, kind, first, last in probe.encode.layout
        }
    finally:
        probe.close()


def _action_rule(action: dict[str, Any]) -> str:
    kind = action["kind"]
    if kind == "discrete":
        start = int(action.get("start", 0))
        return "argmax(params) is the greedy action" + (f", plus its start {start}" if start else "")
    if kind == "composite":
        from uavrl.nn.heads import make_head

        sizes = [make_head(1, part).param_dim for part in action["parts"]]
        ends = np.cumsum(sizes).tolist()
        rules = [
            f"{key!r}: params[{end - size}:{end}], where {_action_rule(part)}"
            for key, part, size, end in zip(action["keys"], action["parts"], sizes, ends, strict=True)
        ]
        return f"a {action['container']} of parts, their params side by side; " + "; ".join(rules)
    if kind == "box":
        return "params = [mean (d) | log_std (d)]; greedy: mean, clipped (or tanh-squashed) to the bounds"
    if kind == "multi_discrete":
        return (
            f"params = the logits of each entry side by side (sizes {action['nvec']}); greedy: argmax "
            f"within each entry's logits, plus its start {action['start']}, reshaped to {action['shape']}"
        )
    if kind == "multi_binary":
        return (
            f"params = 2 logits per bit ({action['n']} bits); greedy: bit i is argmax(params[2i:2i+2]), "
            f"reshaped to {action['shape']}"
        )
    return "params = [logits (n) | mean (d) | log_std (d)]; greedy: (argmax(logits), mean within the bounds)"


def export_policy(model: ActorCritic, out: Path, config: dict[str, Any]) -> Path:
    """Write ``out`` (ONNX, weights inside: one file) and ``out.with_suffix('.json')`` (the
    sidecar), nothing else; returns the sidecar."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise ConfigError(
            "uavrl export needs the [export] extra: pip install 'uavrl[export]' -c constraints.txt"
        ) from None
    step = DecisionStep(model).eval()
    example = (
        torch.zeros(2, model.spec.actor_obs_dim),
        torch.zeros(2, step.state_size()),
        torch.zeros(2),
    )
    batch = torch.export.Dim("batch")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the exporter reports its passes on stdout and warns about its own internals
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            step,
            example,
            str(out),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: batch}, {0: batch}, {0: batch}),
            opset_version=OPSET,
            dynamo=True,
            # one self-contained file (the models are small): a drone gets what the CLI names
            external_data=False,
            verbose=False,
        )
    exporter_log.setLevel(level)
    env = config.get("env", {})
    sidecar = {
        "format": 1,
        "onnx": out.name,
        "inputs": {
            "obs": [None, model.spec.actor_obs_dim],
            "h": [None, step.state_size()],
            "reset": [None],
        },
        "outputs": {
            "params": [None, model.policy.param_dim],
            "value": [None],
            "h_next": [None, step.state_size()],
        },
        # a centralised critic reads the training world's state, absent on board: value is NaN
        "value_is_nan": bool(model.spec.critic_state_dim),
        "recurrent": step.recurrent,
        "state_size": step.state_size(),
        "action_space": model.spec.action,
        "greedy_action": _action_rule(model.spec.action),
        "observation_layout": observation_layout(env),
        "env": env,
        "model": model.spec.to_dict(),
    }
    path = out.with_suffix(".json")
    path.write_text(json.dumps(sidecar, indent=2))
    return path


def onnx_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime session on one intra-op thread without spinning (on-board settings)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_step(session: Any, obs: np.ndarray, h: np.ndarray, reset: np.ndarray) -> list[np.ndarray]:
    """``[params, value, h_next]`` of one step through onnxruntime."""
    feed = {"obs": obs.astype(np.float32), "h": h.astype(np.float32), "reset": reset.astype(np.float32)}
    return list(session.run(list(OUTPUTS), feed))
