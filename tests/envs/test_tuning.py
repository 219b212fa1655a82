"""The rule search: coarse grid, then coordinate ascent, each candidate scored once."""

from __future__ import annotations

import numpy as np

from uavrl.envs.tuning import coordinate_ascent


def test_the_search_finds_the_peak_of_a_separable_score_and_scores_each_candidate_once() -> None:
    calls: list[tuple[float, ...]] = []

    def score(candidates: list[tuple[float, ...]]) -> np.ndarray:
        calls.extend(candidates)
        return np.array([-((a - 13) ** 2) - (b - 37) ** 2 for a, b in candidates], dtype=float)

    axes = [range(51), range(51)]
    tuned = coordinate_ascent(score, axes)
    assert tuned.values == (13, 37) and tuned.score == 0.0
    assert len(calls) == len(set(calls)) == len(tuned.scores)
    assert len(calls) <= 11 * 11 + 3 * 51  # the coarse grid and three lines, not 51 x 51


def test_a_start_point_is_kept_when_nothing_beats_it() -> None:
    def score(candidates: list[tuple[float, ...]]) -> np.ndarray:
        return np.zeros(len(candidates))  # all tied

    tuned = coordinate_ascent(score, [range(5), range(5)], start=(2, 3))
    assert tuned.values == (2, 3)


def test_coordinate_ascent_escapes_a_coarse_point_along_each_axis() -> None:
    """The coarse grid (0, 5, 10) lands at 10; the line search then finds 9 on that axis."""

    def score(candidates: list[tuple[float, ...]]) -> np.ndarray:
        return np.array([-abs(a - 9) for (a,) in candidates], dtype=float)

    tuned = coordinate_ascent(score, [range(11)], coarse_step=5)
    assert tuned.values == (9,)
