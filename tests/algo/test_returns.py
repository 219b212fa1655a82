"""Return targets against hand-computed values, with a termination and a truncation mid-rollout."""

from __future__ import annotations

import pytest
import torch

from uavrl.algo.returns import gae, n_step_returns

GAMMA = 0.9
# One copy, T = 5: step 1 terminates, step 3 is truncated (time limit), the rollout ends after 4.
REWARDS = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
VALUES = torch.tensor([[0.5], [0.6], [0.7], [0.8], [0.9]])
TERMINATED = torch.tensor([[0.0], [1.0], [0.0], [0.0], [0.0]])
TRUNCATED = torch.tensor([[0.0], [0.0], [0.0], [1.0], [0.0]])
FINAL_VALUES = torch.tensor([[0.0], [0.0], [0.0], [10.0], [0.0]])  # V(final_obs) at step 3
LAST_VALUE = torch.tensor([20.0])


def test_n_step_returns_by_hand() -> None:
    r4 = 5.0 + GAMMA * 20.0  # bootstraps from V(obs_T)
    r3 = 4.0 + GAMMA * 10.0  # truncated: bootstraps from V(final_obs), not from r4
    r2 = 3.0 + GAMMA * r3
    r1 = 2.0  # terminal: nothing follows
    r0 = 1.0 + GAMMA * r1
    returns = n_step_returns(REWARDS, LAST_VALUE, TERMINATED, TRUNCATED, FINAL_VALUES, GAMMA)
    assert returns.squeeze(1).tolist() == pytest.approx([r0, r1, r2, r3, r4])


def test_gae_by_hand() -> None:
    lam = 0.5
    d4 = 5.0 + GAMMA * 20.0 - 0.9
    d3 = 4.0 + GAMMA * 10.0 - 0.8
    d2 = 3.0 + GAMMA * 0.8 - 0.7
    d1 = 2.0 - 0.6
    d0 = 1.0 + GAMMA * 0.6 - 0.5
    a4 = d4
    a3 = d3  # the truncation cuts the advantage trace too
    a2 = d2 + GAMMA * lam * a3
    a1 = d1
    a0 = d0 + GAMMA * lam * a1
    adv, ret = gae(REWARDS, VALUES, LAST_VALUE, TERMINATED, TRUNCATED, FINAL_VALUES, GAMMA, lam)
    assert adv.squeeze(1).tolist() == pytest.approx([a0, a1, a2, a3, a4])
    assert ret.squeeze(1).tolist() == pytest.approx(
        [a + v for a, v in zip([a0, a1, a2, a3, a4], VALUES.squeeze(1).tolist(), strict=True)]
    )


def test_gae_with_lambda_one_gives_n_step_returns() -> None:
    g = torch.Generator().manual_seed(0)
    t, b = 12, 6
    rewards = torch.randn(t, b, generator=g)
    values = torch.randn(t, b, generator=g)
    terminated = (torch.rand(t, b, generator=g) < 0.15).float()
    truncated = (torch.rand(t, b, generator=g) < 0.1).float() * (1 - terminated)
    final_values = torch.randn(t, b, generator=g) * truncated
    last = torch.randn(b, generator=g)
    _, ret = gae(rewards, values, last, terminated, truncated, final_values, 0.97, 1.0)
    expected = n_step_returns(rewards, last, terminated, truncated, final_values, 0.97)
    torch.testing.assert_close(ret, expected)


def test_a_step_both_terminated_and_truncated_counts_as_terminated() -> None:
    # Step 1 ends the episode with both flags set; V(final_obs) must not be used and the
    # continuation factor must not flip sign (1 - term - trunc would be -1 there).
    terminated = torch.tensor([[0.0], [1.0], [0.0]])
    truncated = torch.tensor([[0.0], [1.0], [0.0]])
    final_values = torch.tensor([[0.0], [7.0], [0.0]])
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.6], [0.7]])
    last = torch.tensor([4.0])
    r2 = 3.0 + GAMMA * 4.0
    r1 = 2.0
    r0 = 1.0 + GAMMA * r1
    returns = n_step_returns(rewards, last, terminated, truncated, final_values, GAMMA)
    assert returns.squeeze(1).tolist() == pytest.approx([r0, r1, r2])
    lam = 0.5
    d2 = 3.0 + GAMMA * 4.0 - 0.7
    d1 = 2.0 - 0.6
    d0 = 1.0 + GAMMA * 0.6 - 0.5
    adv, _ = gae(rewards, values, last, terminated, truncated, final_values, GAMMA, lam)
    assert adv.squeeze(1).tolist() == pytest.approx([d0 + GAMMA * lam * d1, d1, d2])
