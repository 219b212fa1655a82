"""Preset `mec`: the link budget against the spec's figures, the event-driven queues (energy,
deadlines, battery), conservation of tasks, seeding, no leak of hidden state, and the
Gymnasium structure in both action modes."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from uavrl.envs.mec.core import (
    CLOUD_SPEED_NORM_HZ,
    DISCARD,
    KAPPA,
    LOAD_LEVELS,
    LOCAL,
    MIDAMBLE_EFF,
    OBJECTIVES,
    OFFLOAD,
    OUTCOMES,
    RATE_MCS_MAX,
    SLOT_S,
    MecCore,
    MecObs,
    MecParams,
    compute_energy,
    dbm_to_w,
    ici_power,
    link_rate,
    shadowing_correlation,
    sinr,
    transmit_energy,
)
from uavrl.envs.presets import ENV_ID, make_core
from uavrl.errors import ConfigError


def _db(x: np.ndarray | float) -> float:
    return float(10 * np.log10(x))


def test_snr_at_200_m_and_500_m_matches_the_spec() -> None:
    """23 dBm, 3 + 3 dBi, 47.86 + 27.5 log10(d), -104 dBm + 9 dB: about 13 dB and 2 dB."""
    assert _db(sinr(23.0, 200.0, 0.0, False, 0.0)) == pytest.approx(12.86, abs=0.01)
    assert _db(sinr(23.0, 500.0, 0.0, False, 0.0)) == pytest.approx(1.92, abs=0.01)
    # blockage costs 10 dB, shadowing adds its own dB
    assert _db(sinr(23.0, 200.0, 2.0, True, 0.0)) == pytest.approx(12.86 - 12.0, abs=0.01)


def test_rate_is_capped_at_the_mcs_maximum_times_the_midamble_efficiency() -> None:
    assert float(link_rate(1e6)) == pytest.approx(43.3e6 * 8 / 9)
    assert pytest.approx(38.489e6, rel=1e-4) == RATE_MCS_MAX * MIDAMBLE_EFF
    snr = 10 ** (2.0 / 10)
    assert float(link_rate(snr)) == pytest.approx(10e6 * math.log2(1 + snr) * 8 / 9)


def test_doppler_ici_caps_the_sinr() -> None:
    """SINR = S / (N + S P_ici) tends to 1 / P_ici, P_ici = (pi f_d / 156.25 kHz)^2 / 3."""
    f_d = (120 / 3.6) * 5.9e9 / 3e8
    p_ici = (math.pi * f_d / 156.25e3) ** 2 / 3
    assert ici_power(120.0) == pytest.approx(p_ici)
    assert float(sinr(80.0, 10.0, 0.0, False, 120.0)) == pytest.approx(1 / p_ici, rel=1e-3)
    assert float(sinr(80.0, 10.0, 0.0, False, 120.0)) < float(sinr(80.0, 10.0, 0.0, False, 5.0))


@pytest.mark.parametrize("velocity", [10.0, 90.0])
def test_shadowing_autocorrelation_is_exp_of_minus_v_dt_over_dcorr(velocity: float) -> None:
    """Measured over 4000 copies: lag-1 correlation exp(-v dt / 13 m) and std 3 dB."""
    core = make_core("mec", 4000, velocity=velocity, p_arrival=0.0)
    core.reset(seed=3)
    before = core.shadowing.copy()
    core.step(np.full(4000, DISCARD))
    after = core.shadowing
    expected = math.exp(-(velocity / 3.6) * SLOT_S / 13.0)
    assert shadowing_correlation(velocity) == pytest.approx(expected)
    assert np.corrcoef(before, after)[0, 1] == pytest.approx(expected, abs=0.02)
    assert after.std() == pytest.approx(3.0, rel=0.05)


def _one_task(core: MecCore, bits: float, density: float, tau: float) -> None:
    """Make copy 0's pending task exactly (bits, density, tau)."""
    core.pending[:] = True
    core.task_bits[:] = bits
    core.task_density[:] = density
    core.task_tau[:] = tau


