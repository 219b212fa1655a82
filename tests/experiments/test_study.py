"""The study runner: planning, validation, the setting of every ablation row reaching the
trainer, run directories, resumability."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.numpy import load_file

from uavrl.errors import ConfigError
from uavrl.experiments.study import (
    Progress,
    StudyConfig,
    load_study,
    plan,
    record_confirmatory,
    run_study,
    study_standing,
)

# The module's studies train and evaluate dozens of tiny runs and tune every rule.
pytestmark = pytest.mark.timeout(900)

CONFIGS = Path(__file__).parents[2] / "configs"
# Tiny budgets and two evaluation cells keep each run to a few seconds.
TINY = [
    "seeds=1",
    "env_steps_per_worker=400",
    "base.runner.envs_per_worker=2",
    "base.eval.episodes=2",
    "base.eval.cells=[v5-l200-c1000]",
    "base.log.tensorboard=false",
    "evaluation.episodes=3",
    "evaluation.tuning_episodes=3",
    "evaluation.train_cells=[v5-l200-c1000]",
    "evaluation.held_out_cells=[v90-l200-c1000]",
]


def test_study_configs_load_and_plan() -> None:
    paper = load_study(CONFIGS / "study_paper.yaml")
    runs = plan(paper, Path("x"))
    rows = list(paper.ablations)
    assert rows[0] == "baseline" and len(rows) == 23
    # 2 arms x 23 rows x 10 seeds + the equal-update variant on the baseline row.
    assert len(runs) == 2 * 23 * 10 + 10
    quick = load_study(CONFIGS / "study_quick.yaml")
    assert quick.seeds == 2 and len(quick.ablations) == 3


def test_every_worker_gets_the_same_env_steps_and_rows_change_one_setting() -> None:
    study = load_study(CONFIGS / "study_paper.yaml")
    runs = {(r.arm, r.ablation, r.seed): r.config for r in plan(study, Path("x"))}
    per_worker = study.env_steps_per_worker
    for (arm, _, _), config in runs.items():
        expected = per_worker * (1 if arm == "a3c_equal_updates" else config.runner.n_workers)
        assert config.runner.total_env_steps == expected
    assert runs[("a3c", "workers_3", 0)].runner.total_env_steps == 3 * per_worker
    a3c, individual = runs[("a3c", "baseline", 4)], runs[("individual", "baseline", 4)]
    assert (a3c.runner.share, individual.runner.share) == (True, False)
    assert a3c.seed == individual.seed == 4
    # Apart from the arm and the name, an ablation row differs from the baseline only where it says.
    base = runs[("a3c", "baseline", 0)].to_dict()
    row = runs[("a3c", "entropy_0.001", 0)].to_dict()
    base.pop("name"), row.pop("name")
    base_entropy = study.base["algo"]["entropy_coef"]
    assert row["algo"].pop("entropy_coef") == 0.001 and base["algo"].pop("entropy_coef") == base_entropy
    assert row == base
    assert len({c.hash() for c in runs.values()}) == len(runs)


def test_control_arms_change_the_individual_arm_in_one_thing_each() -> None:
    """individual_equal_steps: N times the env steps (N^2 worker budgets); individual_all_cells:
    every worker on every cell; otherwise each is the individual arm of its row and seed."""
    study = load_study(
        CONFIGS / "study_core.yaml",
        ["equal_steps_rows=[baseline]", "all_cells_rows=[baseline, private_pools]"],
    )
    runs = {(r.arm, r.ablation, r.seed): r.config for r in plan(study, Path("x"))}
    assert {a for a, row, _ in runs if row == "design_hparams"} == {"a3c", "individual", "a3c_equal_updates"}
    individual = runs[("individual", "baseline", 3)].to_dict()
    n = individual["runner"]["n_workers"]
    steps = runs[("individual_equal_steps", "baseline", 3)].to_dict()
    assert steps["runner"].pop("total_env_steps") == n * individual["runner"].pop("total_env_steps")
    cells = runs[("individual_all_cells", "private_pools", 3)].to_dict()
    assert cells["env"].pop("cells_by") == "copy"
    same_row = runs[("individual", "private_pools", 3)].to_dict()
    assert same_row["env"].pop("cells_by") == "worker"
    for config in (steps, cells, same_row):
        config.pop("name")
    individual.pop("name"), individual["runner"].pop("total_env_steps", None)
    assert steps["runner"] == individual["runner"] and steps["env"] == individual["env"]
    assert cells == same_row


def test_the_tuned_individual_arm_is_the_individual_arm_with_its_own_values_after_the_row() -> None:
    tuned = ["algo.lr=0.00135", "algo.rollout_length=10", "runner.envs_per_worker=8"]
    study = load_study(
        CONFIGS / "study_core.yaml",
        ["individual_tuned_rows=[baseline, private_pools]", f"individual_tuned_set={json.dumps(tuned)}"],
    )
    runs = {(r.arm, r.ablation, r.seed): r.config for r in plan(study, Path("x"))}
    for row in ("baseline", "private_pools"):
        mine, theirs = runs[("individual_tuned", row, 2)].to_dict(), runs[("individual", row, 2)].to_dict()
        assert (mine["algo"].pop("lr"), mine["algo"].pop("rollout_length")) == (0.00135, 10)
        assert mine["runner"].pop("envs_per_worker") == 8 and not mine["runner"]["share"]
        for config in (mine, theirs):
            config.pop("name"), config["algo"].pop("lr", None), config["algo"].pop("rollout_length", None)
            config["runner"].pop("envs_per_worker", None)
        assert mine == theirs  # the row's other settings (private pools...) stand
    assert ("individual_tuned", "design_hparams", 0) not in runs
    with pytest.raises(ConfigError, match="individual_tuned_rows needs individual_tuned_set"):
        load_study(
            CONFIGS / "study_core.yaml", ["individual_tuned_rows=[baseline]", "individual_tuned_set=[]"]
        )
    with pytest.raises(ConfigError, match=r"individual_tuned_set: 'runner\.share=true' must be KEY=VALUE"):
        load_study(
            CONFIGS / "study_core.yaml",
            ["individual_tuned_rows=[baseline]", 'individual_tuned_set=["runner.share=true"]'],
        )


def test_runner_arms_share_the_config_seeds_and_budget() -> None:
    study = load_study(CONFIGS / "study_quick.yaml")
    runs = {(r.arm, r.ablation, r.seed): r.config for r in plan(study, Path("x"))}
    a3c, impala, a2c = (runs[(arm, "baseline", 1)] for arm in ("a3c", "impala", "a2c"))
    assert (a3c.runner.kind, impala.runner.kind, a2c.runner.kind) == ("a3c", "impala", "a2c")
    assert a3c.runner.total_env_steps == impala.runner.total_env_steps == a2c.runner.total_env_steps
    assert a3c.seed == impala.seed == a2c.seed == 1
    # V-trace targets instead of GAE; the serial learner takes one worker's rollout per update
    assert impala.algo.gae_lambda is None and a3c.algo.gae_lambda is not None
    assert impala.runner.serial and impala.runner.learner_batch == 1
    for config in (impala, a2c):
        for section in ("env", "model"):
            assert getattr(config, section) == getattr(a3c, section)
    with pytest.raises(ConfigError, match="the arms choose the runner kind"):
        load_study(CONFIGS / "study_quick.yaml", ["base.runner.kind=a2c"])


def test_bad_study_configs_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="baseline and must be empty"):
        load_study(CONFIGS / "study_quick.yaml", ["ablations={first: [model.layer_norm=false]}"])
    with pytest.raises(ConfigError, match=r"may not set 'runner\.share'"):
        load_study(CONFIGS / "study_quick.yaml", ["ablations={baseline: [], x: [runner.share=false]}"])
    with pytest.raises(ConfigError, match=r"ablation 'bad'.*hidden_size"):
        load_study(CONFIGS / "study_quick.yaml", ["ablations={baseline: [], bad: [model.hidden_size=0]}"])
    with pytest.raises(ConfigError, match="arms"):
        load_study(CONFIGS / "study_quick.yaml", ["arms=[a3c, ppo]"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_study(tmp_path / "missing.yaml")


def test_a_confirmatory_study_refuses_development_seeds(tmp_path: Path) -> None:
    confirm = ["confirmatory=true", "evaluation.seed=2000001"]
    with pytest.raises(ConfigError, match=r"seeds 95-104 .* overlap the development seeds 0-99"):
        load_study(CONFIGS / "study_quick.yaml", [*confirm, "first_seed=95", "seeds=10"])
    with pytest.raises(ConfigError, match=r"evaluation\.seed 1000000 was used in development"):
        load_study(CONFIGS / "study_quick.yaml", ["confirmatory=true", "first_seed=100"])
    with pytest.raises(ConfigError, match="overlap the development seeds 0-199"):
        load_study(CONFIGS / "study_quick.yaml", [*confirm, "first_seed=150", "development_seeds=[0, 199]"])
    study = load_study(CONFIGS / "study_quick.yaml", [*confirm, "first_seed=100"])
    assert [r.config.seed for r in plan(study, tmp_path) if r.arm == "a3c" and r.ablation == "baseline"] == [
        100,
        101,
    ]
    # the first run fixes the study's hash; a changed study reports as exploratory
    assert study_standing(study, tmp_path)[0] == "exploratory"  # never ran
    record_confirmatory(study, tmp_path)
    standing, why = study_standing(study, tmp_path)
    assert standing == "confirmatory" and "seeds 100-101" in why and "2000001" in why
    changed = load_study(CONFIGS / "study_quick.yaml", [*confirm, "first_seed=100", "evaluation.episodes=7"])
    record_confirmatory(changed, tmp_path)  # keeps the first record
    assert study_standing(changed, tmp_path)[0] == "exploratory"
    assert study_standing(load_study(CONFIGS / "study_quick.yaml"), tmp_path)[0] == "exploratory"
    # control arms added before they ran: an amendment, and the study stays confirmatory
    amended = load_study(
        CONFIGS / "study_quick.yaml", [*confirm, "first_seed=100", "all_cells_rows=[baseline]"]
    )
    record_confirmatory(amended, tmp_path)
    standing, why = study_standing(amended, tmp_path)
    assert standing == "confirmatory" and "to add, before they ran, individual_all_cells (baseline)" in why
    assert study_standing(study, tmp_path)[0] == "exploratory"  # the amended study is the record now
    # ...but not once one of the added runs has started, nor with anything else changed as well
    both = [*confirm, "first_seed=100", "all_cells_rows=[baseline]", "equal_steps_rows=[baseline]"]
    started = load_study(CONFIGS / "study_quick.yaml", both)
    label = next(r for r in plan(started, tmp_path) if r.arm == "individual_equal_steps")
    label.run_dir.mkdir(parents=True)
    record_confirmatory(started, tmp_path)
    assert study_standing(started, tmp_path)[0] == "exploratory"
    label.run_dir.rmdir()
    also = load_study(CONFIGS / "study_quick.yaml", [*both, "evaluation.episodes=7"])
    record_confirmatory(also, tmp_path)
    assert study_standing(also, tmp_path)[0] == "exploratory"
    record_confirmatory(started, tmp_path)
    assert study_standing(started, tmp_path)[0] == "confirmatory"
    # an arm with values of its own: added with them, an amendment; its values changed once it
    # is in the record, a change
    tuned = [*both, "individual_tuned_rows=[baseline]", 'individual_tuned_set=["algo.lr=0.002"]']
    with_tuned = load_study(CONFIGS / "study_quick.yaml", tuned)
    record_confirmatory(with_tuned, tmp_path)
    standing, why = study_standing(with_tuned, tmp_path)
    assert standing == "confirmatory" and "individual_tuned (baseline)" in why
    retuned = load_study(CONFIGS / "study_quick.yaml", [*tuned, 'individual_tuned_set=["algo.lr=0.003"]'])
    record_confirmatory(retuned, tmp_path)
    assert study_standing(retuned, tmp_path)[0] == "exploratory"


def test_an_arm_added_to_a_confirmatory_study_before_it_ran_is_an_amendment(tmp_path: Path) -> None:
    """The individual arm added in every row of an A3C-only confirmatory study, nothing else
    changed, before any of its runs started: recorded as an amendment. A run of it started
    first, or an arm dropped, leaves the study exploratory."""
    confirm = ["confirmatory=true", "evaluation.seed=2000001", "first_seed=100"]
    a3c_only = load_study(CONFIGS / "study_quick.yaml", [*confirm, "arms=[a3c]"])
    record_confirmatory(a3c_only, tmp_path)
    with_individual = load_study(CONFIGS / "study_quick.yaml", [*confirm, "arms=[a3c, individual]"])
    first = next(r for r in plan(with_individual, tmp_path) if r.arm == "individual")
    first.run_dir.mkdir(parents=True)
    record_confirmatory(with_individual, tmp_path)
    assert study_standing(with_individual, tmp_path)[0] == "exploratory"
    first.run_dir.rmdir()
    record_confirmatory(with_individual, tmp_path)
    standing, why = study_standing(with_individual, tmp_path)
    rows = ", ".join(with_individual.ablations)  # an arm runs in every row
    assert standing == "confirmatory" and f"to add, before they ran, individual ({rows})" in why
    dropped = load_study(CONFIGS / "study_quick.yaml", [*confirm, "arms=[individual]"])
    record_confirmatory(dropped, tmp_path)
    assert study_standing(dropped, tmp_path)[0] == "exploratory"


@pytest.fixture(scope="module")
def ablation_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = {
        "baseline": [],
        "no_layer_norm": ["model.layer_norm=false"],
        "gru": ["model.recurrent=true"],
        "workers_3": [
            "runner.n_workers=3",
            "env.worker_cells=[v5-l200-c1000, v20-l200-c1000, v50-l200-c1000]",
        ],
        "cloud_500": [
            "env.worker_cells=[v5-l200-c500, v10-l200-c500, v20-l200-c500, v30-l200-c500, v50-l200-c500]"
        ],
        "entropy_0.001": ["algo.entropy_coef=0.001"],
    }
    study = load_study(
        CONFIGS / "study_paper.yaml",
        [*TINY, "arms=[a3c]", "equal_updates_rows=[]", "headline_rows=[]", f"ablations={json.dumps(rows)}"],
    )
    directory = tmp_path_factory.mktemp("ablation_study")
    run_study(study, directory, poll_s=0.1)
    return directory


def _run(study_dir: Path, ablation: str, arm: str = "a3c", seed: int = 0) -> Path:
    return study_dir / "runs" / arm / ablation / f"seed{seed}"


def _weights(run_dir: Path) -> dict[str, object]:
    """The model parameters of a run's final checkpoint (optimizer state left out)."""
    tensors = load_file(str(run_dir / "checkpoints" / "last.safetensors"))
    return {k: v for k, v in tensors.items() if k.startswith("model0.")}


