"""CI smoke test of the study: a reduced ``study_quick`` (both arms, 2 seeds, its 3 rows, tiny
budgets) whose outputs must exist and agree: row counts, columns, config hashes, the report."""

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.experiments.test_study import CONFIGS, TINY
from uavrl.experiments.report import write_report
from uavrl.experiments.study import RESULTS_COLUMNS, load_study, plan, run_study


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
    n_cells, n_selections, n_rows, n_seeds = 2, 2, 3, 2
    # a3c: 1 model per run; individual: 5 models per run.
    assert len(learned[learned["arm"] == "a3c"]) == n_rows * n_seeds * n_cells * n_selections
    assert len(learned[learned["arm"] == "individual"]) == 5 * n_rows * n_seeds * n_cells * n_selections
    assert set(learned["model"]) == {"a3c", *(f"individual_w{i}" for i in range(5))}
    assert set(learned["cell"]) == {"v5-l200-c1000", "v90-l200-c1000"}
    assert learned.groupby("cell")["held_out"].first().to_dict() == {
        "v5-l200-c1000": False,
        "v90-l200-c1000": True,
    }
    assert (learned["episodes"] == 3).all()
    references = results[results["arm"] == "reference"]
    assert {"random", "always_local", "always_offload", "threshold", "oracle"} <= set(references["model"])
    for run in plan(study, quick_study):
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["config_hash"] == run.config.hash()
        assert summary["env_steps"] >= study.env_steps_per_worker * run.config.runner.n_workers
    report = (quick_study / "report.md").read_text()
    assert "| a3c | 2 |" in report and "*oracle*" in report
    for figure in ("learning_curves.png", "per_cell.png", "gap_forest.png", "percent_of_oracle.png"):
        assert (quick_study / figure).stat().st_size > 1000


def test_report_is_recomputed_from_the_run_directories(quick_study: Path) -> None:
    results = pd.read_csv(quick_study / "results.csv")
    (quick_study / "results.csv").unlink()
    write_report(quick_study)
    pd.testing.assert_frame_equal(pd.read_csv(quick_study / "results.csv"), results)
