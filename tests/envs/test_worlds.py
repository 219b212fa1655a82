"""Evaluation worlds: N agents on one pool per episode (shared) or each alone (private)."""

from __future__ import annotations

import numpy as np
import pytest

from uavrl.envs.paper.baselines import ConstantPolicy, GreedyPrivileged, LocalElseOffload, ThresholdPolicy
from uavrl.envs.paper.core import N_SLOTS, OFFLOAD
from uavrl.envs.scenarios import Cell
from uavrl.envs.vector import ConcatVecEnv, PoolMateRewards, PoolPrice, TeamStateObservations, team_state_dim
from uavrl.envs.worlds import AgentTeam, World, cell_worlds, training_world
from uavrl.errors import ConfigError

PARAMS = {"preset": "paper", **Cell(30).env_params()}


def test_one_agent_shared_world_equals_the_private_world() -> None:
    for policy in (LocalElseOffload(), ThresholdPolicy(30), ConstantPolicy(OFFLOAD, "always_offload")):
        shared = World("c", (PARAMS,), shared=True).episode_returns(policy, 3, np.arange(40))
        private = World("c", (PARAMS,), shared=False).episode_returns(policy, 3, np.arange(40))
        np.testing.assert_array_equal(shared, private)


def test_shared_world_conserves_pool_units_with_n_agents() -> None:
    """Units taken from pool j by the N agents' copies j plus what is left equal the capacity,
    at every step; agents that share a pool do worse than agents alone."""
    n_agents, episodes = 5, 8
    world = World("c", (PARAMS,) * n_agents, shared=True)
    env = world.make_env(episodes)
    assert isinstance(env, ConcatVecEnv)
    env.reset(0, world.copies(np.arange(episodes)))
    pool = env.parts[0].core.pool
    assert all(p.core.pool is pool for p in env.parts)
    rng = np.random.default_rng(0)
    for _ in range(100):
        env.step(rng.integers(0, 3, size=n_agents * episodes))
        held = sum(p.core.slot_units[:, N_SLOTS:].sum(axis=1) for p in env.parts)
        np.testing.assert_array_equal(pool.level + held, np.full(episodes, PARAMS["cloud_capacity"]))
        assert (pool.level >= 0).all()
    policy = ConstantPolicy(OFFLOAD, "always_offload")
    shared = world.episode_returns(policy, 1, np.arange(50))
    alone = World("c", (PARAMS,) * n_agents, shared=False).episode_returns(policy, 1, np.arange(50))
    assert shared.mean() < alone.mean()


def test_private_world_of_n_agents_is_the_mean_of_its_agents_alone() -> None:
    cells = [Cell(5), Cell(50)]
    params = [{"preset": "paper", **c.env_params()} for c in cells]
    policy = LocalElseOffload()
    world = World("w", tuple(params), shared=False).episode_returns(policy, 2, np.arange(10))
    alone = [World("a", (p,), shared=False) for p in params]
    # Agent i of a world draws on streams i * AGENT_STRIDE + copy.
    per_agent = [w.episode_returns(policy, 2, i * (1 << 40) + np.arange(10)) for i, w in enumerate(alone)]
    np.testing.assert_allclose(world, np.mean(per_agent, axis=0))


def test_a_privileged_rule_sees_the_shared_pool_level() -> None:
    world = training_world([PARAMS] * 3)
    returns = world.episode_returns(GreedyPrivileged(50), 0, np.arange(20), privileged=True)
    assert returns.shape == (20,) and np.isfinite(returns).all()


def test_agent_team_gives_each_agent_its_own_policy() -> None:
    team = AgentTeam([ConstantPolicy(0, "a"), ConstantPolicy(2, "b")], "team")
    actions = team(np.zeros((6, 48), dtype=np.float32), None)
    np.testing.assert_array_equal(actions, [0, 0, 0, 2, 2, 2])


def test_cell_worlds_and_bad_worlds() -> None:
    shared = cell_worlds([("c", PARAMS)], "shared", 4)
    assert shared[0].n_agents == 4 and shared[0].shared
    private = cell_worlds([("c", PARAMS)], "private", 4)
    assert private[0].n_agents == 1 and not private[0].shared
    with pytest.raises(ConfigError, match="cloud_capacity"):
        World("w", (PARAMS, {**PARAMS, "cloud_capacity": 500}), shared=True)


