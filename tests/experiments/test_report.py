"""Report views: per-cell normalisation against the references of the same row and regime."""

import numpy as np
import pandas as pd
import pytest

from uavrl.experiments.figures import heatmap_scores
from uavrl.experiments.scores import View, normalised, seed_scores

REFS = {  # cell -> reference means; the bound is the top even where a rule beats a privileged one
    "a": {
        "always_local": 5.0,
        "always_offload": 20.0,
        "threshold": 50.0,
        "privileged_rule": 55.0,
        "hindsight_bound": 60.0,
    },
    "b": {
        "always_local": 5.0,
        "always_offload": 30.0,
        "threshold": 40.0,
        "privileged_rule": 35.0,
        "hindsight_bound": 50.0,
    },
}


def _results() -> pd.DataFrame:
    rows = []
    for cell, refs in REFS.items():
        for policy, value in refs.items():
            rows.append(("reference", "baseline", 0, policy, cell, "shared", False, False, "rule", value))
        for seed, value in ((0, 40.0), (1, 35.0)):
            rows.append(("a3c", "baseline", seed, "a3c", cell, "shared", False, False, "greedy", value))
        # The other regime's rows must not leak into this view.
        rows.append(("a3c", "baseline", 0, "a3c", cell, "private", True, False, "greedy", 999.0))
    rows.append(("a3c", "baseline", 0, "a3c", "train_world", "shared", False, False, "greedy", 999.0))
    columns = ["arm", "ablation", "seed", "model", "cell", "regime", "transfer", "held_out", "selection"]
    return pd.DataFrame(rows, columns=[*columns, "mean_return"])


def test_normalised_scores_use_the_best_constant_and_the_bound_of_each_cell() -> None:
    results = _results()
    view = View("baseline", "shared", "greedy", held_out=False)
    scores = seed_scores(results, "a3c", view)
    np.testing.assert_array_equal(scores, [[40.0, 40.0], [35.0, 35.0]])
    norm = normalised(results, view, scores)
    # cell a: floor 20 (always_offload), top 60 (bound); cell b: floor 30, top 50 (bound).
    np.testing.assert_allclose(norm, [[0.5, 0.5], [0.375, 0.25]])
    assert norm.max() < 1.0


def test_heatmap_scores_are_per_cell_normalised_and_grouped() -> None:
    """Cells named as cells: training ones first, then held-out by what differs; learned arms
    first (mean over seeds), then references; each cell on its own 0-100 scale."""
    refs = {
        "v5-l200-c1000": {
            "random": 10.0,
            "always_local": 5.0,
            "always_offload": 20.0,
            "privileged_rule": 60.0,
        },
        "v70-l200-c1000": {
            "random": 10.0,
            "always_local": 5.0,
            "always_offload": 20.0,
            "privileged_rule": 40.0,
        },
        "v5-l200-c500": {
            "random": 10.0,
            "always_local": 5.0,
            "always_offload": 30.0,
            "privileged_rule": 25.0,
        },
    }
    rows = []
    for cell, values in refs.items():
        for policy, value in values.items():
            rows.append(("reference", policy, 0, cell, "rule", value))
        for seed, value in ((0, 40.0), (1, 30.0)):
            rows.append(("a3c", "a3c", seed, cell, "greedy", value))
    frame = pd.DataFrame(rows, columns=["arm", "model", "seed", "cell", "selection", "mean_return"])
    frame = frame.assign(ablation="baseline", regime="private", train_cells="v5-l200-c1000")
    scores = heatmap_scores(frame, "baseline", "private")
    assert list(scores.columns) == ["a3c", "random", "always_local", "always_offload", "privileged_rule"]
    assert list(scores.index) == [
        ("training", "v5-l200-c1000"),
        ("held-out velocity", "v70-l200-c1000"),
        ("held-out cloud", "v5-l200-c500"),
    ]
    # a3c mean 35: (35 - 20) / (60 - 20) and (35 - 20) / (40 - 20)
    np.testing.assert_allclose(scores["a3c"].to_numpy()[:2], [37.5, 75.0])
    np.testing.assert_allclose(scores["privileged_rule"].to_numpy()[:2], [100.0, 100.0])
    assert scores["always_offload"].to_numpy()[0] == 0.0
    # cell c500: the privileged rule scores below the best constant policy: no scale
    assert scores.loc[("held-out cloud", "v5-l200-c500")].isna().all()


def test_the_headline_test_pairs_seeds_against_the_strongest_rule() -> None:
    """Seed diffs over cells a, b against the threshold (the only non-privileged rule here,
    means 50 and 40): seed 0 (40, 40) -> -5, seed 1 (35, 35) -> -10; one-sided p near 1."""
    from uavrl.experiments.report import rule_test, rule_tests, strongest_rule

    results = _results()
    view = View("baseline", "shared", "greedy", held_out=False)
    assert strongest_rule(results, view) == "threshold"
    (test,) = rule_tests(results, view)
    assert test.arm == "a3c" and test.gap == pytest.approx(-7.5)
    from scipy import stats as sps

    # diffs -5, -10: mean -7.5, se 2.5, t = -3 on 1 df
    assert test.p_one_sided == pytest.approx(sps.t.sf(-3.0, 1))
    # by hand: diffs 3, 5, 4 -> mean 4, sd 1, t = 4 / (1 / sqrt 3) on 2 df
    scores = np.array([[13.0, 3.0], [15.0, 5.0], [14.0, 4.0]])
    by_hand = rule_test("x", scores, "r", np.array([10.0, 0.0]))
    assert by_hand.gap == pytest.approx(4.0)
    assert by_hand.p_one_sided == pytest.approx(sps.t.sf(4.0 * np.sqrt(3.0), 2))
    assert by_hand.ci[0] == pytest.approx(4.0 - sps.t.ppf(0.975, 2) / np.sqrt(3.0))


def test_task_metrics_average_each_reference_over_the_cells_as_the_learned_rows() -> None:
    from uavrl.experiments.report import REFERENCE_ARM, task_metrics_table

    def row(arm: str, model: str, seed: int, cell: str, rate: float) -> dict[str, object]:
        return {
            "arm": arm,
            "ablation": "baseline",
            "model": model,
            "seed": seed,
            "cell": cell,
            "selection": "greedy",
            "completion_rate": rate,
            "drop_rate": 1.0 - rate,
        }

    rows = [row("a3c", "final", 0, "c1", 0.8), row("a3c", "final", 0, "c2", 0.6)]
    rows += [row(REFERENCE_ARM, "threshold", 0, "c1", 0.7), row(REFERENCE_ARM, "threshold", 0, "c2", 0.5)]
    lines = task_metrics_table(pd.DataFrame(rows)).splitlines()
    assert lines[2] == "| baseline | a3c | 0.700 | 0.300 |"
    # one line per reference, its mean over the two cells (not one line per cell)
    assert lines[3:] == ["| baseline | *threshold* | *0.600* | *0.400* |"]
