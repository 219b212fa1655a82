"""`mec` reference policies, per-cell metrics, and the calibration the spec asks for."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from uavrl.envs.mec.baselines import (
    CostEstimatingPolicy,
    MecConstantPolicy,
    MecRandomPolicy,
    PendingTask,
    tune_margin,
)
from uavrl.envs.mec.core import (
    C_RANGE,
    D_RANGE_BITS,
    DISCARD,
    LOAD_LEVELS,
    LOCAL,
    OFFLOAD,
    SLOT_S,
    MecCore,
    MecObs,
    MecParams,
)
from uavrl.envs.mec.evaluation import MecEpisodes, jain_index, run_episodes, task_metrics

EPISODES = 96


def _mean_return(policy: object, params: MecParams, episodes: int = EPISODES, seed: int = 0) -> float:
    core = MecCore(episodes * params.cloud_group_size, params)
    privileged = bool(getattr(policy, "needs_privileged", False))
    return float(run_episodes(policy, core, seed, np.arange(core.n), privileged).returns.mean())


def test_pending_task_is_read_back_from_the_observation() -> None:
    core = MecCore(16, MecParams())
    obs = core.reset(seed=1)
    task = PendingTask.from_obs(obs)
    np.testing.assert_array_equal(task.present, core.pending)
    rows = core.pending
    np.testing.assert_allclose(task.bits[rows], core.task_bits[rows], rtol=1e-6)
    np.testing.assert_allclose(task.cycles[rows], (core.task_bits * core.task_density)[rows], rtol=1e-5)
    np.testing.assert_allclose(task.tau[rows], core.task_tau[rows], rtol=1e-6)


def test_cost_estimating_rule_prices_each_option() -> None:
    """A small task on an idle UAV with a fresh fast link: offloading is cheapest; a task no
    option can finish in time is discarded; no task, no decision (DISCARD is a no-op)."""
    params = MecParams()
    obs = np.zeros((3, MecObs.DIM), dtype=np.float32)
    obs[:, MecObs.TASK_PENDING] = [1.0, 1.0, 0.0]
    obs[:, MecObs.TASK_DEADLINE] = 1.0  # tau = 1 s
    obs[0, [MecObs.TASK_BITS, MecObs.TASK_DENSITY]] = 0.0  # 1 Mbit, 300 cycles/bit
    obs[1, [MecObs.TASK_BITS, MecObs.TASK_DENSITY]] = 1.0  # 4 Mbit, 1000 cycles/bit
    obs[1, MecObs.TX_BACKLOG] = 1.0  # 16 Mbit queued
    obs[:, MecObs.LAST_RATE] = [1.0, 0.05, 1.0]
    np.testing.assert_array_equal(CostEstimatingPolicy(params)(obs, None), [OFFLOAD, DISCARD, DISCARD])
    assert (D_RANGE_BITS, C_RANGE) == ((1e6, 4e6), (300.0, 1000.0))
    with pytest.raises(ValueError, match="privileged"):
        CostEstimatingPolicy(params, oracle=True)(obs, None)


def test_the_rule_reads_a_fresh_cloud_speed_where_the_observation_carries_it() -> None:
    """With ``observe_cloud_speed`` the cloud's service time is priced at the last realised cloud
    speed while it is fresh: a slow cloud turns a big task from OFFLOAD to LOCAL, a fast one
    keeps it offloaded; a stale speed (or none observed) prices the nominal cloud, as without
    the column."""
    params = MecParams(observe_cloud_speed=True)
    obs = np.zeros((4, MecObs.DIM + 1), dtype=np.float32)
    obs[:, MecObs.TASK_PENDING] = 1.0
    obs[:, MecObs.TASK_DEADLINE] = 1.0  # tau = 1 s
    obs[:, MecObs.TASK_BITS] = 0.2  # 1.6 Mbit
    obs[:, MecObs.TASK_DENSITY] = 0.5  # 650 cycles/bit: 1.04 Gcycles, 0.69 s on the UAV
    obs[:, MecObs.LAST_RATE] = 1.0  # a fresh fast link
    obs[:, MecObs.LAST_CLOUD_SPEED] = [0.005, 0.5, 0.005, 0.0]  # 0.3 GHz, 30 GHz, 0.3 GHz stale, none
    obs[2, MecObs.LAST_CLOUD_AGE] = 1.0
    choices = CostEstimatingPolicy(params)(obs, None)
    np.testing.assert_array_equal(choices, [LOCAL, OFFLOAD, OFFLOAD, OFFLOAD])
    plain = obs[:, : MecObs.DIM]
    np.testing.assert_array_equal(CostEstimatingPolicy(MecParams())(plain, None), [OFFLOAD] * 4)


def test_hybrid_references_act_at_the_default_frequency_and_full_power() -> None:
    params = MecParams(action_mode="hybrid", f_loc_ghz=1.5)
    obs = MecCore(4, params).reset(seed=0)
    choice, values = MecConstantPolicy(params, LOCAL, "always_local")(obs, None)
    np.testing.assert_array_equal(choice, np.full(4, LOCAL))
    np.testing.assert_allclose(values, 0.5)  # 0.5 + 0.5 * 2 GHz = 1.5 GHz
    choice, values = MecConstantPolicy(params, OFFLOAD, "always_offload")(obs, None)
    np.testing.assert_allclose(values, 1.0)  # 23 dBm
    choice, values = MecRandomPolicy(params, seed=3)(obs, None)
    assert choice.shape == (4,) and values.shape == (4, 1) and ((values >= 0) & (values <= 1)).all()


def test_task_metrics_against_hand_values() -> None:
    """Two UAVs on one cloud: 3 completed (latencies 0.1, 0.2, 0.6), 1 dropped, 1 discarded."""
    episodes = MecEpisodes(
        returns=np.zeros(2),
        copy=np.array([0, 0, 1, 1, 0]),
        outcome=np.array([0, 0, 0, 1, 2]),
        latency=np.array([0.1, 0.2, 0.6, 1.0, 0.0]),
        energy=np.array([0.1, 0.1, 0.2, 0.1, 0.0]),
        arrivals=np.array([3, 2]),
        cut=np.zeros(2, np.int64),
        slots=np.array([10, 10]),
        cloud_busy_s=np.array([0.25]),
        group=np.array([0, 0]),
    )
    m = task_metrics(episodes)
    assert m["completion_rate"] == pytest.approx(3 / 5)
    assert m["drop_rate"] == pytest.approx(1 / 5) and m["discard_rate"] == pytest.approx(1 / 5)
    assert m["latency_mean"] == pytest.approx(0.3)
    assert m["latency_p50"] == pytest.approx(0.2)
    assert m["latency_p95"] == pytest.approx(0.2 + 0.9 * 0.4)  # linear between the 2nd and 3rd
    assert m["latency_p99"] == pytest.approx(0.2 + 0.98 * 0.4)
    assert m["energy_per_task"] == pytest.approx(0.5 / 5)
    assert m["cloud_utilisation"] == pytest.approx(0.25 / (10 * SLOT_S))
    # completion rates 2/3 and 1/2: (7/6)^2 / (2 (4/9 + 1/4))
    assert m["fairness"] == pytest.approx((7 / 6) ** 2 / (2 * (4 / 9 + 1 / 4)))
    assert jain_index(np.array([1.0, 1.0])) == 1.0 and jain_index(np.array([1.0, 0.0])) == 0.5


def test_run_episodes_counts_every_task_of_each_first_episode() -> None:
    params = MecParams(horizon=40, max_tasks=8)
    core = MecCore(12, params)
    episodes = run_episodes(MecRandomPolicy(params, seed=1), core, 5, np.arange(12))
    per_copy = np.bincount(episodes.copy, minlength=12) + episodes.cut
    np.testing.assert_array_equal(per_copy, episodes.arrivals)
    assert (episodes.slots == 40).all()
    m = task_metrics(episodes)
    assert m["completion_rate"] + m["drop_rate"] + m["discard_rate"] == pytest.approx(1.0)
    assert m["latency_p50"] <= m["latency_p95"] <= m["latency_p99"]


def test_margin_tuning_picks_the_best_margin_on_common_streams() -> None:
    params = MecParams(cloud_ghz=15.0, horizon=50)

    def evaluate(policy: CostEstimatingPolicy, copies: int) -> np.ndarray:
        return run_episodes(policy, MecCore(copies, params), 0, np.arange(copies) % 24).returns

    grid = (0.5, 1.0, 1.4)
    best, scores = tune_margin(lambda m: CostEstimatingPolicy(params, m), evaluate, 24, grid)
    assert set(scores) == set(grid) and best == max(scores, key=lambda m: scores[m])
    # every margin saw the same 24 streams: margin 1.0 alone gives the same mean
    alone = run_episodes(CostEstimatingPolicy(params, 1.0), MecCore(24, params), 0, np.arange(24)).returns
    assert scores[1.0] == pytest.approx(alone.mean())


def test_calibration_no_single_action_dominates_load_crosses_one_and_hidden_state_pays() -> None:
    """The spec's calibration with default parameters: always-LOCAL, always-OFFLOAD and the best
    heuristic are clearly apart; the offered load over the cloud crosses 1 on the resource grid
    (and the cloud is busy nearly all the time where it does); the oracle beats the same rule
    without the hidden state."""
    params = MecParams()
    local = _mean_return(MecConstantPolicy(params, LOCAL, "always_local"), params)
    offload = _mean_return(MecConstantPolicy(params, OFFLOAD, "always_offload"), params)
    heuristic = max(_mean_return(CostEstimatingPolicy(params, m), params) for m in (0.7, 1.0))
    oracle = max(_mean_return(CostEstimatingPolicy(params, m, oracle=True), params) for m in (0.7, 1.0))
    assert offload - local > 50.0
    assert heuristic - offload > 0.05 * abs(offload)
    assert oracle - heuristic > 0.2 * abs(heuristic)

    mean_cycles = np.mean(D_RANGE_BITS) * np.mean(C_RANGE)
    offered = {
        (ghz, uavs): uavs * params.p_arrival / SLOT_S * mean_cycles / (ghz * 1e9 * (1 - LOAD_LEVELS.mean()))
        for ghz in (15.0, 30.0, 60.0)
        for uavs in (1, 4)
    }
    assert min(offered.values()) < 1.0 < max(offered.values())
    busy = MecParams(cloud_group_size=4)
    overloaded = run_episodes(
        MecConstantPolicy(busy, OFFLOAD, "always_offload"), MecCore(4 * 32, busy), 0, np.arange(128)
    )
    assert offered[(30.0, 4)] > 1.0 and task_metrics(overloaded)["cloud_utilisation"] > 0.9


def test_mec_cells_parse_and_name_the_grid() -> None:
    from uavrl.envs.scenarios import MEC_CELL_SETS, MecCell, resolve_mec_cells

    cell = MecCell.parse("v90-f15-d500")
    assert cell == MecCell(90.0, 15.0, 500.0) and cell.name == "v90-f15-d500"
    assert cell.env_params() == {"velocity": 90.0, "cloud_ghz": 15.0, "distance": 500.0}
    assert [c.name for c in MEC_CELL_SETS["seen"]] == [f"v{v}-f30-d200" for v in (5, 10, 20, 30, 50)]
    assert len(resolve_mec_cells("seen,held_out")) == 5 + 3 + 10
    with pytest.raises(Exception, match="v30-f30-d200"):
        resolve_mec_cells("v30-l200-c1000")


def test_shared_evaluation_averages_the_uavs_of_each_cloud() -> None:
    """With N UAVs per cloud, an episode's return is the mean of its N UAVs, which run as
    rows i * episodes + j of one core; one UAV alone equals the private regime."""
    from uavrl.envs.scenarios import MecCell
    from uavrl.envs.worlds import cell_worlds
    from uavrl.experiments.evaluate import evaluate_policies

    params = MecParams()
    policy = MecConstantPolicy(params, OFFLOAD, "always_offload")
    cell = MecCell(30.0)
    cell_params = [(cell.name, {"preset": "mec", **cell.env_params()})]
    shared = evaluate_policies([policy], cell_worlds(cell_params, "shared", 3), 6, 0)
    alone = evaluate_policies([policy], cell_worlds(cell_params, "private", 3), 6, 0)
    core = MecCore(18, MecParams(cloud_group_size=3))
    streams = np.concatenate([i * (1 << 40) + np.arange(6) for i in range(3)])
    direct = run_episodes(policy, core, 0, streams).returns.reshape(3, 6).mean(axis=0)
    assert shared["mean"].iloc[0] == pytest.approx(direct.mean())
    assert shared["regime"].iloc[0] == "shared" and alone["regime"].iloc[0] == "private"
    assert shared["mean"].iloc[0] < alone["mean"].iloc[0]  # three UAVs on one cloud do worse
    assert shared["cloud_utilisation"].iloc[0] > alone["cloud_utilisation"].iloc[0]


def test_references_tune_their_margins_on_the_tuning_cells_only() -> None:
    from uavrl.envs.mec.baselines import MARGIN_GRID, mec_reference_policies, tuning_returns

    params = MecParams(horizon=30)
    cells = [MecParams(horizon=30, cloud_ghz=15.0)]
    policies = mec_reference_policies(params, cells, 4, 0)
    names = [p.name for p in policies]
    assert names == [
        "random",
        "always_local",
        "always_offload",
        "greedy_estimated",
        "threshold",
        "two_margin",
        "privileged_rule",
        "clairvoyant",
    ]
    threshold, two, privileged = policies[4:7]
    assert isinstance(threshold, CostEstimatingPolicy) and threshold.margin in MARGIN_GRID
    best, _ = tune_margin(
        lambda m: CostEstimatingPolicy(params, m),
        lambda p, n: tuning_returns(p, cells, n, 4, 0),
        4,
    )
    assert threshold.margin == best
    # two margins, searched over the same grid: at least as good as one on the tuning streams
    assert isinstance(two, CostEstimatingPolicy) and two.offload_margin in MARGIN_GRID
    assert isinstance(privileged, CostEstimatingPolicy) and privileged.needs_privileged
    mean = lambda p: tuning_returns(p, cells, 4, 4, 0).mean()  # noqa: E731
    assert mean(two) >= mean(threshold) - 1e-9
    assert set(two.tuned_params) == {"margin", "offload_margin"}


def test_the_offload_margin_decides_offload_feasibility_alone() -> None:
    """One margin per option: a generous OFFLOAD margin lets tasks offload that LOCAL's tight
    margin would discard; LOCAL's margin is untouched."""
    params = MecParams(horizon=40, cloud_ghz=15.0)
    tight = CostEstimatingPolicy(params, 0.2)
    split = CostEstimatingPolicy(params, 0.2, offload_margin=1.4)
    core = MecCore(16, params)
    obs = core.reset(seed=3)
    for _ in range(10):
        obs, *_ = core.step(tight(obs, None))
    a, b = tight(obs, None), split(obs, None)
    assert ((a == b) | (b == 1)).all()  # the split rule only moves tasks to OFFLOAD
    both = run_episodes(tight, MecCore(16, params), 0, np.arange(16)).returns
    more = run_episodes(split, MecCore(16, params), 0, np.arange(16)).returns
    assert not np.allclose(both, more)


