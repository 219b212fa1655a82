"""Evaluation of policies over scenario cells, with common random numbers.

Every policy sees the same evaluation streams in a world (same seed, same copy indices). A world
has a pool regime (``envs.worlds``): ``private`` (each agent alone, its own recycled pool) or
``shared`` (N agents on one pool per episode, as in training with ``env.shared_pool``). A run is
judged in its training regime; the other regime is a transfer result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch

from uavrl.config import Config
from uavrl.envs import ENV_ID
from uavrl.envs.preset import score_worlds, world_preset
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
    """One row per (world, policy) with the columns of :data:`RESULT_COLUMNS`, then the task
    metrics of the worlds' preset (``Preset.metrics``).

    Learned and reference policies alike: in a world every policy sees the same streams (seed,
    copies ``0 .. episodes - 1`` of each agent) under the same env parameters, and acts for all
    of the world's agents; an episode's return is the mean over the agents. The worlds' preset
    scores them (``Preset.score``); any other env one world at a time. ``progress(done, total,
    what)`` hears of the scoring's steps.
    """
    preset = world_preset(worlds[0]) if env_id == ENV_ID and worlds else None
    if preset is None:
        scores = score_worlds(policies, worlds, episodes, seed, progress, env_id)
    else:
        scores = preset.score(policies, worlds, episodes, seed, progress)
    metrics = preset.metrics if preset is not None else ()
    rows = [
        (
            s.policy,
            s.world.name,
            s.world.regime,
            episodes,
            *mean_ci(s.returns),
            *(s.metrics[m] for m in metrics),
        )
        for s in scores
    ]
    return pd.DataFrame(rows, columns=[*RESULT_COLUMNS, *metrics])


def _world_bounds(world: World, seed: int, episodes: int, time_limit: float) -> np.ndarray:
    """(episodes,) hindsight bounds of one world's evaluation episodes (a process pool's task)."""
    from uavrl.envs.paper.bound import hindsight_bounds

    return np.array([b.bound for b in hindsight_bounds(world, seed, np.arange(episodes), time_limit)])


def bound_results(
    worlds: Sequence[World],
    episodes: int,
    seed: int,
    time_limit: float = 20.0,
    progress: Callable[[int, int, str], None] | None = None,
    processes: int = 1,
) -> pd.DataFrame:
    """The hindsight bound (``envs.paper.bound``) of each world's evaluation episodes (the streams
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
    """The pool regime a run trained in (its preset says: `paper` agents on one pool with
    ``env.shared_pool``, `mec` UAVs on one cloud with ``cloud_group_size > 1``); ``private`` for
    any other env."""
    preset = config.env.uavrl_preset
    if preset is not None and preset.trains_shared(config.env.params, config.env.shared_pool):
        return "shared"
    return "private"


def agent_params(config: Config, base: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Env parameters of each of the run's N agents (workers): ``base`` (default the run's own
    env params) plus the worker's training cell."""
    return [config.env.worker_params(i, base) for i in range(config.runner.n_workers)]


def training_cells(config: Config) -> list[Any]:
    """The distinct scenario cells a run trained in (its ``worker_cells``, else its env params),
    cells of its preset's grid."""
    preset = config.env.cell_preset
    if config.env.worker_cells:
        return preset.resolve_cells(config.env.worker_cells)
    return [preset.cell_of(config.env.params)]