def test_each_ablation_setting_reaches_the_trainer(ablation_study: Path) -> None:
    baseline = _weights(_run(ablation_study, "baseline"))
    assert any("norm" in k for k in baseline) and not any("gru" in k for k in baseline)

    no_ln = _weights(_run(ablation_study, "no_layer_norm"))
    assert set(baseline) - set(no_ln) == {  # the LayerNorms of the encoder, core and critic
        f"model0.{norm}.{p}" for norm in ("encoder.1", "core_norm", "critic.1") for p in ("weight", "bias")
    }
    assert not any("gru" in k for k in no_ln)

    gru = _weights(_run(ablation_study, "gru"))
    assert any("gru" in k for k in gru)

    log = pd.read_csv(_run(ablation_study, "workers_3") / "training_log.csv")
    assert sorted(log["worker_id"].unique()) == [0, 1, 2]
    assert sorted(
        pd.read_csv(_run(ablation_study, "baseline") / "training_log.csv")["worker_id"].unique()
    ) == [
        0,
        1,
        2,
        3,
        4,
    ]

    environment = json.loads((_run(ablation_study, "cloud_500") / "environment.json").read_text())
    assert environment["shared_pool"] and environment["pool_capacity"] == 500
    assert {w["params"]["cloud_capacity"] for w in environment["workers"]} == {500}
    baseline_env = json.loads((_run(ablation_study, "baseline") / "environment.json").read_text())
    assert baseline_env["pool_capacity"] == 1000

    # the base decays its entropy coefficient linearly to 0 (algo.entropy_schedule): each row's
    # coefficient starts at its own value and falls as the run goes on
    base_entropy = load_study(ablation_study / "study.yaml").base["algo"]["entropy_coef"]
    for row, coef in (("entropy_0.001", 0.001), ("baseline", base_entropy)):
        log = pd.read_csv(_run(ablation_study, row) / "training_log.csv").sort_values("step")
        logged = log["entropy_coef"].dropna()
        assert (logged <= coef + 1e-12).all() and logged.is_monotonic_decreasing
        assert logged.iloc[0] > 0.5 * coef and logged.iloc[-1] < logged.iloc[0]


