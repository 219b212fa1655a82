"""The Doppler two-state channel: clipped probabilities and empirical transition rates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uavrl.envs import make_core
from uavrl.envs.channel import stationary_good, transition_probabilities


def test_probabilities_follow_the_formula_below_the_clip() -> None:
    p01, p10 = transition_probabilities(30.0)
    fd_bar = (30.0 / 3.6) * 5.9e9 / 3e8 * 1e-3
    expected_p10 = fd_bar * math.sqrt(2 * math.pi * 0.6)
    assert p10 == pytest.approx(expected_p10)
    assert p01 == pytest.approx(expected_p10 / (math.exp(0.6) - 1))


@pytest.mark.parametrize("velocity", [80.0, 100.0, 120.0])
def test_probabilities_are_clipped_to_one(velocity: float) -> None:
    p01, p10 = transition_probabilities(velocity)
    assert p01 == 1.0
    assert 0.0 < p10 <= 1.0


def test_unclipped_p01_would_exceed_one_near_77_kmh() -> None:
    assert transition_probabilities(77.0)[0] < 1.0
    assert transition_probabilities(78.0)[0] == 1.0


def test_frozen_channel_has_the_limit_stationary_law() -> None:
    assert stationary_good(0.0, 0.0) == pytest.approx(math.exp(-0.6))


def _channel_path(velocity: float, copies: int, steps: int) -> np.ndarray:
    core = make_core("paper", copies, velocity=velocity, episode_length=steps + 1)
    core.reset(seed=123)
    path = [core.channel.copy()]
    discard = np.full(copies, 2)
    for _ in range(steps):
        core.step(discard)
        path.append(core.channel.copy())
    return np.stack(path)  # (steps + 1, copies)


@pytest.mark.parametrize("velocity", [5.0, 50.0, 120.0])
def test_empirical_transitions_match_the_clipped_probabilities(velocity: float) -> None:
    path = _channel_path(velocity, copies=400, steps=400)
    before, after = path[:-1].ravel(), path[1:].ravel()
    p01, p10 = transition_probabilities(velocity)
    for state, p, observed_switch in ((0, p01, after == 1), (1, p10, after == 0)):
        mask = before == state
        n = mask.sum()
        rate = observed_switch[mask].mean()
        tolerance = 4 * math.sqrt(max(p * (1 - p), 1e-4) / n)
        assert abs(rate - p) < tolerance, (velocity, state, rate, p)


def test_initial_state_follows_the_stationary_law() -> None:
    core = make_core("paper", 20_000, velocity=20.0)
    core.reset(seed=0)
    p01, p10 = transition_probabilities(20.0)
    expected = stationary_good(p01, p10)
    assert abs(core.channel.mean() - expected) < 4 * math.sqrt(expected * (1 - expected) / 20_000)
