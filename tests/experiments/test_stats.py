import numpy as np
import pytest
from scipy import stats as sps

from uavrl.experiments import stats


def test_seed_summary_by_hand() -> None:
    # Seed values (row means): 2, 4, 9.
    scores = np.array([[1.0, 3.0], [4.0, 4.0], [8.0, 10.0]])
    s = stats.seed_summary(scores)
    assert s.n_seeds == 3
    assert s.mean == pytest.approx(5.0)
    assert s.std == pytest.approx(np.sqrt(((2 - 5) ** 2 + (4 - 5) ** 2 + (9 - 5) ** 2) / 2))
    assert s.cv == pytest.approx(s.std / 5.0)
    assert (s.worst, s.best) == (2.0, 9.0)


def test_iqm_by_hand_and_against_scipy() -> None:
    # 8 values: drop the lowest 2 and highest 2, average the middle 4.
    x = np.array([100.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, -50.0])
    assert stats.iqm(x) == pytest.approx((2 + 3 + 4 + 5) / 4)
    rng = np.random.default_rng(3)
    m = rng.normal(size=(7, 5))
    assert stats.iqm(m) == pytest.approx(sps.trim_mean(m.ravel(), 0.25))


def _reference_bootstrap(scores: np.ndarray, reps: int, seed: int) -> tuple[float, float]:
    """The seed bootstrap written as plain loops: per replicate, draw seeds, copy their rows."""
    rng = np.random.default_rng(seed)
    n, _ = scores.shape
    out = []
    for rows in rng.integers(0, n, size=(reps, n)):
        sample = np.stack([scores[i] for i in rows])
        out.append(sps.trim_mean(sample.ravel(), 0.25))
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


def test_seed_bootstrap_matches_loop_reference() -> None:
    scores = np.random.default_rng(0).normal(10.0, 3.0, size=(6, 4))
    ci = stats.seed_bootstrap_ci(scores, reps=300, seed=7)
    assert ci == pytest.approx(_reference_bootstrap(scores, 300, 7))
    assert ci[0] < stats.iqm(scores) < ci[1]


def test_seed_bootstrap_by_hand() -> None:
    """Two seeds, two cells; seed 0 scores (0, 0), seed 1 (1, 1). A whole-seed resample holds
    seed 0 twice (mean 0), once (0.5) or never (1), with chances 1/4, 1/2, 1/4; cells drawn
    apart would also give means 0.25 and 0.75."""
    scores = np.array([[0.0, 0.0], [1.0, 1.0]])
    low, high = stats.seed_bootstrap_ci(scores, "mean", reps=4000, level=0.4, seed=1)
    assert low == high == 0.5  # the middle 40% of {0: 1/4, 0.5: 1/2, 1: 1/4}
    low, high = stats.seed_bootstrap_ci(scores, "mean", reps=4000, level=0.9, seed=1)
    assert (low, high) == (0.0, 1.0)
    rng = np.random.default_rng(1)
    means = {float(scores[rng.integers(0, 2, size=2)].mean()) for _ in range(200)}
    assert means == {0.0, 0.5, 1.0}


def test_a_seed_effect_widens_the_interval() -> None:
    """One model per seed on every cell: with a seed effect shared by the cells, resampling
    cells apart averages it away and gives too narrow an interval; whole seeds keep it."""
    rng = np.random.default_rng(5)
    seed_effect = rng.normal(0.0, 1.0, size=(6, 1))
    scores = 0.3 + seed_effect + rng.normal(0.0, 0.1, size=(6, 8))
    low, high = stats.seed_bootstrap_ci(scores, "mean", reps=2000, seed=0)
    seed_means = scores.mean(axis=1)
    # close to the bootstrap of the 6 seed means alone (the unit), far wider than cellwise draws
    unit_low, unit_high = stats.seed_bootstrap_ci(seed_means, "mean", reps=2000, seed=0)
    assert high - low == pytest.approx(unit_high - unit_low, rel=0.05)
    cellwise = [scores[rng.integers(0, 6, size=(6, 8)), np.arange(8)].mean() for _ in range(2000)]
    assert high - low > 2.0 * (np.percentile(cellwise, 97.5) - np.percentile(cellwise, 2.5))


def test_bootstrap_ci_coverage_of_the_mean() -> None:
    # A 95% percentile interval for the mean of N(0, 1) samples covers 0 in roughly 95% of trials.
    rng = np.random.default_rng(1)
    hits = 0
    trials = 200
    for t in range(trials):
        x = rng.normal(size=(30, 1))
        low, high = stats.seed_bootstrap_ci(x, "mean", reps=400, seed=t)
        hits += low <= 0.0 <= high
    assert 0.88 <= hits / trials <= 0.99