def test_the_lookahead_is_exact_the_env_taking_an_option_pays_what_it_priced() -> None:
    """One UAV per cloud, no continuation: the look-ahead's cost of an option is what the env
    charges when it takes that option now and discards every later task for the horizon."""
    from uavrl.envs.mec.core import DISCARD, LOCAL, OFFLOAD

    params = MecParams(horizon=40)
    core = MecCore(12, params)
    core.reset(seed=4)
    for _ in range(6):
        core.step(np.full(12, OFFLOAD))
    priced = core.lookahead_costs()
    horizon = 11  # the longest deadline (1 s) in 0.1 s slots, plus the slot of the decision
    for option in (LOCAL, OFFLOAD, DISCARD):
        replay = copy.deepcopy(core)
        paid = np.zeros(12)
        running = np.ones(12, dtype=bool)
        choice = np.full(12, option)
        for _ in range(horizon):
            _, _, terminated, truncated, info = replay.step(choice)
            paid += (info["components"] @ params.weights) * running
            running &= ~(terminated | truncated)
            choice = np.full(12, DISCARD)
        np.testing.assert_allclose(priced[:, option], paid)
    # the core itself is untouched by its look-ahead
    again = core.lookahead_costs()
    np.testing.assert_array_equal(again, priced)


def test_the_clairvoyant_takes_the_cheapest_option_and_beats_the_rule_it_rolls_out() -> None:
    from uavrl.envs.mec.baselines import ClairvoyantPolicy
    from uavrl.envs.mec.evaluation import run_clouds

    params = MecParams(horizon=40)
    rule = CostEstimatingPolicy(params, 1.0, oracle=True, name="privileged_rule")
    clairvoyant = ClairvoyantPolicy(params, rule)
    idle = np.zeros((2, MecObs.DIM), dtype=np.float32)
    pending = idle.copy()
    pending[:, MecObs.TASK_PENDING] = 1.0
    costs = np.array([[3.0, 1.0, 2.0], [0.5, 1.0, 2.0]])
    assert clairvoyant(pending, {"option_costs": costs}).tolist() == [1, 0]  # the cheapest option
    assert clairvoyant(idle, {"option_costs": costs}).tolist() == [2, 2]  # no task: nothing to place
    with pytest.raises(ValueError, match="look-ahead"):
        clairvoyant(pending, None)
    base = run_clouds(rule, params, 2, np.arange(16), privileged=True)[0]
    better = run_clouds(clairvoyant, params, 2, np.arange(16), privileged=True)[0]
    assert better.mean() > base.mean()


