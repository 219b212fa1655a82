"""The actor-critic loss: one function that every runner calls."""

from __future__ import annotations

from typing import NamedTuple

import torch


class LossTerms(NamedTuple):
    """Scalar tensors: the total to differentiate and its parts (for logging)."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor


def actor_critic_loss(
    log_probs: torch.Tensor,
    entropy: torch.Tensor,
    values: torch.Tensor,
    returns: torch.Tensor,
    advantages: torch.Tensor,
    value_coef: float,
    entropy_coef: float,
    normalize_advantages: bool = False,
) -> LossTerms:
    """Policy gradient + value regression - entropy bonus, averaged over the T x B samples.

    Args:
        log_probs: (T, B) log pi(a_t | s_t) of the actions taken, with gradients.
        entropy: (T, B) policy entropy, with gradients.
        values: (T, B) V(s_t), with gradients.
        returns: (T, B) value targets (no gradient flows into them).
        advantages: (T, B) advantage estimates (no gradient flows into them).

    ``L = -mean(A * log pi) + value_coef * 0.5 * mean((R - V)^2) - entropy_coef * mean(H)``.
    """
    advantages = advantages.detach()
    if normalize_advantages and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    policy_loss = -(advantages * log_probs).mean()
    value_loss = 0.5 * (returns.detach() - values).pow(2).mean()
    mean_entropy = entropy.mean()
    total = policy_loss + value_coef * value_loss - entropy_coef * mean_entropy
    return LossTerms(total, policy_loss, value_loss, mean_entropy)
