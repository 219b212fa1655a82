"""The rollout batch that actors hand to learners (time-major tensors, no gradients)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
            obs=self.obs[:, lo:hi],
            actions=self.actions[:, lo:hi],
            behaviour_params=self.behaviour_params[:, lo:hi],
            rewards=self.rewards[:, lo:hi],
            terminated=self.terminated[:, lo:hi],
            truncated=self.truncated[:, lo:hi],
            final_values=self.final_values[:, lo:hi],
            starts=self.starts[:, lo:hi],
            h0=self.h0[lo:hi],
            last_value=self.last_value[lo:hi],
            next_obs=self.next_obs[lo:hi],
            next_start=self.next_start[lo:hi],
            policy_version=self.policy_version,
        )


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

    def cat(name: str, dim: int) -> torch.Tensor:
        return torch.cat([getattr(b, name) for b in batches], dim=dim)

    return RolloutBatch(
        obs=cat("obs", 1),
        actions=cat("actions", 1),
        behaviour_params=cat("behaviour_params", 1),
        rewards=cat("rewards", 1),
        terminated=cat("terminated", 1),
        truncated=cat("truncated", 1),
        final_values=cat("final_values", 1),
        starts=cat("starts", 1),
        h0=cat("h0", 0),
        last_value=cat("last_value", 0),
        next_obs=cat("next_obs", 0),
        next_start=cat("next_start", 0),
        policy_version=min(b.policy_version for b in batches),
    )