def _run_until_finished(core: MecCore, first_action: object, quiet: object) -> dict[str, np.ndarray]:
    """Act once, then let nothing else arrive; returns the task's finish record."""
    _, _, _, _, info = core.step(first_action)
    records = [info["finished"]]
    for _ in range(20):
        core.pending[:] = False
        _, _, _, _, info = core.step(quiet)
        records.append(info["finished"])
    return {k: np.concatenate([r[k] for r in records]) for k in records[0]}


def test_local_compute_energy_is_kappa_f_squared_c_and_latency_is_c_over_f() -> None:
    core = make_core("mec", 1, f_loc_ghz=2.0, p_arrival=0.0)
    core.reset(seed=0)
    _one_task(core, 1.0e6, 300.0, 1.0)  # 3e8 cycles at 2 GHz: 0.15 s
    done = _run_until_finished(core, np.array([LOCAL]), np.array([DISCARD]))
    assert done["outcome"].tolist() == [OUTCOMES.index("completed")]
    assert done["latency"][0] == pytest.approx(3e8 / 2e9)
    assert done["energy"][0] == pytest.approx(KAPPA * (2e9) ** 2 * 3e8)
    assert float(compute_energy(2e9, 3e8)) == pytest.approx(done["energy"][0])
    assert core.battery[0] == pytest.approx(50.0 - done["energy"][0])


def test_transmit_energy_is_p_tx_d_over_r_on_a_frozen_channel() -> None:
    """At v = 0 the shadowing and blockage stay put, so the rate is constant during the upload."""
    core = make_core("mec", 1, velocity=0.0, p_arrival=0.0, cloud_ghz=1000.0)
    core.reset(seed=1)
    rate = float(link_rate(sinr(23.0, 200.0, core.shadowing[0], core.blocked[0], 0.0)))
    _one_task(core, 2.0e6, 300.0, 1.0)
    done = _run_until_finished(core, np.array([OFFLOAD]), np.array([DISCARD]))
    assert done["outcome"].tolist() == [OUTCOMES.index("completed")]
    upload = 2.0e6 / rate
    assert done["energy"][0] == pytest.approx(float(dbm_to_w(23.0)) * upload)
    assert float(transmit_energy(dbm_to_w(23.0), 2.0e6, rate)) == pytest.approx(done["energy"][0])
    # upload, 10 ms backhaul, then 6e8 cycles alone on the cloud at (1 - load) x 1000 GHz
    load = core.privileged()["load"][0]
    assert done["latency"][0] == pytest.approx(upload + 0.010 + 6e8 / (1000e9 * (1 - load)))
    assert core._observe()[0, MecObs.LAST_RATE] == pytest.approx(
        rate / (RATE_MCS_MAX * MIDAMBLE_EFF), rel=1e-5
    )


def test_a_task_past_its_deadline_is_removed_from_its_queue() -> None:
    """4e9 cycles at 0.5 GHz cannot meet 0.5 s: dropped at the deadline, having spent energy
    only until then; the next task in the queue starts at that instant."""
    core = make_core("mec", 1, f_loc_ghz=0.5, p_arrival=0.0)
    core.reset(seed=2)
    _one_task(core, 4.0e6, 1000.0, 0.5)
    done = _run_until_finished(core, np.array([LOCAL]), np.array([DISCARD]))
    assert done["outcome"].tolist() == [OUTCOMES.index("dropped")]
    assert done["latency"][0] == pytest.approx(0.5)
    assert done["energy"][0] == pytest.approx(KAPPA * (0.5e9) ** 2 * (0.5e9 * 0.5))
    assert (core.stage == 0).all()


