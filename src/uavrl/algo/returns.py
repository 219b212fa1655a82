"""Bootstrapped return targets for a rollout of T steps from B copies (time-major).

Termination and time-limit truncation differ: after a terminal step nothing follows
(``V = 0``); after a truncated step the episode *could* have gone on, so the target bootstraps
from ``V(final_obs)``, the value of the observation the time limit cut off, passed in as
``final_values``. Shapes: every (T, B) argument is float; ``last_value`` (B,) is V(obs_T), the
value of the observation after the rollout.

A step that is both terminated and truncated (a time limit that coincides with a terminal
state) counts as terminated: nothing follows a terminal state, whatever the clock says.
"""

from __future__ import annotations

import torch


def _truncated_only(terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """(T, B) float: 1 where a step was truncated and not also terminated."""
    return truncated * (1.0 - terminated)


def _next_values(
    values: torch.Tensor,
    last_value: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
) -> torch.Tensor:
    """V of the state after each step: V(s_{t+1}), or V(final_obs_t) where step t was truncated."""
    following = torch.cat([values[1:], last_value.unsqueeze(0)])
    return torch.where(truncated.bool(), final_values, following)


def n_step_returns(
    rewards: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """``R_t = r_t + gamma * R_{t+1}``, cut at episode ends; (T, B).

    ``R_T = V(obs_T)``; at a terminal step ``R_t = r_t``; at a truncated step
    ``R_t = r_t + gamma * V(final_obs_t)``.
    """
    truncated = _truncated_only(terminated, truncated)
    returns = torch.empty_like(rewards)
    running = last_value
    for t in reversed(range(rewards.shape[0])):
        cut = terminated[t] + truncated[t]
        running = rewards[t] + gamma * ((1.0 - cut) * running + truncated[t] * final_values[t])
        returns[t] = running
    return returns


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016); returns (advantages, returns).

    ``delta_t = r_t + gamma * (1 - term_t) * V_next_t - V_t``;
    ``A_t = delta_t + gamma * lam * (1 - term_t - trunc_t) * A_{t+1}``; ``returns = A + V``.
    With ``lam = 1`` the returns equal :func:`n_step_returns`.
    """
    truncated = _truncated_only(terminated, truncated)
    next_values = _next_values(values, last_value, truncated, final_values)
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values
    advantages = torch.empty_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * (1.0 - terminated[t] - truncated[t]) * running
        advantages[t] = running
    return advantages, advantages + values
