"""The learner's schedules: learning rate and entropy coefficient over the run's env steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from uavrl.algo.loss import rollout_loss
from uavrl.algo.optim import SharedAdam
from uavrl.nn.models import ModelSpec, build_model
from uavrl.runners.a3c import run_a3c
from uavrl.runners.learner import Learner, scheduled_entropy_coef, scheduled_lr
from uavrl.runners.session import make_pool
from uavrl.runners.worker import make_collector, make_worker_env


def test_linear_schedules_by_hand(make_config) -> None:
    """total_env_steps = 600: a quarter of the way is step 150, the end 600, and past the end
    the schedule stays at its final value."""
    config = make_config(
        algo={
            "lr": 1e-3,
            "lr_schedule": "linear",
            "entropy_coef": 0.05,
            "entropy_schedule": "linear",
            "entropy_coef_final": 0.01,
        }
    )
    assert [scheduled_lr(config, s) for s in (0, 150, 600, 900)] == [1e-3, 1e-3 * 0.75, 0.0, 0.0]
    coefs = [scheduled_entropy_coef(config, s) for s in (0, 300, 600, 900)]
    assert coefs == pytest.approx([0.05, 0.03, 0.01, 0.01], abs=1e-15)
    constant = make_config(algo={"lr": 1e-3, "entropy_coef": 0.05})
    assert {scheduled_lr(constant, s) for s in (0, 600)} == {1e-3}
    assert {scheduled_entropy_coef(constant, s) for s in (0, 600)} == {0.05}


def test_the_learner_differentiates_the_loss_at_the_scheduled_entropy_coefficient(make_config) -> None:
    config = make_config(
        algo={
            "rollout_length": 5,
            "entropy_coef": 0.5,
            "entropy_schedule": "linear",
            "entropy_coef_final": 0.0,
        }
    )
    torch.manual_seed(0)
    model = build_model(ModelSpec(obs_dim=48, hidden_size=16, recurrent=False))
    env = make_worker_env(config, 0, make_pool(config, cross_process=False))
    batch, _ = make_collector(config, model, env, 7, 0).collect(model, 5)
    learner = Learner(config, model, SharedAdam(model.parameters(), lr=1e-3))

    def gradient(**loss_args) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        rollout_loss(
            model,
            batch,
            gamma=config.algo.gamma,
            gae_lambda=None,
            value_coef=config.algo.value_coef,
            **loss_args,
        ).total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.algo.max_grad_norm)
        return torch.nn.utils.parameters_to_vector(p.grad for p in model.parameters()).clone()

    for env_steps, coef in ((0, 0.5), (300, 0.25), (600, 0.0)):
        _, _, finite = learner.gradient(model, batch, env_steps)
        assert finite
        got = torch.nn.utils.parameters_to_vector(p.grad for p in model.parameters()).clone()
        torch.testing.assert_close(got, gradient(entropy_coef=coef))
    assert not torch.equal(gradient(entropy_coef=0.5), gradient(entropy_coef=0.0))


def test_a_run_logs_the_entropy_coefficient_it_trained_with(make_config, tmp_path: Path) -> None:
    config = make_config(algo={"entropy_coef": 0.04, "entropy_schedule": "linear", "entropy_coef_final": 0.0})
    run_a3c(config, tmp_path)
    log = pd.read_csv(tmp_path / "training_log.csv").dropna(subset=["entropy_coef"])
    total = config.runner.total_env_steps
    # every logged update used the coefficient of the run-wide steps it was taken at, within
    # one round of the serial workers' updates (the log books the round's steps after them)
    r = config.runner
    per_update = r.n_workers * r.envs_per_worker * config.algo.rollout_length
    expected = 0.04 * (1 - log["step"].clip(upper=total) / total)
    assert ((log["entropy_coef"] - expected).abs() <= 0.04 * per_update / total + 1e-12).all()
    assert log["entropy_coef"].iloc[0] > log["entropy_coef"].iloc[-1]
