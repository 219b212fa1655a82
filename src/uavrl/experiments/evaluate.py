"""Evaluation of policies over scenario cells, with common random numbers.

Every policy sees the same evaluation streams in a world (same seed, same copy indices). A world
has a pool regime (``envs.worlds``): ``private`` (each agent alone, its own recycled pool) or
``shared`` (N agents on one pool per episode, as in training with ``env.shared_pool``). A run is
judged in its training regime; the other regime is a transfer result.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from uavrl.config import Config
from uavrl.envs import ENV_ID
from uavrl.envs.mec import MecParams
from uavrl.envs.paper import OBSERVATION_PARAMS, PaperParams
from uavrl.envs.scenarios import Cell, MecCell, resolve_cells, resolve_preset_cells
from uavrl.envs.worlds import AgentTeam, Regime, World, cell_worlds, training_world
from uavrl.experiments.normalise import HINDSIGHT_BOUND
from uavrl.nn.models import ActorCritic

RESULT_COLUMNS = ["policy", "cell", "regime", "episodes", "mean", "std", "ci_low", "ci_high"]


class NamedPolicy(Protocol):
    """What an evaluation scores: a named ``(obs, privileged) -> actions`` policy (a reference
    rule of either preset, a learned model, a team of them)."""

    name: str

    @property
    def needs_privileged(self) -> bool: ...

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any: ...


def mean_ci(returns: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the Student-t confidence interval of the mean."""
    n = returns.size
    mean = float(returns.mean())
    if n < 2:
        return mean, 0.0, mean, mean
    from scipy import stats  # slow to import: loaded when the first evaluation ends, not at start-up

    std = float(returns.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return mean, std, mean - half, mean + half


def evaluate_policies(
    policies: Sequence[NamedPolicy],
    worlds: Sequence[World],
    episodes: int,
    seed: int,
    env_id: str = ENV_ID,
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """One row per (policy, world) with the columns of :data:`RESULT_COLUMNS`.

    Learned and reference policies alike: in a world every policy sees the same streams (seed,
    copies ``0 .. episodes - 1`` of each agent) under the same env parameters, and acts for all
    of the world's agents; an episode's return is the mean over the agents. ``progress(done,
    total, world)`` is called before each world.
    """
    rows = []
    copies = np.arange(episodes)
    for i, world in enumerate(worlds):
        if progress is not None:
            progress(i, len(worlds), world.name)
        for policy in policies:
            returns = world.episode_returns(policy, seed, copies, policy.needs_privileged, env_id)
            mean, std, low, high = mean_ci(returns)
            rows.append((policy.name, world.name, world.regime, episodes, mean, std, low, high))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def _world_bounds(world: World, seed: int, episodes: int, time_limit: float) -> np.ndarray:
    """(episodes,) hindsight bounds of one world's evaluation episodes (a process pool's task)."""
    from uavrl.envs.bound import hindsight_bounds

    return np.array([b.bound for b in hindsight_bounds(world, seed, np.arange(episodes), time_limit)])


def bound_results(
    worlds: Sequence[World],
    episodes: int,
    seed: int,
    time_limit: float = 20.0,
    progress: Callable[[int, int, str], None] | None = None,
    processes: int = 1,
) -> pd.DataFrame:
    """The hindsight bound (``envs.bound``) of each world's evaluation episodes (the streams
    :func:`evaluate_policies` uses), one row per world with :data:`RESULT_COLUMNS` under the
    policy name ``hindsight_bound``. ``processes > 1`` solves that many worlds at once (spawned
    processes, one solver thread each)."""
    with contextlib.ExitStack() as stack:
        # one loop over the worlds either way: solved here one by one, or read from the pool
        outcomes: Iterator[np.ndarray] = (_world_bounds(w, seed, episodes, time_limit) for w in worlds)
        if processes > 1 and len(worlds) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            pool = stack.enter_context(
                ProcessPoolExecutor(min(processes, len(worlds)), mp_context=mp.get_context("spawn"))
            )
            futures = [pool.submit(_world_bounds, w, seed, episodes, time_limit) for w in worlds]
            outcomes = (f.result() for f in futures)
        solved = []
        for i, (world, bounds) in enumerate(zip(worlds, outcomes, strict=True)):
            if progress is not None:
                progress(i, len(worlds), world.name)
            solved.append(bounds)
    rows = [
        (HINDSIGHT_BOUND, world.name, world.regime, episodes, *mean_ci(bounds))
        for world, bounds in zip(worlds, solved, strict=True)
    ]
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


class TorchPolicy:
    """A trained model behind the reference-policy call signature (hidden state carried).

    ``greedy`` takes the distribution's mode, otherwise actions are sampled, with torch's global
    generator reseeded from ``seed`` at every reset, so a stochastic evaluation is reproducible. Used with
    :func:`~uavrl.envs.episodes.episode_returns`, which resets it before each batch of episodes.
    """

    needs_privileged = False

    def __init__(self, model: ActorCritic, name: str, greedy: bool, seed: int = 0) -> None:
        self.model = model
        self.name = name
        self.greedy = greedy
        self.seed = seed
        self.h = model.initial_state(1)

    def reset(self, n: int) -> None:
        self.h = self.model.initial_state(n)
        torch.manual_seed(self.seed)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        params, self.h = self.model.act(torch.from_numpy(obs), self.h)
        dist = self.model.policy.distribution(params)
        return self.model.policy.to_env(dist.mode() if self.greedy else dist.sample())


def training_regime(config: Config) -> Regime:
    """The pool regime a run trained in: `paper` agents on one pool (``env.shared_pool``), `mec`
    UAVs on one cloud (``cloud_group_size > 1``), else each on its own."""
    if config.env.preset == "mec":
        return "shared" if MecParams.from_env_params(config.env.params).cloud_group_size > 1 else "private"
    return "shared" if config.env.shared_pool else "private"


def mec_training_params(config: Config, cloud_group_size: int | None = None) -> list[MecParams]:
    """A `mec` run's parameters in each of its training cells (what its rules are tuned on),
    with ``cloud_group_size`` UAVs per cloud if given, else as it trained."""
    trained = MecParams.from_env_params(config.env.params)
    group = trained.cloud_group_size if cloud_group_size is None else cloud_group_size
    return [
        dataclasses.replace(trained, **c.env_params(), cloud_group_size=group) for c in training_cells(config)
    ]


def mec_cloud_group(config: Config, regime: Regime) -> int:
    """UAVs per cloud of a `mec` run's evaluation in ``regime``: as it trained in its own regime;
    one in the private one; else (a transfer to shared clouds) one UAV per worker, as a `paper`
    run's shared pool holds one agent per worker."""
    trained = MecParams.from_env_params(config.env.params).cloud_group_size
    if regime == training_regime(config):
        return trained
    return 1 if regime == "private" else config.runner.n_workers


def agent_params(config: Config, base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Env parameters of each of the run's N agents (workers): ``base`` (default the run's own
    env params) plus the worker's training cell."""
    return [config.env.worker_params(i, base) for i in range(config.runner.n_workers)]


def training_cells(config: Config) -> list[Any]:
    """The distinct scenario cells a run trained in (its ``worker_cells``, else its env params):
    :class:`Cell` for `paper`, :class:`MecCell` for `mec`."""
    if config.env.worker_cells:
        return resolve_preset_cells(str(config.env.preset), config.env.worker_cells)
    if config.env.preset == "mec":
        return [MecCell.of(MecParams.from_env_params(config.env.params))]
    params, defaults = config.env.params, PaperParams()
    return [
        Cell(
            float(params.get("velocity", defaults.velocity)),
            int(params.get("local_capacity", defaults.local_capacity)),
            int(params.get("cloud_capacity", defaults.cloud_capacity)),
        )
    ]


def evaluation_params(config: Config, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Env parameters to evaluate a run with: ``base`` (default the run's own), keeping the run's
    observation parameters (:data:`OBSERVATION_PARAMS`), which its models were built for."""
    if base is None:
        return dict(config.env.params)
    observed = {k: v for k, v in config.env.params.items() if k in OBSERVATION_PARAMS}
    return {**base, **observed}


def regime_worlds(
    config: Config, regime: Regime, cells: Sequence[Cell], base: dict[str, Any] | None = None
) -> list[World]:
    """Evaluation worlds of a run in ``regime``: one per cell (N agents of that cell on one pool
    when shared, one agent alone when private), then the shared training world itself."""
    base = evaluation_params(config, base)
    worlds = cell_worlds(
        [(c.name, {**base, **c.env_params()}) for c in cells], regime, config.runner.n_workers
    )
    if regime == "shared":
        worlds.append(training_world(agent_params(config, base)))
    return worlds


def tuning_worlds(config: Config, regime: Regime, base: dict[str, Any] | None = None) -> list[World]:
    """Where the reference thresholds of a run are tuned: its training cells in its regime
    (shared: the training world itself; private: each training cell alone)."""
    base = evaluation_params(config, base)
    if regime == "shared":
        return [training_world(agent_params(config, base))]
    return cell_worlds([(c.name, {**base, **c.env_params()}) for c in training_cells(config)], regime, 1)


def run_policies(
    config: Config, models: Sequence[ActorCritic], regime: Regime, greedy: bool, seed: int, suffix: str = ""
) -> list[TorchPolicy | AgentTeam]:
    """A run's learned policies for ``regime``.

    One shared model (A3C, A2C) acts as every agent. Individual models are scored one by one
    when private, and as a team (model ``i`` as agent ``i``) when shared.
    """
    labels = model_labels(config, len(models))
    policies: list[TorchPolicy | AgentTeam] = [
        TorchPolicy(model.eval(), label + suffix, greedy, seed)
        for model, label in zip(models, labels, strict=True)
    ]
    if regime == "shared" and len(policies) > 1:
        return [AgentTeam(policies, "individual" + suffix)]
    return policies


def model_labels(config: Config, n_models: int) -> list[str]:
    """Names of a run's learned models: its runner kind (``a3c``, ``a2c``, ``a3c_data``,
    ``impala``) or ``individual_w<i>``."""
    if config.runner.kind != "a3c":
        return [config.runner.kind]
    if config.runner.share:
        return ["a3c"]
    return [f"individual_w{i}" for i in range(n_models)]


def eval_worlds(
    config: Config, regime: Regime | None = None, cells_spec: str | list[str] | None = None
) -> list[World]:
    """Worlds for a run's evaluation: the named cells (default ``eval.cells``, else the training
    cells) in ``regime`` (default the training regime). A non-uavrl env has one world, named by
    its id; a `mec` run one per training cell, each UAV on its own cloud."""
    if config.env.preset == "mec":
        params = dict(config.env.params)
        return [World(c.name, ({**params, **c.env_params()},), shared=False) for c in training_cells(config)]
    if not config.env.is_paper:
        return [World(config.env.id, (dict(config.env.params),), shared=False)]
    spec = cells_spec or config.eval.cells
    cells = resolve_cells(spec) if spec else training_cells(config)
    return regime_worlds(config, regime or training_regime(config), cells)


MEC_METRICS = [
    "completion_rate",
    "drop_rate",
    "discard_rate",
    "latency_mean",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "energy_per_task",
    "cloud_utilisation",
    "fairness",
]


def evaluate_mec_policies(
    policies: Sequence[NamedPolicy],
    cells: Sequence[Any],
    base: MecParams,
    episodes: int,
    seed: int,
    n_agents: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """`mec` evaluation: one row per (policy, cell) with :data:`RESULT_COLUMNS` and the task
    metrics of :data:`MEC_METRICS`.

    ``n_agents`` UAVs share each episode's cloud (regime ``shared``; 1 = ``private``): agent
    ``i`` of episode ``j`` runs on stream ``i * AGENT_STRIDE + j`` in every cell; an episode's
    return is the mean over its agents. Every policy sees the same streams (common random
    numbers). Each policy steps all cells in one batch (:func:`~uavrl.envs.mec_eval.run_cells`);
    ``progress(done, total, what)`` is called before each policy.
    """
    from uavrl.envs.mec_eval import run_cells, task_metrics

    regime = "shared" if n_agents > 1 else "private"
    params = dataclasses.replace(base, cloud_group_size=n_agents)
    cell_params = [cell.env_params() for cell in cells]
    results = {}
    # every cell in one batch per policy (each cell on its own streams, as alone)
    for i, policy in enumerate(policies):
        if progress is not None:
            progress(i, len(policies), f"{policy.name} in {len(cells)} cells")
        runs = run_cells(policy, params, cell_params, seed, np.arange(episodes), policy.needs_privileged)
        results[policy.name] = runs
    rows = []
    for k, cell in enumerate(cells):
        for policy in policies:
            returns, run = results[policy.name][k]
            metrics = task_metrics(run)
            rows.append(
                (
                    policy.name,
                    cell.name,
                    regime,
                    episodes,
                    *mean_ci(returns),
                    *(metrics[m] for m in MEC_METRICS),
                )
            )
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *MEC_METRICS])