def test_rows_that_move_the_training_cells_are_scored_on_their_own_split(ablation_study: Path) -> None:
    results = pd.read_csv(ablation_study / "results.csv")
    c500 = [f"v{v}-l200-c500" for v in (5, 10, 20, 30, 50)]
    row = results[(results["ablation"] == "cloud_500") & (results["cell"] != "train_world")]
    assert set(row["train_cells"]) == {";".join(c500)}
    held_out = row.groupby("cell")["held_out"].first()
    assert not held_out[c500].any()
    assert held_out[["v5-l200-c1000", "v90-l200-c1000"]].all()  # the study's cells, not its own
    workers_3 = results[(results["ablation"] == "workers_3") & (results["arm"] == "a3c")]
    assert set(workers_3["train_cells"]) == {"v5-l200-c1000;v20-l200-c1000;v50-l200-c1000"}
    assert not workers_3.set_index("cell").loc["v20-l200-c1000", "held_out"].any()
    # Reference thresholds are tuned per row and regime, in the row's own world.
    tuned = json.loads((ablation_study / "references.json").read_text())["params"]
    assert len(tuned) == 2 * 3  # (baseline cells, workers_3, cloud_500) x 2 regimes
    for rules in tuned.values():
        assert set(rules["two_threshold_steps_left"]) == {"local_max", "offload_max"}
        assert set(rules["privileged_rule"]) == {"offload_first_max", "local_max", "offload_max"}
    references = pd.read_csv(ablation_study / "references.csv")
    rule = references[references["policy"] == "threshold"].iloc[0]
    assert set(json.loads(rule["params"])) == {"theta"}


