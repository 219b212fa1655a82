"""CI smoke test of the study: a reduced ``study_quick`` (both arms, 2 seeds, its 3 rows, tiny
budgets) whose outputs must exist and agree: row counts, columns, config hashes, the report."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.experiments.test_study import CONFIGS, TINY
from uavrl.experiments.figures import _median_band, curve_window, learning_curves
from uavrl.experiments.report import headline_summary, publish, write_report
from uavrl.experiments.study import RESULTS_COLUMNS, load_study, plan, run_study

# The fixture's study trains 24 tiny runs, tunes every rule and solves the bound of every world.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CI smoke test: study_quick with both arms, 2 seeds and its 3 rows, tiny budgets."""
    study = load_study(CONFIGS / "study_quick.yaml", [*TINY, "seeds=2"])
    directory = tmp_path_factory.mktemp("quick_study")
    run_study(study, directory, poll_s=0.1)
    write_report(directory)
    return directory


def test_quick_study_outputs_are_consistent(quick_study: Path) -> None:
    study = load_study(quick_study / "study.yaml")
    results = pd.read_csv(quick_study / "results.csv")
    assert list(results.columns) == RESULTS_COLUMNS
    learned = results[results["arm"] != "reference"]
    n_selections, n_rows, n_seeds = 2, 3, 2
    seen = [f"v{v}-l200-c1000" for v in (5, 10, 20, 30, 50)]
    # Every run is judged in its own training cells (the 5 seen cells of its workers) plus the
    # held-out cell, in its training regime (shared: + the training world) and the other one.
    n_worlds = {"shared": 6 + 1, "private": 6}
    # a3c, impala, a2c: 1 model acting as every agent; individual: 5 models alone (private) or
    # as one team (shared).
    one_model = sum(n_worlds.values())
    per_run = {
        "a3c": one_model,
        "impala": one_model,
        "a2c": one_model,
        "individual": n_worlds["shared"] + 5 * n_worlds["private"],
    }
    for arm, count in per_run.items():
        assert len(learned[learned["arm"] == arm]) == n_rows * n_seeds * count * n_selections
    assert set(learned["model"]) == {
        "a3c",
        "impala",
        "a2c",
        "individual",
        *(f"individual_w{i}" for i in range(5)),
    }
    assert set(learned.loc[learned["regime"] == "shared", "model"]) == {"a3c", "impala", "a2c", "individual"}
    assert set(learned["cell"]) == {*seen, "v90-l200-c1000", "train_world"}
    assert learned.groupby("cell")["held_out"].first().to_dict() == {
        **dict.fromkeys(seen, False),
        "v90-l200-c1000": True,
        "train_world": False,
    }
    assert (learned["train_cells"] == ";".join(seen)).all()
    # The base trains with shared pools (private is its transfer regime); row private_pools the reverse.
    transfer_regime = learned["ablation"].map(lambda row: "shared" if row == "private_pools" else "private")
    assert (learned["transfer"] == (learned["regime"] == transfer_regime)).all()
    assert (learned["episodes"] == 3).all()
    references = results[results["arm"] == "reference"]
    assert {"random", "always_local", "always_offload", "two_threshold_steps_left", "privileged_rule"} <= set(
        references["model"]
    )
    # the bound tops every policy, learned or not, in every world and regime it was solved for
    bound = references[references["model"] == "hindsight_bound"].set_index(["ablation", "regime", "cell"])
    assert len(bound) > 0
    scored = results.join(bound["mean_return"].rename("bound"), on=["ablation", "regime", "cell"])
    assert (scored["mean_return"] <= scored["bound"] + 1e-6).all()
    assert set(references["regime"]) == {"shared", "private"}
    assert set(references["ablation"]) == set(study.ablations)
    for run in plan(study, quick_study):
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["config_hash"] == run.config.hash()
        assert summary["env_steps"] >= study.env_steps_per_worker * run.config.runner.n_workers
    report = (quick_study / "report.md").read_text()
    assert "| a3c | 2 |" in report and "| impala | 2 |" in report and "| a2c | 2 |" in report
    assert "impala vs individual" in report and "*privileged_rule*" in report and "hindsight bound" in report
    assert "shared cloud pools (its training regime)" in report
    assert "private cloud pools (transfer" in report and "the training world itself" in report
    figures = (
        "per_cell_baseline_shared.png",
        "per_cell_baseline_private.png",
        "normalised_baseline_shared.png",
        "heatmap_baseline_shared.png",
        "heatmap_baseline_private.png",
    )
    for figure in ("learning_curves.png", "gap_forest.png", *figures):
        assert (quick_study / figure).stat().st_size > 1000


def test_report_is_recomputed_from_the_run_directories(quick_study: Path) -> None:
    results = pd.read_csv(quick_study / "results.csv")
    (quick_study / "results.csv").unlink()
    write_report(quick_study)
    pd.testing.assert_frame_equal(pd.read_csv(quick_study / "results.csv"), results)


