"""`uavrl pareto`: one mec policy per cost-weight vector, scored with task metrics beside the
references, plotted as fronts; a rerun reuses finished runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from uavrl.config import load_config
from uavrl.errors import ConfigError
from uavrl.experiments.pareto import parse_weights, run_pareto, seed_interval, weighted_config

CONFIGS = Path(__file__).parent.parent.parent / "configs"
TINY = [
    "runner.n_workers=2",
    "runner.envs_per_worker=4",
    "eval.episodes=2",
    "env.worker_cells=[v30-f30-d200]",
]


def test_pareto_trains_one_policy_per_weight_vector_and_reuses_finished_runs(tmp_path: Path) -> None:
    base = load_config(CONFIGS / "mec_a3c.yaml", TINY)
    weights = parse_weights("1,0.2,4,2; 1,5,4,2")
    heard: list[str] = []
    frame = run_pareto(base, weights, seeds=2, out=tmp_path, episodes=4, env_steps=800, report=heard.append)
    assert heard[0] == f"weights 1/2 (1,0.2,4,2), seed 1/2: training into {tmp_path / 'w0' / 'seed0'}"
    assert heard[1].startswith("weights 1/2 (1,0.2,4,2), seed 1/2: evaluating the learned policy on ")
    assert "weights 2/2 (1,5,4,2): tuning and evaluating the references" in heard
    assert sum("training into" in line for line in heard) == 4
    learned, references = frame[frame["kind"] == "learned"], frame[frame["kind"] == "reference"]
    assert len(learned) == 2 * 2 and set(learned["seed"]) == {0, 1}
    assert len(references) == 2 * 8 and set(references["weights"]) == {"1,0.2,4,2", "1,5,4,2"}
    for column in ("drop_rate", "completion_rate"):
        assert frame[column].between(0.0, 1.0).all()
    assert (frame["energy_per_task"] >= 0).all() and frame["latency_p95"].notna().any()
    run = tmp_path / "w1" / "seed1"
    config = load_config(run / "config.yaml")
    assert (config.env.params["w_energy"], config.env.params["w_latency"], config.seed) == (5.0, 1.0, 1)
    assert (tmp_path / "pareto.png").stat().st_size > 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "pareto.csv"), frame, check_dtype=False)
    stamp = (run / "checkpoints" / "last.safetensors").stat().st_mtime_ns
    heard.clear()
    again = run_pareto(base, weights, seeds=2, out=tmp_path, episodes=4, env_steps=800, report=heard.append)
    assert (run / "checkpoints" / "last.safetensors").stat().st_mtime_ns == stamp
    assert sum("trained already in" in line for line in heard) == 4
    pd.testing.assert_frame_equal(again, frame)


def test_weights_and_base_config_are_checked() -> None:
    assert parse_weights("1,1,4,2") == [(1.0, 1.0, 4.0, 2.0)]
    with pytest.raises(ConfigError, match="4 numbers"):
        parse_weights("1,1,4")
    with pytest.raises(ConfigError, match=r">= 0"):
        parse_weights("1,-1,4,2")
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_weights("1,a,4,2")
    with pytest.raises(ConfigError, match="mec preset"):
        weighted_config(load_config(CONFIGS / "paper_a3c.yaml"), (1, 1, 4, 2), 0, None)


def test_seed_interval_is_the_t_interval_of_the_mean() -> None:
    values = np.array([1.0, 2.0, 4.0])
    mean, half = seed_interval(values)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(stats.t.ppf(0.975, 2) * values.std(ddof=1) / np.sqrt(3))
    assert seed_interval(np.array([5.0])) == (5.0, 0.0)


def test_references_far_off_the_learned_front_are_left_off_the_axes() -> None:
    from uavrl.experiments.pareto import split_off_axes

    learned = pd.DataFrame({"energy_per_task": [0.017, 0.016]})
    references = pd.DataFrame(
        {"policy": ["always_local", "threshold", "random"], "energy_per_task": [0.071, 0.016, 0.034]}
    )
    near, far = split_off_axes(references, learned)
    assert list(near["policy"]) == ["threshold", "random"]  # 0.034 <= 2 x 0.017
    assert list(far["policy"]) == ["always_local"]
    drawn, off = split_off_axes(references, learned.iloc[:0])
    assert len(drawn) == 3 and off.empty


def test_the_pareto_command_prints_a_rounded_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from uavrl.cli import main

    sets = [x for s in TINY for x in ("--set", s)]
    argv = ["pareto", "--config", str(CONFIGS / "mec_a3c.yaml"), *sets, "--weights", "1,1,4,2"]
    argv += ["--seeds", "1", "--episodes", "2", "--env-steps", "400", "--run-dir", str(tmp_path)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "pareto: weights 1/1 (1,1,4,2), seed 1/1: training into" in " ".join(captured.err.split())
    out = " ".join(captured.out.split())
    assert "weights (latency, energy, drop, discard)" in out and "drop rate" in out
    assert re.search(r"1,1,4,2 │ -?\d+\.\d\d │ \d\.\d\d\d │ \d\.\d\d\d\d │ \d+\.\d%", out), out
