"""Channel models.

``DopplerChannel``: the two-state (bad = 0, good = 1) Markov chain of the `paper` preset, with
transition probabilities scaled by the Doppler shift of a UAV moving at ``v`` km/h
(carrier 5.9 GHz, 1 ms slot) and clipped to [0, 1].
"""

from __future__ import annotations

import math

import numpy as np

CARRIER_HZ = 5.9e9
LIGHT_SPEED = 3e8
SLOT_S = 1e-3
RHO = 15 / 25


def doppler_hz(velocity_kmh: float) -> float:
    """Maximum Doppler shift f_d = (v / 3.6) * f_c / c, in Hz."""
    return (velocity_kmh / 3.6) * CARRIER_HZ / LIGHT_SPEED


def transition_probabilities(velocity_kmh: float) -> tuple[float, float]:
    """``(p01, p10)``: bad -> good and good -> bad per step, each clipped to [0, 1].

    ``fd_bar = f_d * slot``; ``p10 = fd_bar * sqrt(2 pi rho)``; ``p01 = p10 / (exp(rho) - 1)``.
    Unclipped, both exceed 1 above ~77 km/h (p01) and ~94 km/h (p10).
    """
    fd_bar = doppler_hz(velocity_kmh) * SLOT_S
    p10 = fd_bar * math.sqrt(2 * math.pi * RHO)
    p01 = p10 / (math.exp(RHO) - 1)
    return min(max(p01, 0.0), 1.0), min(max(p10, 0.0), 1.0)


def stationary_good(p01: float, p10: float) -> float:
    """Stationary probability of the good state; exp(-rho), the v -> 0 limit, for a frozen chain."""
    total = p01 + p10
    return p01 / total if total > 0 else math.exp(-RHO)


def step_channel(state: np.ndarray, u: np.ndarray, p01: np.ndarray, p10: np.ndarray) -> np.ndarray:
    """One Markov transition per copy.

    Args:
        state: (B,) int8 channel, 0 bad / 1 good.
        u: (B,) uniforms in [0, 1).
        p01, p10: (B,) transition probabilities.

    Returns:
        (B,) int8 next state.
    """
    stay_good = u >= p10
    become_good = u < p01
    return np.where(state == 1, stay_good, become_good).astype(np.int8)