def test_a_study_without_the_individual_arm_reports_without_the_pairs(
    quick_study: Path, tmp_path: Path
) -> None:
    """A study of learned arms without `individual` (study_private runs A3C alone) has no
    A3C-vs-individual pairs: its report leaves that section and the forest figure out and
    still tests every arm against the strongest rule."""
    copy = tmp_path / "study"
    shutil.copytree(quick_study, copy)
    shutil.rmtree(copy / "runs" / "individual")
    (copy / "gap_forest.png").unlink()
    spec = yaml.safe_load((copy / "study.yaml").read_text())
    spec["arms"] = [arm for arm in spec["arms"] if arm != "individual"]
    (copy / "study.yaml").write_text(yaml.safe_dump(spec))
    text = write_report(copy).read_text()
    assert "A3C vs individual" not in text and not (copy / "gap_forest.png").exists()
    assert "learned against the strongest tuned rule" in text and "| a3c |" in text
    assert "| individual |" not in text


def test_learning_curves_are_continuous_with_median_over_the_seeds(quick_study: Path) -> None:
    """Tiny runs log few episodes: every seed's smoothed curve still covers the whole grid, and
    the plotted line is the median over seeds (no gaps, with one seed or many). The curves are
    in evaluation units (the study judges at the preset's scale 0.05, its runs train at 0.01),
    smoothed over a 25th of a run's episodes."""
    study = load_study(quick_study / "study.yaml")
    found = learning_curves(study, quick_study, "baseline")
    curves = found.curves
    assert set(curves) == {"a3c", "impala", "a2c", "individual"}
    assert found.units == pytest.approx(5.0)
    runs = [r for r in plan(study, quick_study) if r.ablation == "baseline"]
    episodes = int(np.median([len(pd.read_csv(r.run_dir / "training_log.csv")) for r in runs]))
    assert found.window == curve_window(episodes) == max(1, min(200, episodes // 25))
    assert curve_window(10) == 1 and curve_window(100_000) == 200
    for curve in curves.values():
        assert curve.by_steps.shape == (2, len(curve.steps)) and np.isfinite(curve.by_steps).all()
        assert np.all(np.diff(curve.steps) > 0) and curve.steps[-1] <= study.env_steps_per_worker + 1e-9
        median, low, high = _median_band(curve.by_steps)
        np.testing.assert_allclose(median, np.median(curve.by_steps, axis=0))
        assert np.all(low <= median + 1e-9) and np.all(median <= high + 1e-9)
    one_seed_median, low, _ = _median_band(curves["a3c"].by_steps[:1])
    assert np.isfinite(one_seed_median).all() and np.isnan(low).all()  # one seed: a line, no band


def test_the_study_ends_with_its_headline_tables(quick_study: Path) -> None:
    text = headline_summary(quick_study)
    assert "Row baseline, shared cloud pools, training cells, greedy:" in text
    assert "Row baseline, shared cloud pools, held-out cells, greedy:" in text
    assert "| a3c | 2 |" in text and "| *threshold* |" in text


def test_published_results_name_every_run_with_its_config_hash_and_commit(
    quick_study: Path, tmp_path: Path
) -> None:
    written = publish(quick_study, tmp_path / "results")
    names = {p.name for p in written}
    assert {"results.csv.gz", "references.csv", "report.md", "study.yaml", "provenance.json"} <= names
    published = pd.read_csv(tmp_path / "results" / "results.csv.gz")
    pd.testing.assert_frame_equal(published, pd.read_csv(quick_study / "results.csv"))
    first = {p.name: p.read_bytes() for p in written}
    again = publish(quick_study, tmp_path / "again")  # reproducible: the same bytes elsewhere
    assert {p.name: p.read_bytes() for p in again} == first
    record = json.loads((tmp_path / "results" / "provenance.json").read_text())
    study = load_study(quick_study / "study.yaml")
    runs = plan(study, quick_study)
    assert record["runs_planned"] == record["runs_finished"] == len(runs) == len(record["runs"])
    assert record["study_hash"] == study.hash() and record["standing"] == "exploratory"
    for run in runs:
        entry = record["runs"][run.label]
        assert entry["config_hash"] == run.config.hash()
        assert entry["git_commit"] in record["git_commits_of_runs"]


def test_every_policy_a_figure_draws_has_its_own_colour_and_marker() -> None:
    from uavrl.experiments.figures import _STYLED, policy_style
    from uavrl.experiments.scores import REFERENCE_ORDER
    from uavrl.experiments.study import LEARNED_ARMS

    assert set(_STYLED) == {*LEARNED_ARMS, *REFERENCE_ORDER}
    colours = [policy_style(name)["color"] for name in _STYLED]
    assert len(set(colours)) == len(_STYLED)
    assert policy_style("not a policy") == {"color": "#555555", "marker": "."}  # unknown: one grey


def test_a_per_cell_figure_draws_the_yardsticks_of_its_cells() -> None:
    """Beside the learned arms: the best constant, the strongest rule without hidden state, the
    strongest privileged reference and the bound, each the best by its mean over the cells."""
    from uavrl.experiments.figures import yardsticks

    means = {
        "always_local": 10.0,
        "always_offload": 20.0,
        "random": 15.0,
        "threshold": 30.0,
        "two_threshold_steps_left": 35.0,
        "greedy_privileged": 33.0,
        "privileged_rule": 37.0,
        "hindsight_bound": 50.0,
    }
    refs = pd.DataFrame(
        [
            {"model": m, "cell": c, "mean_return": v + d}
            for m, v in means.items()
            for c, d in (("a", 1), ("b", -1))
        ]
    )
    assert yardsticks(refs) == [
        "always_offload",
        "two_threshold_steps_left",
        "privileged_rule",
        "hindsight_bound",
    ]
    assert yardsticks(refs[refs["model"] != "hindsight_bound"])[-1] == "privileged_rule"