def test_the_episode_terminates_when_the_battery_is_empty() -> None:
    core = make_core("mec", 2, battery_j=0.3, f_loc_ghz=2.5, p_arrival=1.0, autoreset=False)
    core.reset(seed=4)
    for _ in range(40):
        _, _, terminated, truncated, _ = core.step(np.full(2, LOCAL))
        if terminated.all():
            break
    assert terminated.all() and not truncated.any()
    with pytest.raises(RuntimeError, match="reset"):
        core.step(np.full(2, LOCAL))
    # with auto-reset the battery starts full again in the same step
    core = make_core("mec", 1, battery_j=0.3, f_loc_ghz=2.5, p_arrival=1.0)
    core.reset(seed=4)
    for _ in range(40):
        obs, _, terminated, _, info = core.step(np.array([LOCAL]))
        if terminated[0]:
            assert info["final_obs"][0, MecObs.BATTERY] == 0.0 and obs[0, MecObs.BATTERY] == 1.0
            break
    assert terminated[0]


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    group=st.sampled_from([1, 2, 4]),
    hybrid=st.booleans(),
    choices=st.lists(st.integers(0, 2), min_size=1, max_size=60),
)
def test_every_task_ends_exactly_once(seed: int, group: int, hybrid: bool, choices: list[int]) -> None:
    """Arrivals = completed + dropped + discarded + cut by an episode end + still in flight,
    whatever the actions, with clouds shared by several copies, in both action modes."""
    n = 4
    core = make_core(
        "mec",
        n,
        cloud_group_size=group,
        horizon=25,
        max_tasks=6,
        action_mode="hybrid" if hybrid else "discrete",
    )
    core.reset(seed=seed)
    rng = np.random.default_rng(seed)
    arrivals, ended = 0, 0
    for t in range(100):
        arrivals += int(core.pending.sum())
        choice = np.array([choices[(t + i) % len(choices)] for i in range(n)])
        action = (choice, rng.random((n, 1))) if hybrid else choice
        _, reward, _, _, info = core.step(action)
        finished = info["finished"]
        ended += finished["copy"].size + int(info["cut"].sum())
        assert np.isfinite(reward).all() and (reward <= 0).all()
        assert (finished["latency"] >= 0).all() and (finished["energy"] >= 0).all()
        # each copy's costs are the sum of its finished tasks' parts
        dropped = np.bincount(finished["copy"][finished["outcome"] == 1], minlength=n)
        np.testing.assert_array_equal(info["components"][:, 2], dropped)
    assert arrivals == ended + int((core.stage != 0).sum())


def test_scalar_reward_is_the_weighted_sum_of_the_vector_reward() -> None:
    kwargs = {"w_latency": 0.5, "w_energy": 2.0, "w_drop": 3.0, "w_discard": 1.5}
    scalar = make_core("mec", 8, **kwargs)
    vector = make_core("mec", 8, reward_mode="vector", **kwargs)
    scalar.reset(seed=5), vector.reset(seed=5)
    rng = np.random.default_rng(5)
    weights = np.array([0.5, 2.0, 3.0, 1.5])
    total = 0.0
    for _ in range(150):
        actions = rng.integers(0, 3, 8)
        _, r_scalar, _, _, info = scalar.step(actions)
        _, r_vector, _, _, _ = vector.step(actions)
        assert r_vector.shape == (8, len(OBJECTIVES))
        np.testing.assert_allclose(r_scalar, r_vector @ weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r_vector, -info["components"], rtol=1e-6)
        total += float(r_scalar.sum())
    assert total < 0


def test_batched_core_equals_single_envs_with_the_same_streams() -> None:
    n, steps, seed = 3, 230, 9
    actions = np.random.default_rng(2).integers(0, 3, (steps, n))
    core = make_core("mec", n, velocity=50.0, battery_j=5.0)
    first = core.reset(seed=seed)
    batch = []
    for t in range(steps):
        obs, reward, _, _, _ = core.step(actions[t])
        batch.append((obs, reward))
    for i in range(n):
        env = gym.make(ENV_ID, preset="mec", velocity=50.0, battery_j=5.0).unwrapped
        obs, _ = env.reset(seed=seed, options={"copy_index": i})
        np.testing.assert_array_equal(obs, first[i])
        for t in range(steps):
            obs, reward, terminated, truncated, _ = env.step(int(actions[t, i]))
            if terminated or truncated:
                obs, _ = env.reset()
            np.testing.assert_array_equal(obs, batch[t][0][i])
            assert reward == batch[t][1][i]


