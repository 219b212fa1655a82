"""Checkpoints: tensors in safetensors (no code runs on load), the rest in JSON.

``<tag>.safetensors`` holds ``model<i>.<param>`` for every learner model and
``optim<i>.<param>.{exp_avg,exp_avg_sq,step}`` for its Adam state; ``<tag>.json`` holds the
resolved config, the architecture (``ModelSpec``) and the counters. Both are written to a
temporary name and renamed, so a crash never leaves a torn checkpoint.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from uavrl.nn.models import ActorCritic, ModelSpec, build_model

FORMAT_VERSION = 1
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")


def save_checkpoint(
    directory: Path,
    tag: str,
    models: Sequence[ActorCritic],
    optimizers: Sequence[torch.optim.Optimizer],
    config: dict[str, Any],
    counters: dict[str, Any],
) -> Path:
    """Write ``directory/<tag>.safetensors`` and ``<tag>.json``; returns the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
        for name, value in model.state_dict().items():
            tensors[f"model{i}.{name}"] = value.detach().clone().contiguous()
        for name, param in model.named_parameters():
            state = optimizer.state.get(param, {})
            for key in ADAM_KEYS:
                if key in state:
                    tensors[f"optim{i}.{name}.{key}"] = (
                        torch.as_tensor(state[key]).detach().clone().contiguous()
                    )
    meta = {
        "format": FORMAT_VERSION,
        "n_models": len(models),
        "architecture": models[0].spec.to_dict(),
        "config": config,
        "counters": counters,
    }
    weights = directory / f"{tag}.safetensors"
    info = directory / f"{tag}.json"
    save_file(tensors, str(weights) + ".tmp")
    info.with_suffix(".json.tmp").write_text(json.dumps(meta, indent=2))
    os.replace(str(weights) + ".tmp", weights)
    os.replace(info.with_suffix(".json.tmp"), info)
    return info


def read_meta(directory: Path, tag: str) -> dict[str, Any]:
    path = directory / f"{tag}.json"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint {tag!r} in {directory}")
    meta: dict[str, Any] = json.loads(path.read_text())
    return meta


def load_models(directory: Path, tag: str) -> tuple[list[ActorCritic], dict[str, Any]]:
    """Rebuild every learner model of a checkpoint from its stored architecture."""
    meta = read_meta(directory, tag)
    tensors = load_file(str(directory / f"{tag}.safetensors"))
    spec = ModelSpec(**meta["architecture"])
    models = []
    for i in range(meta["n_models"]):
        model = build_model(spec)
        prefix = f"model{i}."
        model.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        models.append(model)
    return models, meta


def restore_training_state(
    directory: Path, tag: str, models: Sequence[ActorCritic], optimizers: Sequence[torch.optim.Optimizer]
) -> dict[str, Any]:
    """Copy weights and Adam state into existing (possibly shared-memory) tensors, in place."""
    meta = read_meta(directory, tag)
    tensors = load_file(str(directory / f"{tag}.safetensors"))
    if meta["n_models"] != len(models):
        raise ValueError(f"checkpoint holds {meta['n_models']} models, the run has {len(models)}")
    with torch.no_grad():
        for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
            for name, value in model.state_dict().items():
                value.copy_(tensors[f"model{i}.{name}"])
            for name, param in model.named_parameters():
                state = optimizer.state[param]
                for key in ADAM_KEYS:
                    stored = tensors.get(f"optim{i}.{name}.{key}")
                    if stored is not None:
                        state[key].copy_(stored)
    return meta
