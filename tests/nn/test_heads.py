"""Action heads: log-probs and entropies against direct computation; masks; bounds."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from uavrl.errors import ConfigError
from uavrl.nn.heads import (
    CategoricalHead,
    GaussianHead,
    HybridHead,
    describe_action_space,
    make_head,
)


def test_categorical_mask_gives_zero_probability() -> None:
    head = CategoricalHead(4, 3)
    params = head(torch.randn(500, 4))
    mask = torch.tensor([True, False, True]).expand(500, 3)
    dist = head.distribution(params, mask)
    assert (dist.sample() != 1).all()
    assert (dist.log_prob(torch.ones(500, dtype=torch.int64)) < -1e30).all()
    assert (dist.log_prob(torch.zeros(500, dtype=torch.int64)) > -1e3).all()


def test_gaussian_clip_keeps_actions_in_bounds_and_log_prob_is_unclipped() -> None:
    head = GaussianHead(4, np.array([-2.0]), np.array([2.0]), squash="clip")
    with torch.no_grad():
        head.log_std.fill_(math.log(5.0))
    params = head(torch.randn(1000, 4))
    dist = head.distribution(params)
    raw = dist.sample()
    env_actions = head.to_env(raw)
    assert env_actions.min() >= -2.0 and env_actions.max() <= 2.0
    assert (raw.abs() > 2.0).any()
    mean, log_std = params.split(1, dim=-1)
    expected = Normal(mean, log_std.exp()).log_prob(raw).sum(-1)
    torch.testing.assert_close(dist.log_prob(raw), expected)


def test_gaussian_tanh_log_prob_is_a_change_of_variables() -> None:
    low, high = np.array([-1.0, 0.0]), np.array([3.0, 1.0])
    head = GaussianHead(3, low, high, squash="tanh")
    params = head(torch.randn(64, 3))
    dist = head.distribution(params)
    u = dist.sample()
    a = torch.as_tensor(head.to_env(u))
    assert (a >= torch.as_tensor(low)).all() and (a <= torch.as_tensor(high)).all()
    mean, log_std = params.split(2, dim=-1)
    half = torch.as_tensor((high - low) / 2, dtype=torch.float32)
    jac = torch.log(half * (1 - torch.tanh(u) ** 2))
    expected = (Normal(mean, log_std.exp()).log_prob(u) - jac).sum(-1)
    torch.testing.assert_close(dist.log_prob(u), expected, rtol=1e-4, atol=1e-4)


def test_hybrid_log_prob_and_entropy_are_sums_of_the_parts() -> None:
    space = gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Box(0.0, 1.0, (1,))))
    head = make_head(5, describe_action_space(space))
    assert isinstance(head, HybridHead)
    params = head(torch.randn(10, 5))
    dist = head.distribution(params)
    actions = dist.sample()
    assert actions.shape == (10, 2)
    logits, rest = params.split([3, 2], dim=-1)
    part_d = torch.distributions.Categorical(logits=logits)
    part_c = Normal(rest[:, :1], rest[:, 1:].exp())
    expected = part_d.log_prob(actions[:, 0].long()) + part_c.log_prob(actions[:, 1:]).sum(-1)
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), part_d.entropy() + part_c.entropy().sum(-1))
    discrete, continuous = head.to_env(actions)
    assert discrete.dtype == np.int64 and continuous.shape == (10, 1)
    assert space.contains((int(discrete[0]), continuous[0]))


def test_unsupported_spaces_are_refused() -> None:
    with pytest.raises(ConfigError, match="action space"):
        describe_action_space(gym.spaces.MultiBinary(3))
    with pytest.raises(ConfigError, match="finite"):
        GaussianHead(2, np.array([-np.inf]), np.array([np.inf]))