def test_observation_carries_no_hidden_state() -> None:
    """Two copies with one seed and different shadowing, blockage and cloud load: while the
    agent only computes locally or discards, what it sees is identical."""
    a, b = make_core("mec", 1), make_core("mec", 1)
    obs_a, obs_b = a.reset(seed=8), b.reset(seed=8)
    b.shadowing[:] = a.shadowing + 9.0
    b.blocked[:] = ~a.blocked
    b.load[:] = (a.load + 1) % 3
    rng = np.random.default_rng(8)
    for _ in range(90):  # within one episode (a reset redraws the hidden state)
        np.testing.assert_array_equal(obs_a, obs_b)
        action = rng.choice([LOCAL, DISCARD], size=1)
        obs_a, *_ = a.step(action)
        obs_b, *_ = b.step(action)
    assert not np.array_equal(a.shadowing, b.shadowing)


@pytest.mark.parametrize("mode", ["discrete", "hybrid"])
def test_gymnasium_checker_passes_and_observations_stay_in_bounds(mode: str) -> None:
    env = gym.make(ENV_ID, preset="mec", action_mode=mode)
    check_env(env.unwrapped, skip_render_check=True)
    env.action_space.seed(0)
    obs, _ = env.reset(seed=0)
    for _ in range(300):
        assert env.observation_space.contains(obs)
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert info["components"].shape == (len(OBJECTIVES),)
        if terminated or truncated:
            obs, _ = env.reset()