def test_run_directories_carry_their_config_and_hash(ablation_study: Path) -> None:
    study = load_study(ablation_study / "study.yaml")
    for run in plan(study, ablation_study):
        stored = yaml.safe_load((run.run_dir / "config.yaml").read_text())
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert stored["meta"]["config_hash"] == summary["config_hash"] == run.config.hash()


def test_rerun_skips_finished_runs_and_reruns_a_changed_one(ablation_study: Path) -> None:
    study = load_study(ablation_study / "study.yaml")
    before = (_run(ablation_study, "baseline") / "summary.json").stat().st_mtime_ns
    _, progress = run_study(study, ablation_study, poll_s=0.1)
    assert progress.skipped == progress.total and progress.done == 0
    assert (_run(ablation_study, "baseline") / "summary.json").stat().st_mtime_ns == before
    # Change one row: only its run reruns; the old directory is kept aside.
    rows = {**study.ablations, "entropy_0.001": ["algo.entropy_coef=0.02"]}
    changed = study.model_copy(update={"ablations": rows})
    _, progress = run_study(changed, ablation_study, poll_s=0.1)
    assert (progress.done, progress.skipped) == (1, progress.total - 1)
    assert list((ablation_study / "runs" / "a3c" / "entropy_0.001").glob("seed0.stale-*"))


