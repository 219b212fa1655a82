"""The actor-critic loss on small known inputs."""

from __future__ import annotations

import pytest
import torch

from uavrl.algo.loss import actor_critic_loss


def test_loss_terms_by_hand() -> None:
    log_probs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    entropy = torch.tensor([[0.5, 0.7]], requires_grad=True)
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    returns = torch.tensor([[3.0, 1.0]])
    advantages = returns - values
    terms = actor_critic_loss(log_probs, entropy, values, returns, advantages, 0.25, 0.05)
    policy = -((2.0 * -1.0) + (-1.0 * -2.0)) / 2
    value = 0.5 * (4.0 + 1.0) / 2
    assert terms.policy.item() == pytest.approx(policy)
    assert terms.value.item() == pytest.approx(value)
    assert terms.entropy.item() == pytest.approx(0.6)
    assert terms.total.item() == pytest.approx(policy + 0.25 * value - 0.05 * 0.6)
    terms.total.backward()
    # Advantages are constants: the value gradient comes from the value term only.
    assert values.grad is not None
    torch.testing.assert_close(values.grad, torch.tensor([[-0.25 * 2.0 / 2, 0.25 * 1.0 / 2]]))


def test_advantage_normalisation_is_scale_free() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, -0.5]])
    zeros = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 2.0, 6.0]])
    a = actor_critic_loss(log_probs, zeros, zeros, zeros, adv, 0.0, 0.0, normalize_advantages=True)
    b = actor_critic_loss(log_probs, zeros, zeros, zeros, 100 * adv, 0.0, 0.0, normalize_advantages=True)
    assert a.policy.item() == pytest.approx(b.policy.item(), rel=1e-5)
