"""Report views: per-cell normalisation against the references of the same row and regime."""

import numpy as np
import pandas as pd
import pytest

from uavrl.experiments.report import View, normalised, seed_scores

REFS = {  # cell -> reference means; in cell "b" the threshold beats the greedy oracle
    "a": {"random": 10.0, "always_local": 5.0, "always_offload": 20.0, "threshold": 50.0, "oracle": 60.0},
    "b": {"random": 10.0, "always_local": 5.0, "always_offload": 30.0, "threshold": 40.0, "oracle": 25.0},
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


def test_normalised_scores_use_the_floor_and_the_best_reference_of_each_cell() -> None:
    results = _results()
    view = View("baseline", "shared", "greedy", held_out=False)
    scores = seed_scores(results, "a3c", view)
    np.testing.assert_array_equal(scores, [[40.0, 40.0], [35.0, 35.0]])
    norm = normalised(results, view, scores)
    # cell a: floor 20 (always_offload), top 60 (oracle); cell b: floor 30, top 40 (threshold).
    np.testing.assert_allclose(norm, [[0.5, 1.0], [0.375, 0.5]])
    assert norm[:, 1].max() == pytest.approx(1.0)
