"""The rollout batch that actors hand to learners (time-major tensors, no gradients)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch


@dataclass
class RolloutBatch:
    """T steps of B copies.

    Attributes:
        obs: (T, B, D) observations the actions were taken in.
        actions: (T, B, *A) actions in the head's format.
        behaviour_params: (T, B, P) distribution parameters the actions were sampled from.
        rewards: (T, B) float.
        terminated: (T, B) float, 1 where the step ended the episode.
        truncated: (T, B) float, 1 where a time limit cut the episode.
        final_values: (T, B) V(final_obs) at truncated steps, else 0.
        starts: (T, B) float, 1 where ``obs[t]`` begins an episode (hidden state reset).
        h0: (B, H) hidden state before step 0 (before its reset).
        last_value: (B,) V(obs_T) under the acting weights, the bootstrap after the last step.
        next_obs: (B, D) obs_T, the observation after the last step (a learner whose weights
            differ from the actor's re-evaluates its bootstrap value from it).
        next_start: (B,) float, 1 where ``next_obs`` begins an episode.
        policy_version: the version of the weights that acted (learner updates so far).
    """

    obs: torch.Tensor
    actions: torch.Tensor
    behaviour_params: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_values: torch.Tensor
    starts: torch.Tensor
    h0: torch.Tensor
    last_value: torch.Tensor
    next_obs: torch.Tensor
    next_start: torch.Tensor
    policy_version: int = 0

    @property
    def env_steps(self) -> int:
        return int(self.rewards.numel())

    def columns(self, lo: int, hi: int) -> RolloutBatch:
        """Copies ``[lo, hi)`` of the batch (views, no copy)."""
        return RolloutBatch(
            **{name: getattr(self, name).narrow(copy_dim(name), lo, hi - lo) for name in TENSOR_FIELDS},
            policy_version=self.policy_version,
        )


TENSOR_FIELDS = tuple(f.name for f in fields(RolloutBatch) if f.name != "policy_version")
_PER_COPY_FIELDS = ("h0", "last_value", "next_obs", "next_start")


def copy_dim(name: str) -> int:
    """The copy (B) dimension of a batch field: 0 for per-copy fields, 1 for (T, B, ...) ones."""
    return 0 if name in _PER_COPY_FIELDS else 1


def concat_batches(batches: Sequence[RolloutBatch]) -> RolloutBatch:
    """Rollouts of the same length T side by side: B = the sum of their copies.

    ``policy_version`` is the oldest of theirs (each rollout's own stays in its behaviour
    parameters, which is what an off-policy correction reads).
    """
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    if len(batches) == 1:
        return batches[0]
    lengths = {b.rewards.shape[0] for b in batches}
    if len(lengths) != 1:
        raise ValueError(f"rollouts of different lengths cannot be batched: T = {sorted(lengths)}")

    return RolloutBatch(
        **{
            name: torch.cat([getattr(b, name) for b in batches], dim=copy_dim(name)) for name in TENSOR_FIELDS
        },
        policy_version=min(b.policy_version for b in batches),
    )