def test_an_interrupted_run_resumes_from_its_checkpoint(ablation_study: Path) -> None:
    study = load_study(ablation_study / "study.yaml")
    run_dir = _run(ablation_study, "gru")
    log_rows = len(pd.read_csv(run_dir / "training_log.csv"))
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(
        json.dumps({"status": "failed", "config_hash": summary["config_hash"]})
    )
    _, progress = run_study(study, ablation_study, poll_s=0.1)
    assert progress.done == 1
    resumed = json.loads((run_dir / "summary.json").read_text())
    # The checkpoint already held the whole budget: nothing is trained twice.
    assert resumed["status"] == "finished" and resumed["env_steps"] == summary["env_steps"]
    assert len(pd.read_csv(run_dir / "training_log.csv")) == log_rows


def test_progress_estimates_time_left() -> None:
    progress = Progress(total=10, done=2, running=2, durations=(50.0, 70.0))
    assert progress.left == 6
    assert progress.eta_s(parallel=2) == pytest.approx(60.0 * 8 / 2)
    assert Progress(total=3).eta_s(2) is None
    assert "2/10 done" in progress.line(2) and "references" not in progress.line(2)
    progress.references = "row baseline, private: evaluating 3/18 (v5-f30-d200)"
    assert progress.line(2).endswith("; references: row baseline, private: evaluating 3/18 (v5-f30-d200)")