@pytest.mark.parametrize("group", [1, 2])
def test_cells_stepped_in_one_batch_score_as_each_cell_alone(group: int) -> None:
    """run_cells puts the copies of several cells (velocity, distance, cloud capacity) in one
    core: each cell's returns and task metrics equal those of a core of that cell alone, for
    the rules and for the clairvoyant look-ahead (deep copies of a mixed core), alone on a
    cloud or two UAVs to one."""
    import dataclasses

    from uavrl.envs.mec.baselines import ClairvoyantPolicy, CostEstimatingPolicy
    from uavrl.envs.mec.evaluation import run_cells, run_clouds, task_metrics

    params = MecParams(reward_mode="scalar", cloud_group_size=group)
    cells = [
        {"velocity": 5.0, "distance": 200.0, "cloud_ghz": 30.0},
        {"velocity": 90.0, "distance": 600.0, "cloud_ghz": 15.0},
    ]
    oracle = CostEstimatingPolicy(params, oracle=True)
    policies = [CostEstimatingPolicy(params, margin=1.2), oracle]
    policies += [ClairvoyantPolicy(params, oracle)] if group == 1 else []  # ~10 s per UAV per cloud
    for policy in policies:
        privileged = policy.needs_privileged
        batched = run_cells(policy, params, cells, 7, np.arange(3), privileged)
        for cell, (returns, run) in zip(cells, batched, strict=True):
            alone = run_clouds(policy, dataclasses.replace(params, **cell), 7, np.arange(3), privileged)
            np.testing.assert_array_equal(returns, alone[0])
            assert task_metrics(run) == pytest.approx(task_metrics(alone[1]), nan_ok=True)
            np.testing.assert_array_equal(run.copy, alone[1].copy)
            np.testing.assert_array_equal(run.group, alone[1].group)
    assert not np.array_equal(batched[0][0], batched[1][0])  # the cells differ


def test_a_core_refuses_cells_it_cannot_hold() -> None:
    from uavrl.errors import ConfigError

    core = MecCore(4, MecParams(cloud_group_size=2))
    with pytest.raises(ConfigError, match="share one cloud_ghz"):
        core.place_in_cells(np.full(4, 30.0), np.full(4, 200.0), np.array([30.0, 15.0, 15.0, 30.0]))
    with pytest.raises(ConfigError, match="velocity"):
        core.place_in_cells(np.array([30.0, 30.0, 500.0, 30.0]), np.full(4, 200.0), np.full(4, 30.0))
    with pytest.raises(ValueError, match=r"distance must have shape \(4,\)"):
        core.place_in_cells(np.full(4, 30.0), np.full(3, 200.0), np.full(4, 30.0))
