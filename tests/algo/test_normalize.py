"""Reward scaling: running moments equal NumPy's, discounted returns reset at episode ends."""

from __future__ import annotations

import numpy as np
import pytest

from uavrl.algo.normalize import RewardScaler, RunningMoments


def test_running_moments_match_numpy_on_the_concatenated_stream() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=rng.integers(1, 20)) for _ in range(30)]
    moments = RunningMoments()
    for b in batches:
        moments.update(b)
    stream = np.concatenate(batches)
    assert moments.mean == pytest.approx(stream.mean(), rel=1e-3)
    assert moments.var == pytest.approx(stream.var(), rel=1e-3)


def test_scaler_divides_by_the_std_of_discounted_returns() -> None:
    scaler = RewardScaler(n=2, gamma=0.5)
    done = np.array([False, True])
    first = scaler(np.array([1.0, 2.0]), done)
    # returns after step 1: [1, 2] (copy 1 then resets); variance of [1, 2] with the prior count
    assert scaler.returns.tolist() == [1.0, 0.0]
    np.testing.assert_allclose(first, np.array([1.0, 2.0]) / np.sqrt(scaler.moments.var + 1e-8), rtol=1e-6)
    scaler(np.array([1.0, 1.0]), np.array([False, False]))
    assert scaler.returns.tolist() == [1.5, 1.0]
