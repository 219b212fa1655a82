"""The command line, end to end."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from uavrl.cli import HelpFormatter, build_parser, main, results_table
from uavrl.config import load_config
from uavrl.errors import ConfigError
from uavrl.runners.metrics import _ProgressBar


def test_baselines_writes_the_promised_csv(tmp_path: Path) -> None:
    out = tmp_path / "b.csv"
    argv = [
        "baselines",
        "--episodes",
        "5",
        "--tune-episodes",
        "3",
        "--cells",
        "v30-l200-c1000,v90-l150-c500",
    ]
    assert main([*argv, "--seed", "3", "--csv", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["policy", "cell", "regime", "episodes", "mean", "std", "ci_low", "ci_high"]
    assert len(frame) == 2 * 10
    assert set(frame["policy"]) == {
        "random",
        "always_local",
        "always_offload",
        "local_else_offload",
        "threshold",
        "greedy_estimated",
        "two_threshold",
        "two_threshold_steps_left",
        "greedy_privileged",
        "privileged_rule",
    }
    assert (frame["episodes"] == 5).all()


def test_mec_baselines_write_returns_and_task_metrics(tmp_path: Path, capsys) -> None:
    """`baselines --preset mec`: the mec references, margins tuned on the seen cells, with the
    task metrics per cell, in private and in shared clouds."""
    from uavrl.envs.mec.evaluation import MEC_METRICS
    from uavrl.experiments.evaluate import RESULT_COLUMNS

    out = tmp_path / "mec.csv"
    argv = ["baselines", "--preset", "mec", "--episodes", "4", "--tune-episodes", "2"]
    assert main([*argv, "--cells", "v30-f30-d200,v90-f15-d200", "--csv", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == [*RESULT_COLUMNS, *MEC_METRICS]
    assert set(frame["policy"]) == {
        "random",
        "always_local",
        "always_offload",
        "greedy_estimated",
        "threshold",
        "two_margin",
        "privileged_rule",
        "clairvoyant",
    }
    assert len(frame) == 2 * 8 and (frame["regime"] == "private").all()
    rates = frame[["completion_rate", "drop_rate", "discard_rate"]].sum(axis=1)
    assert ((rates - 1.0).abs() < 1e-9).all()
    assert "tuned on seen cells" in capsys.readouterr().err
    shared = tmp_path / "shared.csv"
    assert (
        main([*argv, "--cells", "v30-f30-d200", "--pool", "shared", "--agents", "2", "--csv", str(shared)])
        == 0
    )
    assert (pd.read_csv(shared)["regime"] == "shared").all()
    assert main([*argv, "--cells", "v30-l200-c1000"]) == 2
    assert "v30-f30-d200" in capsys.readouterr().err


def test_a_mec_run_is_evaluated_beside_the_mec_references_with_task_metrics(tmp_path: Path) -> None:
    run = tmp_path / "mec_run"
    config = Path(__file__).parent.parent / "configs" / "mec_a3c.yaml"
    argv = ["train", "--config", str(config), "--run-dir", str(run)]
    sets = [
        "runner.total_env_steps=1600",
        "runner.n_workers=2",
        "runner.envs_per_worker=4",
        "eval.episodes=2",
        "env.worker_cells=[v5-f30-d200,v30-f30-d200]",
    ]
    assert main([*argv, *(x for s in sets for x in ("--set", s))]) == 0
    out = tmp_path / "eval.csv"
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(run),
                "--episodes",
                "3",
                "--cells",
                "v30-f30-d200,v90-f15-d200",
                "--csv",
                str(out),
            ]
        )
        == 0
    )
    frame = pd.read_csv(out)
    assert {"a3c_greedy", "a3c_stochastic", "threshold", "privileged_rule"} <= set(frame["policy"])
    assert set(frame["cell"]) == {"v30-f30-d200", "v90-f15-d200"}
    assert frame["latency_p99"].notna().any() and (frame["episodes"] == 3).all()
    assert main(["evaluate", "--run", str(run), "--pool", "shared"]) == 2
    assert main(["evaluate", "--run", str(run), "--bound"]) == 2  # no bound for mec


def test_bad_cell_and_bad_count_exit_with_a_clear_error(capsys) -> None:
    assert main(["baselines", "--cells", "moon"]) == 2
    captured = capsys.readouterr()
    assert "moon" in captured.err and captured.out == ""  # errors go to stderr
    assert main(["baselines", "--episodes", "0"]) == 2
    assert "--episodes must be > 0, got 0" in capsys.readouterr().err


def test_bench_env_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    assert main(["bench", "env", "--seconds", "0.05", "--csv", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["impl", "batch", "steps_per_s"]
    assert frame["batch"].tolist() == [1, 1, 16, 64, 256]
    assert (frame["steps_per_s"] > 0).all()


def test_bench_train_measures_library_and_reference_workers(tmp_path: Path) -> None:
    from uavrl.bench import train as bench_train

    frame = bench_train.run(workers=[1], envs_per_worker=[4], seconds=0.5, rounds=1)
    devices = ["learner_device", "actor_device", "inference"]
    assert list(frame.columns) == ["runner", *devices, "n_workers", "envs_per_worker", "steps_per_s"]
    assert frame["runner"].tolist() == ["reference", "a3c", "a3c_data", "impala", "a2c"]
    assert frame["learner_device"].tolist() == frame["actor_device"].tolist() == ["cpu"] * 5
    assert (frame["steps_per_s"] > 0).all()
    served = bench_train.run([1], [4], 0.5, 1, ["impala"], inference=["actors", "server"])
    assert served["inference"].tolist() == ["actors", "server"] and (served["steps_per_s"] > 0).all()


def test_bench_train_rows_per_learner_device_actor_device_inference_kind_and_k() -> None:
    from uavrl.bench.train import grid

    rows = grid(["a3c", "impala"], [4, 15], [128, 256], ["cpu", "cuda"])
    assert rows[:4] == [("a3c", "cpu", "cpu", "actors", n, k) for k in (128, 256) for n in (4, 15)]
    assert {r[:4] for r in rows[4:]} == {("impala", d, "cpu", "actors") for d in ("cpu", "cuda")}
    assert len(rows) == 4 + 2 * 4
    acting = grid(["a3c", "impala"], [15], [256], ["cuda"], ["cpu", "cuda"], ["actors", "server"])
    assert acting == [
        ("a3c", "cpu", "cpu", "actors", 15, 256),  # a3c has neither device nor server: one row
        ("impala", "cuda", "cpu", "actors", 15, 256),
        ("impala", "cuda", "cpu", "server", 15, 256),
        ("impala", "cuda", "cuda", "actors", 15, 256),
        ("impala", "cuda", "cuda", "server", 15, 256),
    ]
    with pytest.raises(ConfigError, match="--kinds: bench train has no rows appo"):
        grid(["appo"], [1], [1], ["cpu"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal of an absent CUDA device")
def test_bench_train_refuses_a_learner_device_this_machine_lacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "train", "--kinds", "impala", "--learner-device", "cpu,cuda"]) == 2
    err = capsys.readouterr().err
    assert "runner.learner_device='cuda'" in err and "no CUDA device" in err
    assert main(["bench", "train", "--kinds", "impala", "--actor-device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert "runner.actor_device='cuda:1'" in err and "no CUDA device" in err


def test_study_refuses_a_bad_value_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(Path(__file__).parent.parent / "configs" / "study_quick.yaml")
    assert main(["study", "--config", config, "--set", "seeds=0"]) == 2
    out = capsys.readouterr().err
    assert "seeds" in out and "greater than or equal to 1" in out


def test_evaluate_defaults_to_the_training_regime_and_pool_chooses(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [
        "train",
        "--config",
        str(Path(__file__).parent.parent / "configs" / "paper_a3c_design.yaml"),
        "--run-dir",
        str(run),
        *(
            f"--set={s}"
            for s in (
                "runner.serial=true",
                "runner.n_workers=2",
                "runner.envs_per_worker=2",
                "runner.total_env_steps=200",
                "env.worker_cells=[v5-l200-c1000, v50-l200-c1000]",
                "eval.episodes=2",
                "eval.cells=[v5-l200-c1000]",
                "log.tensorboard=false",
                "log.progress=false",
            )
        ),
    ]
    assert main([*argv, "--bound"]) == 2 and not run.exists()  # --bound needs --evaluate
    assert main(argv) == 0
    shared, private = tmp_path / "shared.csv", tmp_path / "private.csv"
    assert main(["evaluate", "--run", str(run), "--episodes", "2", "--csv", str(shared)]) == 0
    frame = pd.read_csv(shared)
    assert set(frame["regime"]) == {"shared"}
    assert set(frame["cell"]) == {"v5-l200-c1000", "train_world"}
    assert {"a3c_greedy", "a3c_stochastic", "two_threshold_steps_left", "privileged_rule"} <= set(
        frame["policy"]
    )
    assert (
        main(["evaluate", "--run", str(run), "--episodes", "2", "--pool", "private", "--csv", str(private)])
        == 0
    )
    frame = pd.read_csv(private)
    assert set(frame["regime"]) == {"private"} and set(frame["cell"]) == {"v5-l200-c1000"}
    # --bound: the hindsight bound of the same episodes, above every policy's return on them
    bounded = tmp_path / "bounded.csv"
    argv = ["evaluate", "--run", str(run), "--episodes", "2", "--pool", "private", "--bound"]
    assert main([*argv, "--csv", str(bounded)]) == 0
    frame = pd.read_csv(bounded)
    bound = frame[frame["policy"] == "hindsight_bound"]
    assert bound["cell"].tolist() == ["v5-l200-c1000"] and (bound["episodes"] == 2).all()
    assert (frame["mean"] <= bound["mean"].iloc[0] + 1e-9).all()


def test_train_evaluate_scores_references_computed_while_it_trained_as_evaluate_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train --evaluate --bound` tunes the references and solves the bound in a process of its
    own during training; its table is the one `uavrl evaluate --bound` prints for the run."""
    run = tmp_path / "run"
    config = str(Path(__file__).parent.parent / "configs" / "paper_a3c_private.yaml")
    sets = ["runner.total_env_steps=4000", "runner.n_workers=2", "runner.envs_per_worker=8"]
    sets += ["env.worker_cells=[v5-l200-c1000,v50-l200-c1000]", "log.progress=false", "log.tensorboard=false"]
    argv = ["train", "--config", config, "--run-dir", str(run), *(f"--set={s}" for s in sets)]
    assert main([*argv, "--evaluate", "--bound", "--episodes", "3"]) == 0
    trained = capsys.readouterr().out
    assert main(["evaluate", "--run", str(run), "--bound", "--episodes", "3"]) == 0
    evaluated = capsys.readouterr().out

    def rows(out: str) -> list[str]:
        return [line for line in out.splitlines() if line.startswith("│")]

    names = {r.split("│")[1].strip() for r in rows(trained)}
    assert {"hindsight_bound", "two_threshold_steps_left", "a3c_greedy"} <= names
    assert rows(trained) == rows(evaluated)


