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
    # a mask reaches the discrete choice; the checkpoint names of its parts are kept
    mask = torch.tensor([True, False, True]).expand(10, 3)
    assert (head.distribution(params, mask).sample()[:, 0] != 1).all()
    assert {k.split(".")[0] for k in head.state_dict()} == {"discrete", "continuous"}


def test_unsupported_spaces_are_refused() -> None:
    with pytest.raises(ConfigError, match="action space must be Discrete, MultiDiscrete, MultiBinary"):
        describe_action_space(gym.spaces.Text(3))
    with pytest.raises(ConfigError, match="finite"):
        GaussianHead(2, np.array([-np.inf]), np.array([np.inf]))


@pytest.mark.parametrize(
    "space",
    [gym.spaces.MultiDiscrete([3, 2, 4], start=[1, 0, -2]), gym.spaces.MultiBinary((2, 3))],
    ids=["multi_discrete", "multi_binary"],
)
def test_multi_categorical_log_prob_and_entropy_are_sums_of_independent_categoricals(space) -> None:
    """Against torch.distributions built entry by entry; sampled frequencies follow the
    probabilities; greedy and sampled actions are in the env's space, with its shape and start."""
    torch.manual_seed(0)
    head = make_head(8, describe_action_space(space))
    params = head(torch.randn(4, 8)) * 50  # logits far from uniform
    dist = head.distribution(params)
    actions = dist.sample()
    assert actions.shape == (4, head.action_shape[0]) and actions.dtype == torch.int64
    sizes = [int(n) for n in np.asarray(space.nvec).reshape(-1)] if hasattr(space, "nvec") else [2] * 6
    parts = [torch.distributions.Categorical(logits=segment) for segment in params.split(sizes, dim=-1)]
    expected = sum(p.log_prob(actions[:, i]) for i, p in enumerate(parts))
    torch.testing.assert_close(dist.log_prob(actions), expected)
    torch.testing.assert_close(dist.entropy(), sum(p.entropy() for p in parts))
    for batch in (head.to_env(actions), head.to_env(dist.mode())):
        assert all(space.contains(a) for a in batch)
    # frequencies of 20,000 draws of the first entry match its probabilities
    draws = head.distribution(params[:1].expand(20_000, -1)).sample()[:, 0]
    freq = torch.bincount(draws, minlength=sizes[0]).float() / 20_000
    torch.testing.assert_close(freq, parts[0].probs[0], atol=0.015, rtol=0.0)


def test_a_composite_action_is_the_sum_of_its_parts_and_rebuilds_the_nested_space() -> None:
    """A Dict of a Discrete with a start, MultiBinary bits, a Box and a Tuple(Discrete, Box):
    log-probability and entropy are the sums of the parts' (each built part by part with
    torch.distributions), and every row of a sampled or greedy batch lies in the space."""
    space = gym.spaces.Dict(
        {
            "server": gym.spaces.Discrete(3, start=1),
            "bits": gym.spaces.MultiBinary(2),
            "power": gym.spaces.Box(0.0, 1.0, (1,)),
            "pair": gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Box(-1.0, 1.0, (2,)))),
        }
    )
    action = describe_action_space(space)
    assert action["kind"] == "composite" and action["keys"] == ["bits", "pair", "power", "server"]
    assert action["parts"][1]["kind"] == "hybrid"
    # a mask reaches the one Discrete part at the top ("server"); two of them make it ambiguous
    masked = make_head(8, action).distribution(
        torch.zeros(50, 15), torch.tensor([True, False, True]).expand(50, 3)
    )
    assert (masked.sample()[:, 6] != 1).all()
    two = describe_action_space(gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.Discrete(3))))
    with pytest.raises(ConfigError, match="exactly one Discrete part"):
        make_head(8, two).distribution(torch.zeros(1, 6), torch.ones(1, 3, dtype=torch.bool))
    torch.manual_seed(0)
    head = make_head(8, action)
    params = head(torch.randn(5, 8)) * 3
    dist = head.distribution(params)
    actions = dist.sample()
    assert actions.shape == (5, 2 + 3 + 1 + 1) and actions.dtype == torch.float32
    bits, pair, power, server = params.split([4, 2 + 4, 2, 3], dim=-1)
    pair_logits, pair_mean, pair_log_std = pair.split([2, 2, 2], dim=-1)
    parts = [
        (torch.distributions.Categorical(logits=bits[:, :2]), actions[:, 0].long()),
        (torch.distributions.Categorical(logits=bits[:, 2:]), actions[:, 1].long()),
        (torch.distributions.Categorical(logits=pair_logits), actions[:, 2].long()),
    ]
    log_prob = sum(d.log_prob(a) for d, a in parts)
    entropy = sum(d.entropy() for d, _ in parts)
    for mean, log_std, cols in ((pair_mean, pair_log_std, slice(3, 5)), (*power.split(1, -1), slice(5, 6))):
        normal = Normal(mean, log_std.exp())
        log_prob = log_prob + normal.log_prob(actions[:, cols]).sum(-1)
        entropy = entropy + normal.entropy().sum(-1)
    server_dist = torch.distributions.Categorical(logits=server)
    log_prob = log_prob + server_dist.log_prob(actions[:, 6].long())
    torch.testing.assert_close(dist.log_prob(actions), log_prob)
    torch.testing.assert_close(dist.entropy(), entropy + server_dist.entropy())
    batch_space = gym.vector.utils.batch_space(space, 5)
    for batch in (head.to_env(actions), head.to_env(dist.mode().detach())):
        rows = list(gym.vector.utils.iterate(batch_space, batch))
        assert len(rows) == 5 and all(space.contains(row) for row in rows)
        assert set(batch["server"].tolist()) <= {1, 2, 3}


def test_multi_binary_and_multi_discrete_log_probs_and_entropies_equal_hand_values() -> None:
    """MultiBinary(2) with P(bit 0 = 1) = 3/4 and P(bit 1 = 1) = 1/2 (two logits per bit), and
    MultiDiscrete([3], start=[1]) with probabilities (1/2, 1/4, 1/4): values worked out by hand."""
    bits = make_head(1, describe_action_space(gym.spaces.MultiBinary(2))).distribution(
        torch.tensor([[0.0, math.log(3.0), 0.0, 0.0]])
    )
    torch.testing.assert_close(bits.log_prob(torch.tensor([[1, 0]])), torch.tensor([math.log(0.75 * 0.5)]))
    entropy = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) + math.log(2.0)
    torch.testing.assert_close(bits.entropy(), torch.tensor([entropy]))
    head = make_head(1, describe_action_space(gym.spaces.MultiDiscrete([3], start=[1])))
    entry = head.distribution(torch.log(torch.tensor([[0.5, 0.25, 0.25]])))
    torch.testing.assert_close(entry.log_prob(torch.tensor([[2]])), torch.tensor([math.log(0.25)]))
    torch.testing.assert_close(entry.entropy(), torch.tensor([1.5 * math.log(2.0)]))
    assert head.to_env(entry.mode()).tolist() == [[1]]  # index 0 plus the start
