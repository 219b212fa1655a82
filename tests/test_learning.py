"""Learning checks with fixed seeds (slow: run by `make test-slow` and CI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from uavrl.config import load_config
from uavrl.envs import ENV_ID
from uavrl.envs.baselines import LocalElseOffload
from uavrl.envs.episodes import episode_returns
from uavrl.envs.scenarios import resolve_cells
from uavrl.envs.vector import make_vec_env
from uavrl.experiments.train import train

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).parent.parent / "configs"
QUIET = ["log.progress=false", "log.tensorboard=false"]


def test_a3c_solves_cartpole(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "cartpole_a3c.yaml", QUIET)
    summary = train(config, tmp_path)
    assert summary["env_steps"] <= config.runner.total_env_steps + 1000
    assert summary["eval"]["mean_return"] >= 475.0


def test_a3c_gaussian_head_swings_up_pendulum(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "pendulum_a3c.yaml", QUIET)
    summary = train(config, tmp_path)
    assert summary["eval"]["episodes"] >= 50
    assert summary["eval"]["mean_return"] >= -200.0


def test_a3c_beats_local_else_offload_on_the_paper_training_cells(tmp_path: Path) -> None:
    config = load_config(CONFIGS / "paper_learning_check.yaml", QUIET)
    summary = train(config, tmp_path)
    cells = resolve_cells(config.eval.cells or "seen")
    copies = np.arange(config.eval.episodes)
    baseline = np.mean(  # the heuristic on the run's own env parameters (reward scale included)
        [
            episode_returns(
                LocalElseOffload(),
                make_vec_env(ENV_ID, copies.size, {**config.env.params, **c.env_params()}),
                config.eval.seed,
                copies,
            ).mean()
            for c in cells
        ]
    )
    assert summary["eval"]["cells"] == [c.name for c in cells]
    assert summary["eval"]["mean_return"] > baseline


MEMORY = [
    "env.id=tests.runners.helper_envs:CueMemory-v0",
    "env.params={}",
    "model.hidden_size=32",
    "model.layer_norm=false",
    "algo.lr=0.003",
    "algo.entropy_coef=0.01",
    "algo.gamma=0.99",
    "algo.rollout_length=10",
    "runner.kind=a2c",
    "runner.n_workers=1",
    "runner.envs_per_worker=16",
    "runner.total_env_steps=60000",
    "eval.episodes=200",
    *QUIET,
]


def test_gru_solves_a_memory_task_that_an_mlp_cannot(tmp_path: Path) -> None:
    gru = train(load_config(None, [*MEMORY, "model.recurrent=true"]), tmp_path / "gru")
    mlp = train(load_config(None, [*MEMORY, "model.recurrent=false"]), tmp_path / "mlp")
    assert gru["eval"]["mean_return"] >= 0.9  # +1 for recalling the cue, -1 otherwise
    assert abs(mlp["eval"]["mean_return"]) <= 0.25  # chance: the cue is gone at the last step