def test_bench_serial_compares_per_worker_and_batched_acting(tmp_path: Path) -> None:
    out = tmp_path / "serial.csv"
    # the private config: the default's centralised critic cannot act per worker (batched only)
    config = str(Path(__file__).parent.parent / "configs" / "paper_a3c_private.yaml")
    assert main(["bench", "serial", "--config", config, "--seconds", "0.6", "--csv", str(out)]) == 0
    frame = pd.read_csv(out)
    assert frame["acting"].tolist() == ["per_worker", "batched"]
    runner = load_config(config).runner
    assert (frame["n_workers"] == runner.n_workers).all()
    assert (frame["envs_per_worker"] == runner.envs_per_worker).all()
    assert (frame["steps_per_s"] > 0).all()
    # Seconds per 2M env steps, rounded to 0.1 s.
    assert ((frame["s_per_2M_steps"] - 2e6 / frame["steps_per_s"]).abs() <= 0.05 + 1e-9).all()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("eval.cells=[nonsense]", "eval.cells"),
        ("env.params.velocity=-5", "env.params.velocity=-5 would be overridden by env.worker_cells"),
        ("env.worker_cells=[v500-l200-c1000]", "velocity must be in [0.0, 120.0] km/h, got 500"),
        ("env.params.reward_scale=.inf", "reward_scale must be a finite number"),
        ("runner.n_workers=0", "runner.n_workers"),
    ],
)
def test_bad_training_input_exits_2_with_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, named: str
) -> None:
    config = str(Path(__file__).parent.parent / "configs" / "paper_a3c_private.yaml")
    run_dir = tmp_path / "run"
    one_worker = ["--set", "runner.n_workers=1", "--set", "env.worker_cells=[v30-l200-c1000]"]
    assert main(["train", "--config", config, *one_worker, "--set", override, "--run-dir", str(run_dir)]) == 2
    out = capsys.readouterr().err
    error_lines = [line for line in out.splitlines() if line.startswith("ConfigError")]
    assert len(error_lines) == 1 and named in " ".join(out.split()), out
    assert not run_dir.exists()


