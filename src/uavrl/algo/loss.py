"""The actor-critic loss: one function that every runner calls."""

from __future__ import annotations

from typing import NamedTuple

import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.algo.returns import gae, n_step_returns, vtrace
from uavrl.nn.models import ActorCritic, RolloutOutputs, reset_hidden


class LossTerms(NamedTuple):
    """Scalar tensors: the total to differentiate and its parts (for logging)."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    hidden: torch.Tensor | None = None  # the hidden-state prediction loss, where the model has one


def with_hidden_prediction(
    terms: LossTerms, model: ActorCritic, obs: torch.Tensor, outputs: RolloutOutputs, hidden_coef: float
) -> LossTerms:
    """``terms`` plus ``hidden_coef * 0.5 * mean((h_pred - h)^2)`` over the T x B x K hidden-state
    columns, where the model predicts them (``ModelSpec.hidden_target_dim``); else ``terms``."""
    if outputs.hidden_prediction is None:
        return terms
    hidden_loss = 0.5 * (outputs.hidden_prediction - model.hidden_targets(obs)).pow(2).mean()
    return terms._replace(total=terms.total + hidden_coef * hidden_loss, hidden=hidden_loss)


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


def rollout_loss(
    model: ActorCritic,
    batch: RolloutBatch,
    gamma: float,
    gae_lambda: float | None,
    value_coef: float,
    entropy_coef: float,
    normalize_advantages: bool = False,
    hidden_coef: float = 0.0,
) -> LossTerms:
    """Re-evaluate a rollout with gradients and return the actor-critic loss.

    The model replays the rollout from its saved start state (``starts`` reset the hidden state
    inside the sequence); targets are n-step returns (``gae_lambda = None``) or GAE(lambda).
    A model that predicts the hidden state adds :func:`with_hidden_prediction`'s term.
    """
    outputs = model.rollout_outputs(batch.obs, batch.h0, batch.starts)
    params, values = outputs.params, outputs.values
    dist = model.policy.distribution(params)
    log_probs = dist.log_prob(batch.actions)
    rewards, terminated, truncated = batch.rewards, batch.terminated, batch.truncated
    final_values = batch.final_values
    if gae_lambda is None:
        returns = n_step_returns(rewards, batch.last_value, terminated, truncated, final_values, gamma)
        advantages = returns - values.detach()
    else:
        advantages, returns = gae(
            rewards,
            values.detach(),
            batch.last_value,
            terminated,
            truncated,
            final_values,
            gamma,
            gae_lambda,
        )
    terms = actor_critic_loss(
        log_probs,
        dist.entropy(),
        values,
        returns,
        advantages,
        value_coef,
        entropy_coef,
        normalize_advantages,
    )
    return with_hidden_prediction(terms, model, batch.obs, outputs, hidden_coef)


def vtrace_loss(
    model: ActorCritic,
    batch: RolloutBatch,
    gamma: float,
    rho_bar: float,
    c_bar: float,
    value_coef: float,
    entropy_coef: float,
    normalize_advantages: bool = False,
    hidden_coef: float = 0.0,
) -> LossTerms:
    """The actor-critic loss of a rollout acted by older weights, corrected by V-trace.

    The learner re-evaluates the rollout and its bootstrap observation with its own weights;
    ``log pi - log mu`` compares its log-probabilities of the actions taken with the behaviour
    distribution stored in the batch (for a factorised action the log-probabilities add up, so
    its ratio is the product of its factors' ratios). Value targets are the V-trace ``vs``, the
    policy gradient uses the V-trace advantages. With the actor's own weights it equals
    :func:`rollout_loss` with n-step returns.
    """
    outputs = model.rollout_outputs(batch.obs, batch.h0, batch.starts)
    params, values, h_last = outputs.params, outputs.values, outputs.h_last
    _, bootstrap, _ = model.step(batch.next_obs, reset_hidden(h_last, batch.next_start))
    dist = model.policy.distribution(params)
    log_probs = dist.log_prob(batch.actions)
    behaviour_log_probs = model.policy.distribution(batch.behaviour_params).log_prob(batch.actions)
    targets = vtrace(
        log_probs.detach() - behaviour_log_probs.detach(),
        batch.rewards,
        values.detach(),
        bootstrap.detach(),
        batch.terminated,
        batch.truncated,
        batch.final_values,
        gamma,
        rho_bar,
        c_bar,
    )
    terms = actor_critic_loss(
        log_probs,
        dist.entropy(),
        values,
        targets.vs,
        targets.pg_advantages,
        value_coef,
        entropy_coef,
        normalize_advantages,
    )
    return with_hidden_prediction(terms, model, batch.obs, outputs, hidden_coef)