def test_probability_of_improvement_by_hand() -> None:
    x = np.array([[1.0], [3.0]])
    y = np.array([[2.0], [3.0], [0.0]])
    # Pairs (x, y): (1,2) 0, (1,3) 0, (1,0) 1, (3,2) 1, (3,3) 0.5, (3,0) 1 -> 3.5 / 6.
    assert stats.probability_of_improvement(x, y) == pytest.approx(3.5 / 6)
    # Two cells: averaged per cell. Cell 2 is all x > y.
    x2 = np.column_stack([x[:, 0], [10.0, 10.0]])
    y2 = np.column_stack([y[:, 0], [0.0, 0.0, 0.0]])
    assert stats.probability_of_improvement(x2, y2) == pytest.approx((3.5 / 6 + 1.0) / 2)
    # Equals the normalised Mann-Whitney U in one cell.
    u = sps.mannwhitneyu(x[:, 0], y[:, 0]).statistic
    assert stats.probability_of_improvement(x, y) == pytest.approx(u / 6)


def test_rounding_noise_counts_as_a_tie() -> None:
    # The individual arm's value is a mean over its models: 5 equal returns averaged can differ
    # from the return itself in the last bit. That must not read as an improvement.
    v = 127.04
    mean_of_five = np.mean([v, v, v, v, v]) + 1e-13
    x, y = np.array([[v], [v]]), np.array([[mean_of_five], [mean_of_five]])
    assert stats.probability_of_improvement(x, y) == 0.5
    assert stats.mann_whitney_u(x[:, 0], y[:, 0]).statistic == 2.0
    assert stats.mann_whitney_u(x[:, 0], y[:, 0]).p_value == pytest.approx(1.0)
    assert stats.welch_t(x[:, 0], y[:, 0]).p_value == 1.0


def test_welch_against_scipy_and_by_hand() -> None:
    x = np.array([3.1, 4.5, 2.2, 5.0, 3.8])
    y = np.array([1.0, 2.5, 1.9, 0.4, 2.2, 3.0, 1.1])
    ours = stats.welch_t(x, y)
    ref = sps.ttest_ind(x, y, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue)
    vx, vy = x.var(ddof=1) / 5, y.var(ddof=1) / 7
    assert ours.df == pytest.approx((vx + vy) ** 2 / (vx**2 / 4 + vy**2 / 6))
    with pytest.raises(ValueError, match=">= 2 values"):
        stats.welch_t(x[:1], y)


def test_mann_whitney_against_scipy() -> None:
    x = np.array([1.0, 4.0, 6.0, 7.0])
    y = np.array([2.0, 3.0, 5.0, 5.0, 8.0])
    ours = stats.mann_whitney_u(x, y)
    ref = sps.mannwhitneyu(x, y, alternative="two-sided")
    assert ours.statistic == pytest.approx(ref.statistic)
    assert ours.p_value == pytest.approx(ref.pvalue)
    # Completely separated samples of 3 and 3: exact two-sided p = 2 / C(6, 3).
    assert stats.mann_whitney_u(np.array([4.0, 5, 6]), np.array([1.0, 2, 3])).p_value == pytest.approx(2 / 20)


def test_holm_by_hand() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # Sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06.
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.2]) == pytest.approx([0.2])


def test_bad_scores_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        stats.iqm(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="share their cells"):
        stats.probability_of_improvement(np.ones((2, 2)), np.ones((2, 3)))


def test_normalised_iqm_by_hand() -> None:
    # Two cells of very different scale: raw returns 10x apart, the same normalised scores.
    raw = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0]])
    floor, oracle = np.array([0.0, 0.0]), np.array([4.0, 40.0])
    norm = stats.normalised_scores(raw, floor, oracle)
    np.testing.assert_allclose(norm[:, 0], norm[:, 1])
    np.testing.assert_allclose(norm[:, 0], [0.25, 0.5, 0.75, 1.0])
    # IQM of the 8 normalised values (0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1, 1): trim 2 each side.
    assert stats.iqm(norm) == pytest.approx((0.5 + 0.5 + 0.75 + 0.75) / 4)
    # On raw scores the IQM trims whole cells' worth of scale instead: 2, 3, 4, 10 survive.
    assert stats.iqm(raw) == pytest.approx((3.0 + 4.0 + 10.0 + 20.0) / 4)
    shifted = stats.normalised_scores(np.array([[5.0], [7.0]]), np.array([3.0]), np.array([11.0]))
    np.testing.assert_allclose(shifted[:, 0], [0.25, 0.5])
    with pytest.raises(ValueError, match="top must beat the floor"):
        stats.normalised_scores(raw, np.array([0.0, 50.0]), oracle)