def test_an_env_id_that_cannot_be_imported_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(Path(__file__).parent.parent / "configs" / "cartpole_a3c.yaml")
    run_dir = tmp_path / "run"
    assert (
        main(
            ["train", "--config", config, "--set", "env.id=no_such_module:Env-v0", "--run-dir", str(run_dir)]
        )
        == 2
    )
    out = " ".join(capsys.readouterr().err.split())
    assert "env.id 'no_such_module:Env-v0' could not be made: ModuleNotFoundError" in out
    assert not run_dir.exists()


def _one_error_line(out: str, *named: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out, out
    assert all(name in lines[0] for name in named), out


def test_bad_files_and_unwritable_outputs_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\n  algo: [\n")
    assert main(["train", "--config", str(broken)]) == 2
    _one_error_line(capsys.readouterr().err, str(broken), "not valid YAML at line 2")

    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    _one_error_line(capsys.readouterr().err, "CheckpointError", "not a run directory")

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out_csv = blocker / "out.csv"  # its folder is a file: unwritable, even for root
    assert main(["baselines", "--cells", "v30-l200-c1000", "--csv", str(out_csv)]) == 2
    _one_error_line(capsys.readouterr().err, f"cannot write {str(out_csv)!r}")

    config = str(Path(__file__).parent.parent / "configs" / "paper_a3c_private.yaml")
    assert main(["train", "--config", config, "--run-dir", str(blocker / "run")]) == 2
    out = capsys.readouterr().err
    assert "Not a directory" in out and "Traceback" not in out

    with pytest.raises(ConfigError, match="not valid YAML"):
        main(["--debug", "train", "--config", str(broken)])


def test_help_is_plain_text_and_every_option_says_what_it_does() -> None:
    parser = build_parser()
    assert "``" not in parser.format_help()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        assert "``" not in text, name
        for action in sub._actions:
            assert action.help, f"uavrl {name} {action.option_strings or action.dest} has no help"
            # the default is said once, and only where there is one
            said = HelpFormatter("uavrl")._get_help_string(action) or ""
            assert said.replace("%(default)s", "").count("default") <= 1, (name, said)
            assert action.default is not None or "%(default)s" not in said, (name, said)
    top = " ".join(parser.format_help().split())
    assert all(f" {name} " in top for name in subparsers.choices), top


def test_the_progress_line_shows_an_eta(capsys: pytest.CaptureFixture[str]) -> None:
    bar = _ProgressBar(total=1000, start_steps=0)
    bar.start -= 10.0  # ten seconds in
    bar.add({"step": 250, "return": 3.0})
    bar.show(final=True)
    line = capsys.readouterr().out
    assert "250/1,000 env steps" in line and "ETA 30s" in line and "recent return 3.00" in line


def test_result_formats_policies_as_rows_fitted_markdown_and_csv(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["baselines", "--episodes", "3", "--tune-episodes", "2", "--cells", "v30-l200-c1000,v90-l150-c500"]
    assert main([*argv, "--format", "csv"]) == 0
    captured = capsys.readouterr()
    frame = pd.read_csv(io.StringIO(captured.out))  # stdout is pure CSV; progress went to stderr
    assert len(frame) == 2 * 10 and ": 2/2 (v90-l150-c500)" in captured.err
    assert main([*argv, "--format", "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| cell | random |") and lines[2].startswith("| v30-l200-c1000 | ")
    assert " ± " in lines[2] and len(lines) == 4

    wide = frame.copy()
    narrow = results_table(wide, "t", 3, 0, width=200)
    assert [c.header for c in narrow.columns][:3] == ["policy", "v30-l200-c1000", "v90-l150-c500"]
    assert narrow.row_count == 10  # one row per policy
    fitted = results_table(wide, "t", 3, 0, width=60)
    assert [c.header for c in fitted.columns] == ["policy", "mean over cells", "normalised %"]
    assert "1 = strongest privileged reference" in str(fitted.title)
    assert "--format markdown" in str(fitted.title)


@pytest.mark.parametrize("preset", ["paper", "mec"])
def test_bench_train_configs_work_for_any_worker_count(preset: str) -> None:
    from uavrl.bench.train import bench_config

    from uavrl.envs.preset import get_preset
    from uavrl.runners.session import check_envs

    seen = [c.name for c in get_preset(preset).cell_sets["seen"]]
    for n in (1, 5, 16):
        config = bench_config(n, 2, preset=preset)
        assert config.env.params["preset"] == preset
        assert config.env.worker_cells is not None and len(config.env.worker_cells) == n
        assert config.env.worker_cells[n - 1] == seen[(n - 1) % len(seen)]
        check_envs(config)


def test_bound_prints_and_writes_the_bound_per_cell(tmp_path: Path, capsys) -> None:
    out = tmp_path / "bound.csv"
    argv = ["bound", "--cells", "v30-l200-c1000,v90-l150-c500", "--episodes", "2", "--csv", str(out)]
    assert main(argv) == 0
    frame = pd.read_csv(out)
    assert list(frame["cell"]) == ["v30-l200-c1000", "v90-l150-c500"]
    assert (frame["bound"] >= frame["schedule_return"] - 1e-9).all()
    assert (frame["optimal_episodes"] <= 2).all() and (frame["regime"] == "private").all()
    assert "hindsight bound" in capsys.readouterr().out
    assert main(["bound", "--preset", "mec"]) == 2
    assert "built for 'paper'" in capsys.readouterr().err
    assert main(["bound", "--episodes", "0"]) == 2


def test_tuned_values_print_rounded() -> None:
    from uavrl.cli import _param_text

    assert _param_text(0.0010615360772719654) == "0.001062"
    assert (_param_text(16), _param_text("linear"), _param_text(None)) == ("16", "linear", "-")


def test_baselines_take_a_run_configs_env_and_name_the_reward_scale(tmp_path: Path, capsys) -> None:
    """`baselines --config` scores the rules at the run's reward scale, and each table says
    which scale it shows: the same rules and streams at 0.01 and at the preset's 0.05 per unit
    differ by exactly that ratio."""
    config = str(Path(__file__).parent.parent / "configs" / "paper_a3c_private.yaml")
    small = ["--cells", "v30-l200-c1000", "--episodes", "4", "--tune-episodes", "2"]
    frames = {}
    for name, extra in (("run", ["--config", config]), ("preset", [])):
        out = tmp_path / f"{name}.csv"
        assert main(["baselines", *small, *extra, "--csv", str(out)]) == 0
        frames[name] = pd.read_csv(out).set_index("policy")["mean"]
    titles = " ".join(capsys.readouterr().out.split())
    assert "reward 0.01 per unit" in titles and "reward 0.05 per unit" in titles
    np.testing.assert_allclose(
        frames["run"]["always_offload"] * 5, frames["preset"]["always_offload"], rtol=1e-5
    )
    assert main(["baselines", "--preset", "mec", "--config", config]) == 2


def test_a_run_on_any_env_is_evaluated_beside_random_without_cells_or_pools(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(Path(__file__).parent.parent / "configs" / "cartpole_a3c.yaml")
    run = tmp_path / "run"
    small = ["runner.total_env_steps=400", "runner.n_workers=1", "eval.episodes=2", "log.progress=false"]
    assert (
        main(["train", "--config", config, "--run-dir", str(run), *(x for s in small for x in ("--set", s))])
        == 0
    )
    capsys.readouterr()
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--run", str(run), "--episodes", "3", "--csv", str(out)]) == 0
    title = " ".join(capsys.readouterr().out.split())
    assert "mean episode return, 3 episodes" in title
    assert "cloud pools" not in title and "over cells" not in title
    assert {"random", "a3c_greedy", "a3c_stochastic"} == set(pd.read_csv(out)["policy"])
    assert main(["evaluate", "--run", str(run), "--cells", "seen"]) == 2
    assert "--cells applies to uavrl/Offload-v0 runs only" in " ".join(capsys.readouterr().err.split())


def test_a_run_stopped_at_its_target_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(Path(__file__).parent.parent / "configs" / "cartpole_a3c.yaml")
    sets = [
        "runner.total_env_steps=100000",
        "runner.n_workers=1",
        "eval.episodes=2",
        "eval.every_env_steps=200",
        "eval.periodic_episodes=2",
        "eval.stop_at_return=1",  # any CartPole episode reaches it
        "log.progress=false",
    ]
    assert (
        main(
            [
                "train",
                "--config",
                config,
                "--run-dir",
                str(tmp_path / "run"),
                *(x for s in sets for x in ("--set", s)),
            ]
        )
        == 0
    )
    out = " ".join(capsys.readouterr().out.split())
    assert (
        "stopped at its target: the periodic evaluation reached" in out and "(eval.stop_at_return 1)" in out
    )


def test_a_second_run_of_one_config_gets_the_next_numbered_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --run-dir, runs/<name> then runs/<name>_2; an explicit --run-dir holding a run is
    still refused (it names the run the user meant)."""
    config = str(Path(__file__).parent.parent / "configs" / "cartpole_a3c.yaml")
    monkeypatch.chdir(tmp_path)
    small = ["runner.total_env_steps=200", "runner.n_workers=1", "eval.episodes=1", "log.progress=false"]
    argv = ["train", "--config", config, *(x for s in small for x in ("--set", s))]
    assert main(argv) == 0 and main(argv) == 0
    out = capsys.readouterr().out
    assert "run directory runs/cartpole_a3c " in out and "run directory runs/cartpole_a3c_2 " in out
    assert (tmp_path / "runs" / "cartpole_a3c_2" / "summary.json").exists()
    assert main([*argv, "--run-dir", "runs/cartpole_a3c"]) == 2
    assert "already holds a run" in capsys.readouterr().err
