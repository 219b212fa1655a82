"""Checkpoints: tensors in safetensors (no code runs on load), the rest in JSON.

``<tag>.safetensors`` holds ``model<i>.<param>`` for every learner model and
``optim<i>.<param>.{exp_avg,exp_avg_sq,step}`` for its Adam state; ``<tag>.json`` holds the
resolved config, the architecture (``ModelSpec``) and the counters. Both carry one random
checkpoint id, so that a pair from two different saves is refused.

A save is crash-safe at every instant: both files are written to temporary names; the pair they
replace is hard-linked to ``<tag>.previous`` (complete before and after); then the new files are
renamed over the old ones, the JSON last. A crash between those two renames leaves new weights
beside the old JSON: their ids differ, the read is refused, and a resume falls back to
``<tag>.previous``, which is that old pair. Every read checks what it reads (JSON, safetensors,
the pairing, the tensors the architecture needs, finite values) and names the file and the
defect in a :class:`~uavrl.errors.CheckpointError`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from uavrl.algo.optim import SharedAdam
from uavrl.errors import CheckpointError
from uavrl.nn.models import ActorCritic, ModelSpec, build_model
from uavrl.runners.device import host_copy

FORMAT_VERSION = 1
ADAM_KEYS = ("exp_avg", "exp_avg_sq", "step")
PREVIOUS = ".previous"


def training_tensors(
    models: Sequence[ActorCritic], optimizers: Sequence[SharedAdam]
) -> dict[str, torch.Tensor]:
    """Weights and Adam state as flat named tensors (host copies, wherever the models live):
    ``model<i>.<param>`` and ``optim<i>.<param>.<exp_avg|exp_avg_sq|step>``, as a checkpoint
    stores them."""
    tensors: dict[str, torch.Tensor] = {}
    for i, (model, optimizer) in enumerate(zip(models, optimizers, strict=True)):
        for name, value in model.state_dict().items():
            tensors[f"model{i}.{name}"] = host_copy(value).contiguous()
        for name, param in model.named_parameters():
            state = optimizer.state.get(param, {})
            for key in ADAM_KEYS:
                if key in state:
                    tensors[f"optim{i}.{name}.{key}"] = host_copy(torch.as_tensor(state[key])).contiguous()
    return tensors


def load_training_tensors(
    tensors: dict[str, torch.Tensor], models: Sequence[ActorCritic], optimizers: Sequence[SharedAdam]
) -> None:
    """Copy :func:`training_tensors` into existing (possibly shared-memory, possibly device)
    tensors, in place."""
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


def save_checkpoint(
    directory: Path,
    tag: str,
    models: Sequence[ActorCritic],
    optimizers: Sequence[SharedAdam],
    config: dict[str, Any],
    counters: dict[str, Any],
) -> Path:
    """Write ``directory/<tag>.safetensors`` and ``<tag>.json``; returns the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = training_tensors(models, optimizers)
    meta = {
        "format": FORMAT_VERSION,
        "n_models": len(models),
        "architecture": models[0].spec.to_dict(),
        "config": config,
        "counters": counters,
    }
    weights = directory / f"{tag}.safetensors"
    info = directory / f"{tag}.json"
    checkpoint_id = uuid.uuid4().hex
    save_file(tensors, str(weights) + ".tmp", metadata={"checkpoint_id": checkpoint_id})
    info.with_suffix(".json.tmp").write_text(json.dumps({**meta, "checkpoint_id": checkpoint_id}, indent=2))
    if weights.exists() and info.exists():  # keep the checkpoint this one replaces
        for current in (weights, info):
            _keep(current, directory / f"{tag}{PREVIOUS}{current.suffix}")
    os.replace(str(weights) + ".tmp", weights)
    os.replace(info.with_suffix(".json.tmp"), info)
    return info


def _keep(current: Path, kept: Path) -> None:
    """Make ``kept`` a copy of ``current`` by one rename, leaving ``current`` in place (a hard
    link where the filesystem has them, else a copy)."""
    staged = kept.with_name(kept.name + ".tmp")
    staged.unlink(missing_ok=True)
    try:
        os.link(current, staged)
    except OSError:
        shutil.copyfile(current, staged)
    os.replace(staged, kept)


def read_meta(directory: Path, tag: str) -> dict[str, Any]:
    """The JSON half of a checkpoint, checked to be a complete one."""
    path = directory / f"{tag}.json"
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint {tag!r} in {directory}: not a run directory, or its run wrote no checkpoint yet"
        )
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: truncated or not JSON ({err})") from None
    needed = ("format", "n_models", "architecture", "config", "counters")
    missing = [k for k in needed if k not in meta] if isinstance(meta, dict) else list(needed)
    if missing:
        raise CheckpointError(f"{path}: not a uavrl checkpoint (missing {', '.join(missing)})")
    return dict(meta)


def read_checkpoint(directory: Path, tag: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Meta and tensors of a checkpoint, checked: readable, every tensor of its architecture
    present with the right shape, finite, and written by the same save as the JSON."""
    meta = read_meta(directory, tag)
    path = directory / f"{tag}.safetensors"
    if not path.exists():
        raise CheckpointError(f"{path}: missing (its {tag}.json is there)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored_id = (handle.metadata() or {}).get("checkpoint_id")
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    try:
        expected = build_model(ModelSpec(**meta["architecture"])).state_dict()
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{directory / f'{tag}.json'}: bad architecture ({err})") from None
    for i in range(int(meta["n_models"])):
        for name, value in expected.items():
            stored = tensors.get(f"model{i}.{name}")
            if stored is None or stored.shape != value.shape:
                found = "missing" if stored is None else f"shape {tuple(stored.shape)}"
                raise CheckpointError(
                    f"{path}: model{i}.{name} does not match the architecture "
                    f"(expected shape {tuple(value.shape)}, {found})"
                )
    for key, value in tensors.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")
    if "checkpoint_id" in meta and stored_id != meta["checkpoint_id"]:  # older checkpoints have none
        raise CheckpointError(
            f"{path}: written by another save than its {tag}.json (a save stopped between its "
            f"renames; uavrl train --resume goes on from {tag}{PREVIOUS})"
        )
    return meta, tensors


def load_models(directory: Path, tag: str) -> tuple[list[ActorCritic], dict[str, Any]]:
    """Rebuild every learner model of a checkpoint from its stored architecture."""
    meta, tensors = read_checkpoint(directory, tag)
    spec = ModelSpec(**meta["architecture"])
    models = []
    for i in range(meta["n_models"]):
        model = build_model(spec)
        prefix = f"model{i}."
        model.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        models.append(model)
    return models, meta


def restore_training_state(
    directory: Path, tag: str, models: Sequence[ActorCritic], optimizers: Sequence[SharedAdam]
) -> dict[str, Any]:
    """Copy weights and Adam state into existing (possibly shared-memory) tensors, in place.

    A corrupt ``tag`` checkpoint falls back to ``<tag>.previous``, saying so on stderr.
    """
    try:
        meta, tensors = read_checkpoint(directory, tag)
    except CheckpointError as err:
        if not (directory / f"{tag}{PREVIOUS}.json").exists():
            raise
        meta, tensors = read_checkpoint(directory, tag + PREVIOUS)
        print(f"{err}; resuming from the previous checkpoint ({tag}{PREVIOUS})", file=sys.stderr)
    if meta["n_models"] != len(models):
        raise CheckpointError(
            f"{directory}: the checkpoint holds {meta['n_models']} models, the run has {len(models)}"
        )
    load_training_tensors(tensors, models, optimizers)
    return meta
