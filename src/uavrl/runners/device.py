"""Where a central learner runs (``runner.learner_device``), where its actors act
(``runner.actor_device``), and how rollouts get to the learner.

The learner's model and optimizer live on its device; actors keep copies of the weights on
theirs, refreshed from a host copy.
Rollouts arrive on the host, are gathered into pinned (page-locked) buffers and copied to the
device without blocking the host; everything after that (targets, loss, optimizer step) stays on
the device. Weights and optimizer state leave it only as host copies (for the actors, and for
checkpoints, which therefore load on any device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from uavrl.algo.batch import TENSOR_FIELDS, RolloutBatch, concat_batches, copy_dim
from uavrl.config import Config
from uavrl.errors import ConfigError

CPU = torch.device("cpu")


def learner_device(config: Config) -> torch.device:
    """The configured learner device (``cpu`` for kinds without one), checked to exist here:
    a CUDA device that is absent is refused with what was found."""
    return checked_device("runner.learner_device", config.runner.learns_on)


def actor_device(config: Config) -> torch.device:
    """The configured device of the actors' forward passes (``cpu`` for kinds without one),
    checked to exist here."""
    return checked_device("runner.actor_device", config.runner.acts_on)


def checked_device(field: str, name: str) -> torch.device:
    """``name`` as a torch device; a CUDA device absent on this machine is refused, naming
    ``field`` and what was found."""
    device = torch.device(name)
    if device.type == "cuda":
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= found:
            seen = "no CUDA device" if found == 0 else f"{found} CUDA device(s), cuda:0 to cuda:{found - 1}"
            build = "" if torch.version.cuda else f" (torch {torch.__version__} is built without CUDA)"
            raise ConfigError(f"{field}={name!r}: this machine has {seen}{build}; use cpu")
    return device


def host_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``tensor`` in host memory (a clone when it is there already)."""
    return tensor.detach().to(CPU, copy=True)


class DeviceBatches:
    """Rollouts side by side on the learner's device: :func:`concat_batches` on the CPU; on an
    accelerator gathered into pinned host buffers (kept while the batch shape stays the same)
    and copied with ``non_blocking``, so the host goes on while the copy runs."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.pinned: dict[str, torch.Tensor] = {}
        self.copied: torch.cuda.Event | None = None  # the last copy out of the pinned buffers

    def __call__(self, rollouts: Sequence[RolloutBatch]) -> RolloutBatch:
        """One batch of ``rollouts`` (T, B = the sum of their copies) on the device."""
        if self.device.type == "cpu":
            return concat_batches(rollouts)
        if self.copied is not None:
            self.copied.synchronize()  # the buffers are read by the last copy until it ends
        on_device = {}
        for name in TENSOR_FIELDS:
            parts = [getattr(r, name) for r in rollouts]
            dim = copy_dim(name)
            shape = list(parts[0].shape)
            shape[dim] = sum(p.shape[dim] for p in parts)
            buffer = self.pinned.get(name)
            if buffer is None or list(buffer.shape) != shape or buffer.dtype != parts[0].dtype:
                buffer = self.pinned[name] = torch.empty(shape, dtype=parts[0].dtype, pin_memory=True)
            torch.cat(parts, dim=dim, out=buffer)
            on_device[name] = buffer.to(self.device, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()
        return RolloutBatch(**on_device, policy_version=min(r.policy_version for r in rollouts))
