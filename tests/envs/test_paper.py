"""The `paper` preset: Gymnasium API, dynamics by hand, invariants, determinism, errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import uavrl  # noqa: F401  (registers the env)
from uavrl.envs import ENV_ID, make_core
from uavrl.envs.cloud import SharedPool
from uavrl.envs.paper.core import DISCARD, LOCAL, MAX_TASK_TIME, N_SLOTS, OFFLOAD, Obs, PaperCore, PaperParams
from uavrl.errors import ConfigError


def test_gymnasium_env_checker_passes() -> None:
    env = gym.make(ENV_ID, preset="paper", velocity=50.0)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.shape == (48,)
    assert env.action_space.n == 3


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    velocity=st.floats(0.0, 120.0),
    local_capacity=st.integers(1, 200),
    cloud_capacity=st.integers(1, 3000),
    actions=st.lists(st.integers(0, 2), min_size=1, max_size=250),
)
def test_observations_stay_in_bounds(
    seed: int, velocity: float, local_capacity: int, cloud_capacity: int, actions: list[int]
) -> None:
    env = gym.make(
        ENV_ID,
        velocity=velocity,
        local_capacity=local_capacity,
        cloud_capacity=cloud_capacity,
    )
    obs, _ = env.reset(seed=seed)
    assert env.observation_space.contains(obs)
    for a in actions:
        obs, _, terminated, _, _ = env.step(a)
        assert env.observation_space.contains(obs), obs
        if terminated:
            obs, _ = env.reset()


def _set_task(core: PaperCore, units: int, time: int) -> None:
    core.task_units[:] = units
    core.task_time[:] = time


def test_local_task_completes_after_its_time_and_pays_its_units() -> None:
    core = make_core("paper", 1, reward_scale=0.05)
    core.reset(seed=3)
    _set_task(core, units=80, time=3)
    _, reward, *_ = core.step(np.array([LOCAL]))
    assert reward[0] == 0.0
    assert core.free_local[0] == 120
    assert core.slot_units[0, 0] == 80 and core.slot_time[0, 0] == 2
    _set_task(core, units=200, time=1)  # does not fit in the 120 free units: dropped
    _, reward, *_ = core.step(np.array([LOCAL]))
    assert reward[0] == 0.0
    assert core.flag_local[0] == 0.0
    _set_task(core, units=10, time=1)  # fits, and a one-step task completes in its own step
    _, reward, *_ = core.step(np.array([LOCAL]))
    assert reward[0] == pytest.approx(0.05 * (80 + 10))
    assert core.free_local[0] == 200
    assert core.flag_local[0] == 1.0


def test_offload_needs_a_good_channel_and_returns_units_to_the_pool() -> None:
    core = make_core("paper", 1, cloud_capacity=300)
    core.reset(seed=5)
    core.channel[:] = 0
    _set_task(core, units=100, time=2)
    core.step(np.array([OFFLOAD]))
    assert core.flag_offload[0] == 0.0
    assert core.pool.levels(1)[0] == 300
    core.channel[:] = 1
    _set_task(core, units=100, time=2)
    _, reward, *_ = core.step(np.array([OFFLOAD]))
    assert core.flag_offload[0] == 1.0
    assert core.pool.levels(1)[0] == 200 and reward[0] == 0.0
    core.channel[:] = 1
    _set_task(core, units=250, time=5)  # more than the pool holds: dropped
    _, reward, *_ = core.step(np.array([OFFLOAD]))
    assert core.flag_offload[0] == 0.0
    assert reward[0] == pytest.approx(0.05 * 100)
    assert core.pool.levels(1)[0] == 300


def test_admission_timing_pays_on_admission_and_charges_back_what_is_in_flight_at_the_end() -> None:
    core = make_core(
        "paper", 1, reward_scale=0.05, episode_length=3, reward_timing="admission", autoreset=False
    )
    core.reset(seed=3)
    core.channel[:] = 1
    _set_task(core, units=80, time=2)
    _, reward, *_ = core.step(np.array([LOCAL]))
    assert reward[0] == pytest.approx(0.05 * 80)
    core.channel[:] = 1
    _set_task(core, units=30, time=5)
    _, reward, *_ = core.step(np.array([OFFLOAD]))  # the local task completes: paid already
    assert reward[0] == pytest.approx(0.05 * 30)
    _set_task(core, units=200, time=1)
    _, reward, terminated, *_ = core.step(np.array([DISCARD]))
    assert terminated[0]
    assert reward[0] == pytest.approx(-0.05 * 30)  # the offloaded task was still in flight


@pytest.mark.parametrize("pool", ["private", "shared"])
def test_both_reward_timings_give_every_episode_the_same_return(pool: str) -> None:
    """Admission timing is potential-based shaping whose potential is zero at both ends."""
    returns = {}
    for timing in ("completion", "admission"):
        shared = SharedPool(400) if pool == "shared" else None
        core = PaperCore(6, PaperParams(cloud_capacity=400, episode_length=40, reward_timing=timing), shared)
        core.reset(seed=11)
        actions = np.random.default_rng(0).integers(0, 3, size=(130, 6))
        running, finished = np.zeros(6), []
        for a in actions:
            _, reward, terminated, *_ = core.step(a)
            running += reward
            finished.append(running[terminated].copy())
            running[terminated] = 0.0
        returns[timing] = np.concatenate(finished)
    assert returns["completion"].size == 18
    np.testing.assert_allclose(returns["admission"], returns["completion"], rtol=1e-5)


def test_discard_changes_nothing_but_time() -> None:
    core = make_core("paper", 1)
    obs0 = core.reset(seed=9)
    obs1, reward, *_ = core.step(np.array([DISCARD]))
    assert reward[0] == 0.0
    assert obs1[0, Obs.FREE_LOCAL] == obs0[0, Obs.FREE_LOCAL] == 1.0
    assert obs1[0, Obs.STEPS_LEFT] == pytest.approx(0.99)


def test_episode_terminates_after_its_length_and_returns_held_units() -> None:
    core = make_core("paper", 4, episode_length=100, autoreset=False)
    core.reset(seed=1)
    for t in range(100):
        _, _, terminated, truncated, _ = core.step(np.full(4, OFFLOAD if t % 2 else LOCAL))
        assert not truncated.any()
        assert terminated.all() == (t == 99)
    assert (core.pool.levels(4) == 1000).all()
    assert (core.held_cloud_units() == 0).all()
    with pytest.raises(RuntimeError, match="reset"):
        core.step(np.zeros(4, dtype=np.int64))


def test_autoreset_returns_final_and_fresh_observations() -> None:
    core = make_core("paper", 3, episode_length=5)
    core.reset(seed=2)
    for _ in range(4):
        _, _, terminated, _, info = core.step(np.zeros(3, dtype=np.int64))
        assert not terminated.any() and "final_obs" not in info
    obs, _, terminated, _, info = core.step(np.zeros(3, dtype=np.int64))
    assert terminated.all()
    np.testing.assert_allclose(info["final_obs"][:, Obs.STEPS_LEFT], 0.0)
    np.testing.assert_allclose(obs[:, Obs.STEPS_LEFT], 1.0)
    np.testing.assert_allclose(obs[:, Obs.FREE_LOCAL], 1.0)


def _check_invariants(core: PaperCore, pool_capacity: int, shared: bool) -> None:
    cap = core.params.local_capacity
    assert (core.free_local >= 0).all() and (core.free_local <= cap).all()
    np.testing.assert_array_equal(core.free_local + core.held_local_units(), cap)
    levels = core.pool.levels(core.n)
    assert (levels >= 0).all() and (levels <= pool_capacity).all()
    if shared:
        assert levels[0] + core.held_cloud_units().sum() == pool_capacity
    else:
        np.testing.assert_array_equal(levels + core.held_cloud_units(), pool_capacity)
    assert (core.slot_time >= 0).all()
    np.testing.assert_array_equal(core.slot_units == 0, core.slot_time == 0)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    shared=st.booleans(),
    pool_capacity=st.integers(1, 1500),
    local_capacity=st.integers(1, 200),
    n=st.integers(1, 12),
)
def test_no_unit_is_leaked_or_created(
    seed: int, shared: bool, pool_capacity: int, local_capacity: int, n: int
) -> None:
    pool = SharedPool(pool_capacity) if shared else None
    core = make_core(
        "paper",
        n,
        pool=pool,
        cloud_capacity=pool_capacity,
        local_capacity=local_capacity,
        episode_length=40,
    )
    core.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(130):  # crosses three auto-resets
        core.step(rng.choice([LOCAL, OFFLOAD, OFFLOAD, DISCARD], size=n))
        _check_invariants(core, pool_capacity, shared)
    core.reset()
    assert core.pool.levels(n).min() == pool_capacity


def _trajectory(core: PaperCore, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    obs_seq, rewards = [], []
    for a in actions:
        obs, reward, *_ = core.step(a)
        obs_seq.append(obs)
        rewards.append(reward)
    return np.stack(obs_seq), np.stack(rewards)


def test_same_seed_same_trajectory_and_different_seeds_differ() -> None:
    actions = np.random.default_rng(0).integers(0, 3, (250, 4))
    runs = []
    for seed in (11, 11, 12):
        core = make_core("paper", 4, velocity=20.0)
        first = core.reset(seed=seed)
        runs.append((first, *_trajectory(core, actions)))
    for a, b in zip(runs[0], runs[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(runs[0][1], runs[2][1])
    assert not np.array_equal(runs[0][2], runs[2][2])


def test_batched_core_equals_single_envs_with_the_same_streams() -> None:
    n, steps, seed = 5, 230, 42
    actions = np.random.default_rng(1).integers(0, 3, (steps, n))
    core = make_core("paper", n, velocity=70.0, autoreset=True)
    batch_first = core.reset(seed=seed)
    batch_obs, batch_rewards = _trajectory(core, actions)
    for i in range(n):
        env = gym.make(ENV_ID, velocity=70.0).unwrapped
        obs, _ = env.reset(seed=seed, options={"copy_index": i})
        np.testing.assert_array_equal(obs, batch_first[i])
        for t in range(steps):
            obs, reward, terminated, _, _ = env.step(int(actions[t, i]))
            if terminated:  # the batch auto-reset this copy inside the same step
                obs, _ = env.reset()
            np.testing.assert_array_equal(obs, batch_obs[t, i])
            assert reward == batch_rewards[t, i]


def test_observation_carries_no_hidden_state() -> None:
    """Channel and pool level change while nothing the agent sees does (DISCARD only)."""
    a = make_core("paper", 1)
    b = make_core("paper", 1)
    obs_a = a.reset(seed=7)
    b.reset(seed=7)
    b.channel[:] = 1 - a.channel
    b.pool.take(np.array([700]), np.array([True]))
    np.testing.assert_array_equal(obs_a, b._observe())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cloud_capacity": -5}, "cloud_capacity"),
        ({"local_capacity": 0}, "local_capacity"),
        ({"local_capacity": 500}, "local_capacity"),
        ({"velocity": 150.0}, "velocity"),
        ({"velocity": -1.0}, "velocity"),
        ({"reward_scale": 0.0}, "reward_scale"),
        ({"episode_length": 0}, "episode_length"),
        ({"reward_timing": "later"}, "reward_timing"),
        ({"observe_feasibility": "yes"}, "observe_feasibility"),
        ({"speed": 3.0}, "speed"),
    ],
)
def test_bad_parameters_name_the_field_and_value(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field) as err:
        gym.make(ENV_ID, preset="paper", **kwargs)
    value = next(iter(kwargs.values()))
    assert str(value) in str(err.value)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"preset must be one of \['paper', 'mec'\], got 'warp'"):
        make_core("warp", 1)


def test_mismatched_pool_capacity_is_refused() -> None:
    with pytest.raises(ConfigError, match="cloud_capacity"):
        make_core("paper", 2, pool=SharedPool(500), cloud_capacity=1000)


@pytest.mark.parametrize("actions", [np.array([0, 3]), np.array([0.5, 1.0]), np.array([1])])
def test_bad_actions_are_refused(actions: np.ndarray) -> None:
    core = make_core("paper", 2)
    core.reset(seed=0)
    with pytest.raises(ValueError, match="actions"):
        core.step(actions)


def test_params_defaults_match_the_spec() -> None:
    p = PaperParams()
    assert (p.local_capacity, p.cloud_capacity, p.reward_scale, p.episode_length) == (
        200,
        1000,
        0.05,
        100,
    )
    assert N_SLOTS == 20 and Obs.DIM == 48


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"reward_scale": float("inf")}, "reward_scale must be a finite number, got inf"),
        ({"reward_scale": 0.0}, "reward_scale must be > 0"),
        ({"cloud_capacity": 2.5}, "cloud_capacity must be an integer, got 2.5"),
        ({"local_capacity": 50.5}, "local_capacity must be an integer"),
        ({"velocity": True}, "velocity must be a finite number, got True"),
        ({"velocity": "fast"}, "velocity must be a finite number, got 'fast'"),
        ({"velocity": float("nan")}, "velocity must be a finite number, got nan"),
        ({"velocity": -5}, r"velocity must be in \[0.0, 120.0\] km/h, got -5"),
        ({"episode_length": 0}, "episode_length must be >= 1"),
    ],
)
def test_gym_make_refuses_bad_parameter_values_by_name(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        gym.make(ENV_ID, **params)


@pytest.mark.parametrize("action", [1.5, 3, -1, True, "1", np.array([1])])
def test_an_action_outside_the_action_space_is_refused_with_its_value(action) -> None:
    env = gym.make(ENV_ID, disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must be an integer in"):
        env.step(action)
    env.step(np.int64(OFFLOAD))  # integers of any kind are fine
    env.step(np.array(DISCARD))


def test_concatenated_cores_follow_the_trajectories_of_the_cores_stepped_one_by_one() -> None:
    """Serial workers' cells (each with private pools) step as one core: same observations,
    rewards and flags, copy for copy, including auto-resets; shared pools are never merged."""
    from uavrl.envs.vector import ConcatVecEnv, CoreVecEnv, concat_envs

    cells = [
        PaperParams(velocity=5.0, local_capacity=100),
        PaperParams(velocity=90.0),
        PaperParams(velocity=30.0),
    ]

    def parts() -> list[CoreVecEnv]:
        return [CoreVecEnv(PaperCore(4, p)) for p in cells]

    merged, separate = concat_envs(parts()), ConcatVecEnv(parts())
    assert isinstance(merged, CoreVecEnv) and merged.n == 12
    copies = np.arange(100, 112)
    np.testing.assert_array_equal(merged.reset(7, copies), separate.reset(7, copies))
    rng = np.random.default_rng(1)
    for _ in range(250):  # two and a half episodes
        actions = rng.integers(0, 3, size=12)
        a, b = merged.step(actions), separate.step(actions)
        np.testing.assert_array_equal(a.obs, b.obs)
        np.testing.assert_array_equal(a.reward, b.reward)
        np.testing.assert_array_equal(a.terminated, b.terminated)
        assert (a.final_obs is None) == (b.final_obs is None)
        if a.final_obs is not None:
            np.testing.assert_array_equal(a.final_obs, b.final_obs)
    pool = SharedPool(1000)
    shared = concat_envs([CoreVecEnv(PaperCore(4, p, pool)) for p in cells])
    assert isinstance(shared, ConcatVecEnv)
    unlike = [CoreVecEnv(PaperCore(4, PaperParams(cloud_capacity=c))) for c in (500, 1000)]
    assert isinstance(concat_envs(unlike), ConcatVecEnv)


def test_the_feasibility_column_says_whether_local_admits_the_pending_task() -> None:
    """With ``observe_feasibility`` the 49th column is 1 exactly when LOCAL is then admitted
    (flag_local after the step), and the first 48 columns and rewards are those of the plain
    core on the same streams and actions: the flag adds a column and changes nothing else."""
    n, rng = 64, np.random.default_rng(0)
    plain = make_core("paper", n, local_capacity=120)
    flagged = make_core("paper", n, local_capacity=120, observe_feasibility=True)
    assert (plain.obs_dim, flagged.obs_dim) == (48, 49) == (Obs.DIM, Obs.LOCAL_FEASIBLE + 1)
    obs_plain, obs = plain.reset(seed=3), flagged.reset(seed=3)
    seen = set()
    for _ in range(250):  # past two episode ends
        np.testing.assert_array_equal(obs[:, : Obs.DIM], obs_plain)
        feasible = obs[:, Obs.LOCAL_FEASIBLE]
        assert set(np.unique(feasible)) <= {0.0, 1.0}
        actions = rng.choice([LOCAL, LOCAL, OFFLOAD, DISCARD], n)
        obs_plain, reward_plain, *_ = plain.step(actions)
        obs, reward, terminated, *_ = flagged.step(actions)
        np.testing.assert_array_equal(reward, reward_plain)
        tried = (actions == LOCAL) & ~terminated  # a new episode's observation starts with flags 0
        np.testing.assert_array_equal(obs[tried, Obs.FLAG_LOCAL], feasible[tried])
        seen.update(feasible[tried].tolist())
    assert seen == {0.0, 1.0}  # both outcomes were exercised
    env = gym.make(ENV_ID, preset="paper", observe_feasibility=True)
    assert env.observation_space.shape == (49,)
    check_env(env.unwrapped, skip_render_check=True)


def test_the_payable_column_says_whether_a_task_placed_now_pays_within_the_episode() -> None:
    """With ``observe_payable`` the task each copy places (LOCAL on an empty core, at a step
    drawn per copy; every other task DISCARDed) pays in its episode exactly when the column
    said 1 at that step; the other columns (feasibility first) and rewards are unchanged."""
    n, length, rng = 256, 60, np.random.default_rng(1)
    flagged = make_core("paper", n, episode_length=length, observe_feasibility=True)
    both = make_core("paper", n, episode_length=length, observe_feasibility=True, observe_payable=True)
    assert both.obs_dim == 50 and Obs.payable(True) == 49 and Obs.payable(False) == Obs.DIM
    assert make_core("paper", 1, observe_payable=True).obs_dim == Obs.DIM + 1
    place_at = rng.integers(length - MAX_TASK_TIME, length, n)
    obs_flagged, obs = flagged.reset(seed=5), both.reset(seed=5)
    payable, paid = np.zeros(n), np.zeros(n)
    for t in range(length):
        np.testing.assert_array_equal(obs[:, : Obs.DIM_WITH_FEASIBILITY], obs_flagged)
        placing = place_at == t
        payable[placing] = obs[placing, Obs.payable(True)]
        actions = np.where(placing, LOCAL, DISCARD)
        obs_flagged, reward_flagged, *_ = flagged.step(actions)
        obs, reward, *_ = both.step(actions)
        np.testing.assert_array_equal(reward, reward_flagged)
        paid += reward
    np.testing.assert_array_equal(paid > 0, payable == 1)
    assert 0 < payable.mean() < 1  # both outcomes were exercised


def test_copies_placed_in_cells_follow_the_trajectories_of_cores_of_those_cells() -> None:
    """``place_in_cells`` gives each copy its cell's channel and local capacity: copy for copy,
    the same observations and rewards as a core built in that cell, on the same streams."""
    cells = [PaperParams(velocity=5.0, local_capacity=100), PaperParams(velocity=90.0), PaperParams()]
    placed = PaperCore(3)
    placed.place_in_cells(np.array([c.velocity for c in cells]), np.array([c.local_capacity for c in cells]))
    alone = [PaperCore(1, c) for c in cells]
    obs = placed.reset(seed=4, copy_indices=np.arange(3))
    for i, core in enumerate(alone):
        np.testing.assert_array_equal(obs[i], core.reset(seed=4, copy_indices=np.array([i]))[0])
    rng = np.random.default_rng(2)
    for _ in range(250):
        actions = rng.integers(0, 3, size=3)
        step = placed.step(actions)
        for i, core in enumerate(alone):
            obs_i, reward_i, *_ = core.step(actions[i : i + 1])
            np.testing.assert_array_equal(step[0][i], obs_i[0])
            assert step[1][i] == reward_i[0]
    with pytest.raises(RuntimeError, match="before the first reset"):
        placed.place_in_cells(np.full(3, 5.0), np.full(3, 200))
    with pytest.raises(ConfigError, match="velocity"):
        PaperCore(2).place_in_cells(np.array([5.0, 500.0]), np.full(2, 200))


def test_hidden_features_are_the_channel_pool_level_and_cloud_slots() -> None:
    """``hidden_features`` (for a privileged critic) holds exactly the channel, the pool's free
    units over its capacity and the copy's cloud slots, scaled into [0, 1]."""
    core = make_core("paper", 32, cloud_capacity=600)
    core.reset(seed=1)
    rng = np.random.default_rng(1)
    for _ in range(40):
        core.step(rng.choice([LOCAL, OFFLOAD, DISCARD], 32))
        hidden = core.hidden_features()
        assert hidden.shape == (32, core.hidden_dim) == (32, 42) and hidden.dtype == np.float32
        assert ((hidden >= 0) & (hidden <= 1)).all()
        np.testing.assert_array_equal(hidden[:, 0], core.channel)
        np.testing.assert_allclose(hidden[:, 1], core.pool.levels(32) / 600, rtol=1e-6)
        np.testing.assert_allclose(hidden[:, 2:22] * 200, core.slot_units[:, 20:], atol=1e-4)
        np.testing.assert_allclose(hidden[:, 22:] * 50, core.slot_time[:, 20:], atol=1e-4)
    assert hidden[:, 2:].any()  # some task was in the cloud