def evaluation_params(config: Config, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Env parameters to evaluate a run with, given an evaluation's ``base`` (default the run's
    own): the preset decides what of the run's own it keeps (`paper`: what its models observe,
    :data:`~uavrl.envs.paper.core.OBSERVATION_PARAMS`; `mec`: all of them)."""
    return config.env.cell_preset.evaluation_params(dict(config.env.params), base)


def _shared_agents(config: Config, regime: Regime) -> int:
    """Agents on one cloud in a world of ``regime`` (1 when private)."""
    if regime == "private":
        return 1
    return config.env.cell_preset.shared_agents(config.env.params, config.runner.n_workers)


def regime_worlds(
    config: Config, regime: Regime, cells: Sequence[Any], base: dict[str, Any] | None = None
) -> list[World]:
    """Evaluation worlds of a run in ``regime``: one per cell (its agents on one cloud when
    shared, one agent alone when private), then, for a preset whose pools are shared across
    workers, the shared training world itself."""
    base = evaluation_params(config, base)
    cell_params = [(c.name, {**base, **c.env_params()}) for c in cells]
    worlds = cell_worlds(cell_params, regime, _shared_agents(config, regime))
    if regime == "shared" and config.env.cell_preset.pools_across_workers:
        worlds.append(training_world(agent_params(config, base)))
    return worlds


def tuning_worlds(config: Config, regime: Regime, base: dict[str, Any] | None = None) -> list[World]:
    """Where the reference rules of a run are tuned: its training cells in its regime (shared
    pools across workers: the training world itself; else each training cell, alone or with its
    cloud's agents)."""
    if regime == "shared" and config.env.cell_preset.pools_across_workers:
        return [training_world(agent_params(config, evaluation_params(config, base)))]
    base = evaluation_params(config, base)
    cell_params = [(c.name, {**base, **c.env_params()}) for c in training_cells(config)]
    return cell_worlds(cell_params, regime, _shared_agents(config, regime))


def run_references(
    config: Config, regime: Regime, episodes: int, seed: int, base: dict[str, Any] | None = None
) -> list[Any]:
    """A run's reference policies in ``regime``: its preset's, tuned on its training cells
    (:func:`tuning_worlds`); for any other env the uniformly random policy over its action space."""
    preset = config.env.uavrl_preset
    if preset is None:
        from uavrl.envs.spaces import SpaceRandomPolicy
        from uavrl.runners.session import env_spaces

        return [SpaceRandomPolicy(env_spaces(config)[1], seed)]
    worlds = tuning_worlds(config, regime, base)
    return preset.reference_policies(dict(config.env.params), worlds, episodes, seed)


Stage = Callable[[str], contextlib.AbstractContextManager[Callable[[int, int, str], None] | None]]
"""``stage(label)``: a context around one step of an evaluation, yielding its progress callback."""


def _quiet_stage(label: str) -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def reference_results(
    config: Config,
    regime: Regime,
    cells_spec: str | list[str] | None,
    episodes: int,
    seed: int,
    bound: bool = False,
    processes: int = 1,
    stage: Stage = _quiet_stage,
) -> pd.DataFrame:
    """What a run's learned policies are judged beside, on its evaluation worlds
    (:func:`eval_worlds`): the references tuned on its training cells
    (:func:`run_references`), then with ``bound`` the hindsight bound of the same episodes (its
    worlds solved ``processes`` at a time). It does not depend on the trained model: it can be
    computed while the run trains. ``stage`` frames each step (tuning, scoring, solving)."""
    worlds = eval_worlds(config, regime, cells_spec)
    preset = config.env.uavrl_preset
    tuned_by = preset.reference_description if preset is not None else "the references"
    with stage(f"tuning {tuned_by} ({regime} pools, training cells)"):
        references = run_references(config, regime, episodes, seed)
    with stage(f"evaluating {len(references)} reference policies") as progress:
        tables = [evaluate_policies(references, worlds, episodes, seed, config.env.id, progress)]
    if bound:
        with stage("solving the hindsight bound (the same episodes)") as progress:
            tables.append(bound_results(worlds, episodes, seed, progress=progress, processes=processes))
    return pd.concat(tables)


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
    its id."""
    preset = config.env.uavrl_preset
    if preset is None:
        return [World(config.env.id, (dict(config.env.params),), shared=False)]
    spec = cells_spec or config.eval.cells
    cells = preset.resolve_cells(spec) if spec else training_cells(config)
    return regime_worlds(config, regime or training_regime(config), cells)