def _cartpole_study(tmp_path: Path) -> StudyConfig:
    spec = {
        "name": "cartpole_refs",
        "base": str(CONFIGS / "cartpole_a3c.yaml"),
        "base_set": ["algo.rollout_length=20", "log.tensorboard=false"],
        "seeds": 1,
        "arms": ["a3c"],
        "env_steps_per_worker": 1000,
        "parallel": 1,
        "evaluation": {"episodes": 3},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    return load_study(tmp_path / "study.yaml")


def test_the_references_say_what_they_are_doing(tmp_path: Path) -> None:
    """A `paper` study's references tune the rules and evaluate world by world; each step is
    reported (a study shows it on its progress line while its first runs train)."""
    from uavrl.experiments.study import write_references

    study = load_study(CONFIGS / "study_quick.yaml", [*TINY, "evaluation.bound=false"])
    heard: list[str] = []
    table = write_references(study, tmp_path, heard.append)
    assert not table.empty and heard[0] == "row baseline, shared: tuning the rules"
    worlds = [h for h in heard if h.startswith("row baseline, shared: evaluating ")]
    assert worlds[0].startswith("row baseline, shared: evaluating 1/") and len(worlds) == int(
        worlds[0].split("/")[1].split()[0]
    )
    heard.clear()
    write_references(study, tmp_path, heard.append)  # written: nothing to do, nothing said
    assert heard == []


def test_a_study_whose_references_fail_still_trains_its_runs_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The references run in a thread beside the runs: their failure reaches the caller after
    the runs finished, with its own message."""
    import uavrl.experiments.study as study_module

    def fail(*_: object) -> None:
        raise ConfigError("references: a broken rule")

    monkeypatch.setattr(study_module, "write_references", fail)
    study = _cartpole_study(tmp_path)
    with pytest.raises(ConfigError, match="a broken rule"):
        run_study(study, tmp_path / "out", poll_s=0.1)
    (run,) = plan(study, tmp_path / "out")
    assert (run.run_dir / "eval.csv").exists()


def test_a_study_on_any_gymnasium_env_compares_rows_beside_random(tmp_path: Path) -> None:
    """CartPole: arms are runner kinds, ablation rows work as on `paper`, the evaluation is the
    greedy and stochastic return of the final model beside a random policy, and the report
    tabulates the final returns with CIs and plots one curve per row."""
    from uavrl.experiments.report import write_report

    spec = {
        "name": "cartpole_rows",
        "base": str(CONFIGS / "cartpole_a3c.yaml"),
        "base_set": ["algo.rollout_length=20", "log.tensorboard=false"],
        "seeds": 2,
        "arms": ["a3c", "a2c"],
        "env_steps_per_worker": 1500,
        "parallel": 2,
        "ablations": {"baseline": [], "workers_1": ["runner.n_workers=1"]},
        "evaluation": {"episodes": 4},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(spec))
    study = load_study(tmp_path / "study.yaml")
    study_dir = tmp_path / "out"
    results, progress = run_study(study, study_dir, poll_s=0.1)
    assert progress.done == 8 and progress.failed == 0
    learned = results[results["arm"] != "reference"]
    assert set(learned["arm"]) == {"a3c", "a2c"} and set(learned["ablation"]) == {"baseline", "workers_1"}
    assert set(learned["cell"]) == {"CartPole-v1"} and set(learned["selection"]) == {"greedy", "stochastic"}
    assert not learned["transfer"].any() and not learned["held_out"].any()
    assert (learned.groupby(["arm", "ablation", "selection"]).size() == 2).all()  # 2 seeds each
    reference = results[results["arm"] == "reference"]
    assert set(reference["model"]) == {"random"} and set(reference["ablation"]) == {"baseline", "workers_1"}
    # CartPole returns are episode lengths: at least 8 and at most 500 steps
    assert results["mean_return"].between(8, 500).all()
    workers = {r.ablation: r.config.runner.n_workers for r in plan(study, study_dir)}
    assert workers == {"baseline": 2, "workers_1": 1}

    report = write_report(study_dir).read_text()
    assert "## Final returns" in report and "| workers_1 | a2c | 1 | 20 |" in report
    assert "*random*" in report
    for arm in ("a3c", "a2c"):
        assert (study_dir / f"curves_{arm}.png").stat().st_size > 0


def test_a_mec_study_judges_each_row_beside_the_mec_references(tmp_path: Path) -> None:
    """study_mec in miniature: the rows (GRU, MLP, privileged observation) train on mec cells and
    are scored beside the mec rules, their margins tuned on the run's training cells, on those
    cells and a held-out one, each UAV on its own cloud as it trained and, as a transfer, the
    two UAVs of a run on one cloud."""
    from uavrl.experiments.report import write_report

    study = load_study(
        CONFIGS / "study_mec.yaml",
        [
            "seeds=1",
            "arms=[a3c]",
            "individual_tuned_rows=[]",
            "env_steps_per_worker=400",
            "base.runner.n_workers=2",
            "base.runner.envs_per_worker=4",
            "base.eval.episodes=2",
            "base.env.worker_cells=[v5-f30-d200,v50-f30-d200]",
            "evaluation.episodes=4",
            "evaluation.tuning_episodes=2",
            "evaluation.train_cells=[v5-f30-d200,v50-f30-d200]",
            "evaluation.held_out_cells=[v90-f15-d200]",
        ],
    )
    study_dir = tmp_path / "mec"
    results, progress = run_study(study, study_dir, poll_s=0.1)
    assert progress.done == 4 and progress.failed == 0
    reference = results[results["arm"] == "reference"]
    assert set(reference["model"]) == {
        "random",
        "always_local",
        "always_offload",
        "greedy_estimated",
        "threshold",
        "two_margin",
        "privileged_rule",
        "clairvoyant",
    }
    rows = {"baseline", "mlp", "privileged_obs", "no_privileged_critic"}
    assert set(reference["ablation"]) == rows
    learned = results[results["arm"] == "a3c"]
    assert set(learned["ablation"]) == rows
    for frame in (learned, reference):
        views = frame.groupby(["cell", "regime", "held_out", "transfer"]).size().index.tolist()
        assert sorted(views) == [
            ("v5-f30-d200", "private", False, False),
            ("v5-f30-d200", "shared", False, True),
            ("v50-f30-d200", "private", False, False),
            ("v50-f30-d200", "shared", False, True),
            ("v90-f15-d200", "private", True, False),
            ("v90-f15-d200", "shared", True, True),
        ]
    assert set(results["train_cells"]) == {"v5-f30-d200;v50-f30-d200"}
    assert (results["mean_return"] <= 0).all()  # mec rewards are costs
    # every policy's task metrics, learned and reference alike
    rates = results[["completion_rate", "drop_rate", "discard_rate"]]
    assert rates.notna().all().all()
    np.testing.assert_allclose(rates.sum(axis=1)[rates.sum(axis=1) > 0], 1.0, atol=1e-9)
    always_local = reference[reference["model"] == "always_local"]
    assert (always_local["discard_rate"] == 0).all() and (always_local["cloud_utilisation"] == 0).all()
    runs = {r.ablation: r.config for r in plan(study, study_dir)}
    assert runs["privileged_obs"].env.params["observe_hidden"] and not runs["mlp"].model.recurrent
    report = write_report(study_dir).read_text()
    assert "*privileged_rule*" in report
    for view in (
        "training cells, private clouds (as trained)",
        "held-out cells, private clouds (as trained)",
        "training cells, shared clouds (transfer)",
        "held-out cells, shared clouds (transfer)",
    ):
        assert f"## Final returns: {view}" in report
    assert "greedy %" in report
    metrics_section = report.split("## Task metrics")[1].split("## Figures")[0]
    assert "| baseline | a3c |" in metrics_section and "*always_offload*" in metrics_section
    # a reference's metrics are its mean over the view's cells: at most one line per row
    assert metrics_section.count("*always_offload*") <= len(rows)
    # the headline test of each row, as trained: training and held-out cells
    tests = report.split("## Learned against the strongest tuned rule")[1].split("## Task metrics")[0]
    for row in rows:
        assert f"### Row `{row}` (private clouds, as trained)" in tests
    assert "| training | greedy | a3c |" in tests and "| held-out | greedy | a3c |" in tests


def test_a_study_keeps_its_hash_when_its_base_gains_an_option_at_its_default() -> None:
    """A study's base is a run config held as a dict: an option added later with a hash-neutral
    default (absent from an older dump) leaves the study's hash, and its standing, unchanged."""
    study = load_study(CONFIGS / "study_quick.yaml")
    older = study.to_dict()
    assert older["base"]["runner"].pop("allow_many_processes") is False
    assert older["base"]["env"].pop("cells_by") == "worker"
    assert StudyConfig.model_validate(older).hash() == study.hash()
    changed = load_study(CONFIGS / "study_quick.yaml", ["base.runner.max_restarts=5"])
    assert changed.hash() != study.hash()


def test_a_study_keeps_its_hash_whatever_its_parallel_runs() -> None:
    """How many runs train at once changes no result: a confirmatory study resumed on more cores
    stays confirmatory. Its seeds do change the hash."""
    study = load_study(CONFIGS / "study_mec.yaml")
    assert load_study(CONFIGS / "study_mec.yaml", ["parallel=1"]).hash() == study.hash()
    assert load_study(CONFIGS / "study_mec.yaml", ["parallel=2"]).hash() == study.hash()
    assert load_study(CONFIGS / "study_mec.yaml", ["first_seed=110"]).hash() != study.hash()


def test_a_running_run_shows_how_far_it_trained(tmp_path: Path) -> None:
    """The study's progress line shows each running run's stage, read from its directory:
    starting (no log yet), training in steps of 10% of its budget, evaluating once trained."""
    from uavrl.experiments.study import prepare_run, run_stage
    from uavrl.runners.metrics import LOG_COLUMNS

    study = _cartpole_study(tmp_path)
    (run,) = plan(study, tmp_path / "out")
    prepare_run(run, study.evaluation)
    assert run_stage(run) == "a3c/baseline/seed0: starting"
    budget = run.config.runner.total_env_steps
    rows = [",".join(LOG_COLUMNS), f"{budget // 10},0,1,5.0", f"{int(budget * 0.47)},1,1,6.0"]
    (run.run_dir / "training_log.csv").write_text("\n".join(rows) + "\n")
    assert run_stage(run) == "a3c/baseline/seed0: training 40%"
    progress = Progress(total=1, running=1, inside=(run_stage(run),))
    assert "; a3c/baseline/seed0: training 40%" in progress.line(1)
    run_study(study, tmp_path / "out", poll_s=0.1)
    assert run_stage(run) == "a3c/baseline/seed0: evaluating"  # trained: what follows is its evaluation
