"""Evaluation of policies over scenario cells, with common random numbers.

Every policy sees the same evaluation streams in a cell (same seed, same copy indices), each
episode on its own private, recycled cloud pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from uavrl.config import Config
from uavrl.envs import ENV_ID
from uavrl.envs.baselines import FLOOR_POLICIES, Policy
from uavrl.envs.episodes import episode_returns
from uavrl.envs.scenarios import Cell, resolve_cells
from uavrl.envs.vector import make_vec_env
from uavrl.nn.models import ActorCritic

POOL_MODE = "private per episode, recycled"
RESULT_COLUMNS = ["policy", "cell", "episodes", "mean", "std", "ci_low", "ci_high"]


def mean_ci(returns: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample std (ddof=1) and the Student-t confidence interval of the mean."""
    n = returns.size
    mean = float(returns.mean())
    if n < 2:
        return mean, 0.0, mean, mean
    std = float(returns.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / np.sqrt(n)
    return mean, std, mean - half, mean + half


EvalTarget = tuple[str, dict[str, Any]]
"""(name, env parameters) of one evaluation setting, e.g. a scenario cell."""


def cell_targets(base_params: dict[str, Any], cells: Sequence[Cell]) -> list[EvalTarget]:
    """One target per cell: ``base_params`` (preset, reward scale...) plus the cell's parameters."""
    return [(cell.name, {**base_params, **cell.env_params()}) for cell in cells]


def evaluate_policies(
    policies: Sequence[Policy | TorchPolicy],
    targets: Sequence[EvalTarget],
    episodes: int,
    seed: int,
    env_id: str = ENV_ID,
) -> pd.DataFrame:
    """One row per (policy, target) with the columns of :data:`RESULT_COLUMNS`.

    Learned and reference policies alike: in a target every policy sees the same streams
    (seed, copies ``0 .. episodes - 1``) under the same env parameters.
    """
    rows = []
    copies = np.arange(episodes)
    for name, params in targets:
        for policy in policies:
            env = make_vec_env(env_id, episodes, params)
            returns = episode_returns(policy, env, seed, copies, privileged=policy.needs_privileged)
            env.close()
            mean, std, low, high = mean_ci(returns)
            rows.append((policy.name, name, episodes, mean, std, low, high))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def percent_of_oracle(results: pd.DataFrame) -> pd.Series:
    """``100 * (J - J_floor) / (J_oracle - J_floor)`` per policy, from means over cells.

    ``J_floor`` is the best of random / always-LOCAL / always-OFFLOAD.
    """
    by_policy = results.groupby("policy", sort=False)["mean"].mean()
    return oracle_score(by_policy, by_policy)


def oracle_score(value: Any, references: pd.Series) -> Any:
    """``100 * (value - J_floor) / (J_oracle - J_floor)`` from reference means (index: policy
    names); ``value`` is a number, array or Series of mean returns on the same cells."""
    floor = references[[p for p in FLOOR_POLICIES if p in references.index]].max()
    return 100.0 * (value - floor) / (references["oracle"] - floor)


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
        params, _, self.h = self.model.step(torch.from_numpy(obs), self.h)
        dist = self.model.policy.distribution(params)
        return self.model.policy.to_env(dist.mode() if self.greedy else dist.sample())


def eval_targets(config: Config, cells_spec: str | list[str] | None = None) -> list[EvalTarget]:
    """(name, env params) for every evaluation cell: the named cells, else the training cells.

    A non-uavrl env has one target, named by its id.
    """
    if not config.env.is_uavrl:
        return [(config.env.id, dict(config.env.params))]
    spec = cells_spec or config.eval.cells or config.env.worker_cells
    base = dict(config.env.params)
    if not spec:
        return [("default", base)]
    return cell_targets(base, resolve_cells(spec))