def test_hybrid_value_sets_the_local_frequency() -> None:
    """Value 1 runs LOCAL at 2.5 GHz, value 0 at 0.5 GHz: 5x faster, 25x the energy per cycle."""
    records = []
    for value in (0.0, 1.0):
        core = make_core("mec", 1, action_mode="hybrid", p_arrival=0.0)
        core.reset(seed=6)
        _one_task(core, 1.0e6, 300.0, 1.0)
        records.append(
            _run_until_finished(
                core, (np.array([LOCAL]), np.array([[value]])), (np.array([DISCARD]), np.array([[0.0]]))
            )
        )
    slow, fast = records
    assert slow["latency"][0] == pytest.approx(3e8 / 0.5e9) and fast["latency"][0] == pytest.approx(
        3e8 / 2.5e9
    )
    assert fast["energy"][0] / slow["energy"][0] == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"distance": 5.0}, "distance"),
        ({"cloud_ghz": 0.0}, "cloud_ghz"),
        ({"f_loc_ghz": 3.0}, "f_loc_ghz"),
        ({"action_mode": "mixed"}, "action_mode"),
        ({"reward_mode": "pareto"}, "reward_mode"),
        ({"w_drop": -1.0}, "w_drop"),
        ({"wings": 4}, "wings"),
    ],
)
def test_bad_parameters_name_the_field_and_value(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        gym.make(ENV_ID, preset="mec", **kwargs)
    assert str(next(iter(kwargs.values()))) in str(err.value)


def test_bad_actions_and_shared_pools_are_refused() -> None:
    core = make_core("mec", 2, action_mode="hybrid")
    core.reset(seed=0)
    with pytest.raises(ValueError, match="tuple"):
        core.step(np.array([0, 1]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        core.step((np.array([0, 1]), np.array([[0.5], [1.5]])))
    with pytest.raises(ConfigError, match="cloud_group_size"):
        make_core("mec", 3, cloud_group_size=2)
    from uavrl.envs.cloud import SharedPool

    with pytest.raises(ConfigError, match="cloud_group_size"):
        make_core("mec", 2, pool=SharedPool(1000))
    assert MecParams().weights.tolist() == [1.0, 1.0, 4.0, 2.0]


def test_observe_hidden_appends_the_hidden_state_and_changes_nothing_else() -> None:
    plain, seen = make_core("mec", 6), make_core("mec", 6, observe_hidden=True)
    obs_plain, obs_seen = plain.reset(seed=3), seen.reset(seed=3)
    rng = np.random.default_rng(3)
    for _ in range(60):
        assert obs_seen.shape == (6, MecObs.DIM_WITH_HIDDEN)
        np.testing.assert_array_equal(obs_seen[:, : MecObs.DIM], obs_plain)
        hidden = seen.privileged()
        np.testing.assert_array_equal(obs_seen[:, MecObs.HIDDEN][:, 1], hidden["blocked"])
        np.testing.assert_allclose(obs_seen[:, MecObs.HIDDEN][:, 2], hidden["load"], rtol=1e-6)
        assert ((obs_seen >= 0) & (obs_seen <= 1)).all()
        # what a privileged critic reads of the plain core is what this core observes
        np.testing.assert_array_equal(plain.hidden_features(), obs_seen[:, MecObs.HIDDEN])
        actions = rng.integers(0, 3, 6)
        obs_plain, obs_seen = plain.step(actions)[0], seen.step(actions)[0]
    check_env(gym.make(ENV_ID, preset="mec", observe_hidden=True).unwrapped, skip_render_check=True)


def test_observe_hidden_names_a_subset_of_the_hidden_columns_in_their_order() -> None:
    full, part = (
        make_core("mec", 6, observe_hidden=True),
        make_core("mec", 6, observe_hidden=["cloud_tasks", "shadowing"]),
    )
    obs_full, obs_part = full.reset(seed=5), part.reset(seed=5)
    rng = np.random.default_rng(1)
    for _ in range(40):
        assert obs_part.shape == (6, MecObs.DIM + 2) and part.obs_dim == MecObs.DIM + 2
        # shadowing (column 0 of the hidden state) before cloud_tasks (column 3), as in MecObs.HIDDEN_NAMES
        np.testing.assert_array_equal(obs_part, obs_full[:, [*range(MecObs.DIM), MecObs.DIM, MecObs.DIM + 3]])
        actions = rng.integers(0, 3, 6)
        obs_full, obs_part = full.step(actions)[0], part.step(actions)[0]
    assert gym.make(ENV_ID, preset="mec", observe_hidden=["blockage"]).observation_space.shape == (
        MecObs.DIM + 1,
    )


def test_observe_cloud_speed_appends_the_last_realised_cloud_speed() -> None:
    """The column is 0 until a task comes back from the cloud, then the cycles of the last task
    served over its service time: never above what the cloud can give one task (its capacity at
    the lowest load), and it falls as the hidden load rises (the signal the service time alone
    mixes with the task's size). Nothing else in the observation changes; hidden columns follow."""
    plain = make_core("mec", 64)
    speed = make_core("mec", 64, observe_cloud_speed=True, observe_hidden=["cloud_load"])
    obs_plain, obs_speed = plain.reset(seed=2), speed.reset(seed=2)
    assert obs_speed.shape == (64, MecObs.DIM + 2) and (obs_speed[:, MecObs.LAST_CLOUD_SPEED] == 0).all()
    offload = np.full(64, OFFLOAD)
    fresh_speed, fresh_load = [], []
    for _ in range(300):
        obs_plain, obs_speed = plain.step(offload)[0], speed.step(offload)[0]
        np.testing.assert_array_equal(obs_speed[:, : MecObs.DIM], obs_plain)
        np.testing.assert_array_equal(obs_speed[:, -1], speed.hidden_features()[:, 2])
        hz = obs_speed[:, MecObs.LAST_CLOUD_SPEED] * CLOUD_SPEED_NORM_HZ
        assert (hz <= 30e9 * (1 - LOAD_LEVELS.min()) * (1 + 1e-5)).all()
        returned = speed.last_cloud_age <= 1
        fresh_speed.extend(hz[returned])
        fresh_load.extend(speed.privileged()["load"][returned])
    assert len(fresh_speed) > 1000 and np.corrcoef(fresh_speed, fresh_load)[0, 1] < -0.6
    assert MecParams().observe_cloud_speed is False and make_core("mec", 2).obs_dim == MecObs.DIM


@pytest.mark.parametrize("bad", [[], ["blockage", "blockage"], ["channel"], "shadowing", 1])
def test_observe_hidden_refuses_anything_but_a_bool_or_distinct_hidden_names(bad: object) -> None:
    with pytest.raises(
        ConfigError,
        match=r"observe_hidden must be true, false or a list of distinct names from \['shadowing'",
    ):
        make_core("mec", 2, observe_hidden=bad)
