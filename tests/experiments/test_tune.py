"""uavrl tune: Optuna trials on training cells only, resumable from SQLite, pruning reports."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from uavrl.errors import ConfigError
from uavrl.experiments.tune import load_tune, run_tuning, trial_config

optuna = pytest.importorskip("optuna")
CONFIGS = Path(__file__).parents[2] / "configs"
TINY = [
    "base.runner.n_workers=2",
    "base.runner.envs_per_worker=2",
    "base.runner.total_env_steps=400",
    "base.env.worker_cells=[v5-l200-c1000, v50-l200-c1000]",
    "base.env.params.episode_length=20",
    "base.log.tensorboard=false",
    "eval_every_env_steps=200",
    "episodes=2",
    "space={algo.lr: {low: 1.0e-4, high: 1.0e-2, log: true}, algo.rollout_length: {choices: [5, 10]}}",
]


def test_tuning_resumes_from_its_storage_and_writes_the_best_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tune = load_tune(CONFIGS / "tune_paper.yaml", TINY)
    study = run_tuning(tune, tmp_path, trials=2)
    assert len(study.trials) == 2
    progress = capsys.readouterr().err  # a line per seed trained and per trial ended
    assert "tune: trial 0, seed 0: training" in progress and "tune: trial 1, seed 0: training" in progress
    assert re.search(r"tune: trial 1: (complete -?\d+\.\d{3}|pruned) \(2 of 2\)", progress), progress
    # A second call continues the same SQLite study.
    study = run_tuning(tune, tmp_path, trials=1)
    assert len(study.trials) == 3
    assert (tmp_path / "optuna.db").exists()
    for trial in study.trials:
        assert trial.state.name in ("COMPLETE", "PRUNED")
        # Periodic evaluations were reported: 2 per seed, seed s at steps s * 3 + k.
        assert set(trial.intermediate_values) <= {1, 2, 4, 5} and 1 in trial.intermediate_values
        assert {"algo.lr", "algo.rollout_length"} <= set(trial.params)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(t.user_attrs.keys() == {"seed0", "seed1"} for t in complete)
    best = max(complete, key=lambda t: t.value)
    text = (tmp_path / "best.yaml").read_text()
    assert text.startswith("# Tuned by `uavrl tune`: Optuna study 'tune_paper'")
    config = yaml.safe_load(text)
    assert config["algo"]["lr"] == best.params["algo.lr"]
    assert config["algo"]["rollout_length"] == best.params["algo.rollout_length"]


def test_trial_runs_are_serial_and_seeded() -> None:
    tune = load_tune(CONFIGS / "tune_paper.yaml", TINY)
    config = trial_config(tune, {"algo.lr": 0.002, "algo.rollout_length": 10}, seed=1, number=4)
    assert config.seed == 1 and config.runner.serial and config.algo.lr == 0.002
    assert config.name == "tune_paper/trial4/seed1"


def test_bad_tuning_configs_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="seeds"):
        load_tune(CONFIGS / "tune_paper.yaml", ["seeds=1"])
    with pytest.raises(ConfigError, match="low < high"):
        load_tune(CONFIGS / "tune_paper.yaml", ["space={algo.lr: {low: 1.0, high: 0.1}}"])
    with pytest.raises(ConfigError, match="may not tune 'seed'"):
        load_tune(CONFIGS / "tune_paper.yaml", ["space={seed: {choices: [1, 2]}}"])


@pytest.mark.parametrize("preset", ["paper", "mec"])
def test_the_individual_arm_is_tuned_with_the_budget_of_a3c(preset: str) -> None:
    """tune_<preset>_individual.yaml: tune_<preset>.yaml's space, seeds, evaluation and pruning
    on the same base run, with runner.share=false (the individual arm) and nothing else changed."""
    configs = Path(__file__).parents[2] / "configs"
    a3c, individual = (
        load_tune(configs / f"tune_{preset}.yaml"),
        load_tune(configs / f"tune_{preset}_individual.yaml"),
    )
    settings = [t.model_dump(exclude={"name", "base"}) for t in (a3c, individual)]
    assert settings[0] == settings[1]
    assert individual.base["runner"].pop("share") is False and a3c.base["runner"].pop("share") is True
    assert individual.base == a3c.base


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("tune_*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_tuning_config_loads_and_each_trial_config_validates(path: Path) -> None:
    """Every key of a shipped search space names a setting of its base config, and a trial at
    each space's first choice (or low end) is a valid run config."""
    tune = load_tune(path)
    values = {k: d.choices[0] if d.choices is not None else d.low for k, d in tune.space.items()}
    config = trial_config(tune, values, seed=0, number=0)
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        assert getattr(getattr(config, section) if section else config, name) == value
