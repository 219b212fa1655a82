"""V-trace against a NumPy transcription of the IMPALA paper's equations (section 4, eq. 1-3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uavrl.algo.returns import n_step_returns, vtrace


def reference_vtrace(
    log_rhos: np.ndarray,
    discounts: np.ndarray,
    rewards: np.ndarray,
    values: np.ndarray,
    bootstrap: np.ndarray,
    rho_bar: float,
    c_bar: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Equation 1 as a sum, with per-step discounts (0 where an episode ends):

    v_s = V(x_s) + sum_{t>=s} (prod_{i=s}^{t-1} gamma_i c_i) delta_t,
    delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)),
    and the policy-gradient advantage rho_s (r_s + gamma_s v_{s+1} - V(x_s)), v_T = V(x_T).
    """
    t_len = rewards.shape[0]
    rhos = np.minimum(rho_bar, np.exp(log_rhos))
    cs = np.minimum(c_bar, np.exp(log_rhos))
    next_values = np.concatenate([values[1:], bootstrap[None]])
    deltas = rhos * (rewards + discounts * next_values - values)
    vs = np.zeros_like(values)
    for s in range(t_len):
        total = np.zeros_like(bootstrap)
        for t in range(s, t_len):
            trace = np.ones_like(bootstrap)
            for i in range(s, t):
                trace = trace * discounts[i] * cs[i]
            total = total + trace * deltas[t]
        vs[s] = values[s] + total
    next_vs = np.concatenate([vs[1:], bootstrap[None]])
    advantages = rhos * (rewards + discounts * next_vs - values)
    return vs, advantages


def _random(t_len: int, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "log_rhos": rng.normal(0.0, 1.5, (t_len, batch)),  # ratios well on both sides of 1
        "rewards": rng.normal(0.0, 1.0, (t_len, batch)),
        "values": rng.normal(0.0, 1.0, (t_len, batch)),
        "bootstrap": rng.normal(0.0, 1.0, batch),
    }


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def _vtrace(d: dict[str, np.ndarray], terminated: np.ndarray, gamma: float, rho_bar: float, c_bar: float):
    zeros = np.zeros_like(d["rewards"])
    return vtrace(
        _t(d["log_rhos"]),
        _t(d["rewards"]),
        _t(d["values"]),
        _t(d["bootstrap"]),
        _t(terminated),
        _t(zeros),
        _t(zeros),
        gamma,
        rho_bar,
        c_bar,
    )


@pytest.mark.parametrize(("rho_bar", "c_bar"), [(1.0, 1.0), (3.7, 2.2)])
@pytest.mark.parametrize("batch", [1, 5])
def test_vtrace_matches_the_papers_equations(rho_bar: float, c_bar: float, batch: int) -> None:
    d = _random(5, batch, seed=batch)
    ratios = np.exp(d["log_rhos"])
    assert (ratios > max(rho_bar, c_bar)).any() and (ratios < 1.0).any()  # truncation bites
    gamma = 0.9
    out = _vtrace(d, np.zeros_like(d["rewards"]), gamma, rho_bar, c_bar)
    discounts = np.full_like(d["rewards"], gamma)
    vs, adv = reference_vtrace(
        d["log_rhos"], discounts, d["rewards"], d["values"], d["bootstrap"], rho_bar, c_bar
    )
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), adv, rtol=1e-10, atol=1e-10)


def test_on_policy_vtrace_is_the_n_step_return() -> None:
    d = _random(6, 4, seed=3)
    d["log_rhos"] = np.zeros_like(d["rewards"])
    terminated = np.zeros_like(d["rewards"])
    terminated[2, 1] = 1.0
    zeros = _t(np.zeros_like(d["rewards"]))
    expected = n_step_returns(_t(d["rewards"]), _t(d["bootstrap"]), _t(terminated), zeros, zeros, 0.95)
    for rho_bar, c_bar in ((1.0, 1.0), (2.0, 1.5)):
        out = _vtrace(d, terminated, 0.95, rho_bar, c_bar)
        torch.testing.assert_close(out.vs, expected)


