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

from typing import NamedTuple

import numpy as np
import torch


def _truncated_only(terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
    """(T, B) float: 1 where a step was truncated and not also terminated."""
    return truncated * (1.0 - terminated)


def _backward_scan(x: torch.Tensor, carry: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """``y_t = x_t + carry_t * y_{t+1}`` from ``y_T = init`` (B,), for (T, B) ``x`` and ``carry``;
    no gradient. On the CPU the T steps run in NumPy: on B-sized rows a NumPy op costs about
    1 us, a torch op about 10 us, and this loop was the learner's largest fixed cost per update.
    On an accelerator they run there (a trip to the host would stall the device every update)."""
    if x.device.type != "cpu":
        return _backward_scan_in_torch(x, carry, init)
    xs, carries = x.detach().numpy(), carry.detach().numpy()
    out = np.empty_like(xs)
    running = init.detach().numpy().astype(xs.dtype)
    for t in range(xs.shape[0] - 1, -1, -1):
        running = xs[t] + carries[t] * running
        out[t] = running
    return torch.from_numpy(out)


def _backward_scan_in_torch(x: torch.Tensor, carry: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """:func:`_backward_scan` in torch ops, on whichever device ``x`` is."""
    with torch.no_grad():
        steps, following = [], init.detach().to(x.dtype)
        for t in range(x.shape[0] - 1, -1, -1):
            following = x[t] + carry[t] * following
            steps.append(following)
        return torch.stack(steps[::-1])


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
    paid = rewards + gamma * truncated * final_values
    return _backward_scan(paid, gamma * (1.0 - terminated - truncated), last_value)


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
    advantages = _backward_scan(
        deltas, gamma * lam * (1.0 - terminated - truncated), torch.zeros_like(last_value)
    )
    return advantages, advantages + values


class VTrace(NamedTuple):
    """V-trace targets ``vs`` (T, B) and policy-gradient advantages (T, B)."""

    vs: torch.Tensor
    pg_advantages: torch.Tensor


def vtrace(
    log_rhos: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    last_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
) -> VTrace:
    """V-trace off-policy targets (Espeholt et al. 2018, IMPALA, section 4, equations 1-3).

    ``log_rhos`` (T, B) are ``log pi(a_t|x_t) - log mu(a_t|x_t)`` of the learner policy pi and
    the behaviour policy mu; ``values`` (T, B) are V(x_t) under the learner. With
    ``rho_t = min(rho_bar, pi/mu)``, ``c_t = min(c_bar, pi/mu)`` and
    ``delta_t = rho_t (r_t + gamma V(x_{t+1}) - V(x_t))``::

        v_s = V(x_s) + delta_s + gamma c_s (v_{s+1} - V(x_{s+1}))
        A_s = rho_s (r_s + gamma v_{s+1} - V(x_s))

    Episode ends as in :func:`n_step_returns`: a terminal step has nothing after it (its
    trace is cut, ``V = 0``); a truncated step bootstraps from ``V(final_obs)`` and cuts the
    trace; ``v_T = last_value``. No gradient flows through the targets' ratios.
    """
    t_b = rewards.shape
    _check_shapes(
        t_b,
        log_rhos=log_rhos,
        values=values,
        terminated=terminated,
        truncated=truncated,
        final_values=final_values,
    )
    if last_value.shape != t_b[1:]:
        raise ValueError(f"last_value must have shape {tuple(t_b[1:])}, got {tuple(last_value.shape)}")
    if rho_bar <= 0 or c_bar <= 0:
        raise ValueError(f"rho_bar and c_bar must be > 0, got {rho_bar} and {c_bar}")
    with torch.no_grad():
        ratios = torch.exp(log_rhos)
        rhos = ratios.clamp(max=rho_bar)
        cs = ratios.clamp(max=c_bar)
        truncated = _truncated_only(terminated, truncated)
        not_terminal = 1.0 - terminated
        continues = not_terminal - truncated
        next_values = _next_values(values, last_value, truncated, final_values)
        deltas = rhos * (rewards + gamma * not_terminal * next_values - values)
        vs = values + _backward_scan(deltas, gamma * continues * cs, torch.zeros_like(last_value))
        next_vs = _next_values(vs, last_value, truncated, final_values)
        pg_advantages = rhos * (rewards + gamma * not_terminal * next_vs - values)
    return VTrace(vs, pg_advantages)


def _check_shapes(expected: torch.Size, **tensors: torch.Tensor) -> None:
    for name, tensor in tensors.items():
        if tensor.shape != expected:
            raise ValueError(f"{name} must have shape {tuple(expected)} (T, B), got {tuple(tensor.shape)}")