def test_pool_price_charges_each_cloud_placement_its_unit_steps() -> None:
    """Step by step, a priced copy's reward is its own reward minus price * reward_scale *
    units * T_q of the task it placed on the cloud (read from the core before the step); LOCAL,
    DISCARD and refused offloads (bad channel, pool short, no slot) cost nothing."""
    n_agents, episodes, price, scale = 3, 4, 0.05, 0.01
    world = World("c", ({**PARAMS, "reward_scale": scale, "cloud_capacity": 300},) * n_agents, shared=True)
    plain_env, priced_env = world.make_env(episodes), world.make_env(episodes)
    priced = PoolPrice(priced_env, price, scale)
    copies = world.copies(np.arange(episodes))
    plain_env.reset(5, copies), priced.reset(5, copies)
    cores = [part.core for part in priced_env.parts]  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    charged = refused = 0
    for _ in range(99):  # within the first episode: the flags of its last step are reset
        actions = rng.choice([0, 1, 1, 1, 2], size=plain_env.n)
        units = np.concatenate([c.task_units for c in cores])
        time = np.concatenate([c.task_time for c in cores])
        own, shaped = plain_env.step(actions).reward, priced.step(actions).reward
        # I_o: whether this step's offload attempt succeeded
        placed = (actions == OFFLOAD) & (np.concatenate([c.flag_offload for c in cores]) == 1)
        expected = own - price * scale * units * time * placed
        np.testing.assert_allclose(shaped, expected, rtol=1e-5, atol=1e-6)
        charged += int(placed.sum())
        refused += int(((actions == OFFLOAD) & ~placed).sum())
    assert charged > 50 and refused > 50  # both kinds of offload happened
    with pytest.raises(ConfigError, match=r"pool_price=-1"):
        PoolPrice(world.make_env(episodes), -1.0, scale)


@pytest.mark.parametrize("team_spirit", [1.0, 0.25])
def test_pool_mate_rewards_blend_own_reward_with_the_pool_mean(team_spirit: float) -> None:
    """Copy j of every agent gets (1 - s) * its own reward + s * the mean of the N agents'
    copy-j rewards, step by step (s = 1: the pure team reward)."""
    n_agents, episodes = 3, 4
    world = World("c", (PARAMS,) * n_agents, shared=True)
    plain = world.make_env(episodes)
    team = PoolMateRewards(world.make_env(episodes), n_agents, team_spirit)
    copies = world.copies(np.arange(episodes))
    plain.reset(5, copies), team.reset(5, copies)
    rng = np.random.default_rng(0)
    rewarded = 0.0
    for _ in range(60):
        actions = rng.integers(0, 3, size=plain.n)
        own, blended = plain.step(actions).reward, team.step(actions).reward
        own_by_agent = own.reshape(n_agents, episodes)
        for agent in range(n_agents):
            for j in range(episodes):
                pool_mean = sum(own_by_agent[a, j] for a in range(n_agents)) / n_agents
                expected = (1 - team_spirit) * own_by_agent[agent, j] + team_spirit * pool_mean
                assert blended[agent * episodes + j] == pytest.approx(expected, rel=1e-6, abs=1e-7)
        rewarded += float(own.sum())
    assert rewarded > 0
    with pytest.raises(ConfigError, match="n_agents=5"):
        PoolMateRewards(world.make_env(episodes), 5)
    with pytest.raises(ConfigError, match=r"team_spirit=1\.5"):
        PoolMateRewards(world.make_env(episodes), n_agents, 1.5)


def test_team_state_observations_append_the_whole_world_to_every_agent() -> None:
    """Copy (agent i, world j) = its own observation, then world j's state: every agent's
    observation in agent order, their channels, and pool j's level over its capacity, the
    same block for all N agents of world j."""
    n_agents, episodes = 3, 4
    world = World("c", (PARAMS,) * n_agents, shared=True)
    plain = world.make_env(episodes)
    wrapped = TeamStateObservations(world.make_env(episodes), n_agents, PARAMS["cloud_capacity"])
    d = plain.obs_dim
    assert wrapped.obs_dim == d + team_state_dim(d, n_agents) == d + n_agents * d + n_agents + 1
    copies = world.copies(np.arange(episodes))
    obs, full = plain.reset(7, copies), wrapped.reset(7, copies)
    rng = np.random.default_rng(1)
    for step in range(120):
        np.testing.assert_array_equal(full[:, :d], obs)
        hidden = plain.privileged()
        for i in range(n_agents):
            for j in range(episodes):
                row = full[i * episodes + j, d:]
                mates = [obs[a * episodes + j] for a in range(n_agents)]
                np.testing.assert_array_equal(row[: n_agents * d], np.concatenate(mates))
                channels = [hidden["channel"][a * episodes + j] for a in range(n_agents)]
                np.testing.assert_array_equal(row[n_agents * d : -1], channels)
                assert row[-1] == pytest.approx(hidden["pool_level"][j] / PARAMS["cloud_capacity"])
        actions = rng.integers(0, 3, size=plain.n)
        obs, full = plain.step(actions).obs, wrapped.step(actions)
        if step == 99:  # the episode ends: its final observation keeps the state columns
            assert full.final_obs is not None and full.final_obs.shape == full.obs.shape
        full = full.obs
    with pytest.raises(ConfigError, match="n_agents=5"):
        TeamStateObservations(world.make_env(episodes), 5, PARAMS["cloud_capacity"])