def test_a_terminal_step_cuts_the_trace() -> None:
    d = _random(5, 3, seed=4)
    terminated = np.zeros_like(d["rewards"])
    terminated[2] = 1.0
    out = _vtrace(d, terminated, 0.9, 3.7, 2.2)
    discounts = np.where(terminated > 0, 0.0, 0.9)
    vs, adv = reference_vtrace(d["log_rhos"], discounts, d["rewards"], d["values"], d["bootstrap"], 3.7, 2.2)
    np.testing.assert_allclose(out.vs.numpy(), vs, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.pg_advantages.numpy(), adv, rtol=1e-10, atol=1e-10)
    later = {**d, "rewards": d["rewards"].copy(), "bootstrap": d["bootstrap"] + 10.0}
    later["rewards"][3:] += 5.0  # what happens after the cut cannot reach the steps before it
    changed = _vtrace(later, terminated, 0.9, 3.7, 2.2)
    torch.testing.assert_close(changed.vs[:3], out.vs[:3])
    torch.testing.assert_close(changed.pg_advantages[:3], out.pg_advantages[:3])


def test_two_trajectories_across_an_episode_boundary_equal_each_alone() -> None:
    first, second = _random(3, 2, seed=5), _random(4, 2, seed=6)
    joined = {k: np.concatenate([first[k], second[k]]) for k in ("log_rhos", "rewards", "values")}
    joined["bootstrap"] = second["bootstrap"]
    terminated = np.zeros((7, 2))
    terminated[2] = 1.0  # the first trajectory's last step ends its episode
    together = _vtrace(joined, terminated, 0.9, 3.7, 2.2)
    first_ends = np.zeros((3, 2))
    first_ends[2] = 1.0
    alone_first = _vtrace(first, first_ends, 0.9, 3.7, 2.2)
    alone_second = _vtrace(second, np.zeros((4, 2)), 0.9, 3.7, 2.2)
    torch.testing.assert_close(together.vs, torch.cat([alone_first.vs, alone_second.vs]))
    torch.testing.assert_close(
        together.pg_advantages, torch.cat([alone_first.pg_advantages, alone_second.pg_advantages])
    )


def test_truncation_bootstraps_from_the_final_observations_value() -> None:
    d = _random(4, 2, seed=7)
    d["log_rhos"] = np.zeros_like(d["rewards"])
    truncated = np.zeros_like(d["rewards"])
    truncated[1, 0] = 1.0
    final_values = np.zeros_like(d["rewards"])
    final_values[1, 0] = 3.0
    args = [
        _t(d["rewards"]),
        _t(d["bootstrap"]),
        _t(np.zeros_like(truncated)),
        _t(truncated),
        _t(final_values),
    ]
    expected = n_step_returns(*args, 0.9)
    out = vtrace(_t(d["log_rhos"]), _t(d["rewards"]), _t(d["values"]), *args[1:], 0.9)
    torch.testing.assert_close(out.vs, expected)
    # the truncated step's target is r + gamma * V(final_obs): nothing of the next episode
    assert out.vs[1, 0].item() == pytest.approx(d["rewards"][1, 0] + 0.9 * 3.0)


def test_shapes_are_checked_by_name() -> None:
    d = _random(3, 2, seed=8)
    with pytest.raises(ValueError, match=r"values must have shape \(3, 2\) \(T, B\), got \(2, 3\)"):
        vtrace(
            *(_t(d[k]) for k in ("log_rhos", "rewards")),
            _t(d["values"].T),
            _t(d["bootstrap"]),
            *(_t(np.zeros((3, 2))) for _ in range(3)),
            0.9,
        )
    with pytest.raises(ValueError, match="last_value must have shape"):
        vtrace(
            *(_t(d[k]) for k in ("log_rhos", "rewards", "values")),
            _t(np.zeros(3)),
            *(_t(np.zeros((3, 2))) for _ in range(3)),
            0.9,
        )
