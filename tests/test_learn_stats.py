"""The two-group statistics of the pattern learner (evolution_store/learn/stats.py): each test
gives scipy's own numbers, and the vectorised forms that spare scipy calls are what they
claim: a lower bound of Fisher's p, and Mann–Whitney's p to rounding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from evolution_store.learn.stats import (
    benjamini_hochberg,
    fisher_screen,
    fisher_test,
    mann_whitney_from_ranks,
    mann_whitney_test,
    mean_interval,
    newcombe_difference_ci,
    welch_test,
    wilson_interval,
)


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_fisher_test_is_scipys(alternative: str) -> None:
    result = fisher_test(30, 40, 12, 50, alternative=alternative)
    expected = stats.fisher_exact([[30, 10], [12, 38]], alternative=alternative)
    assert result.test == "fisher_exact"
    assert result.p_value == expected.pvalue
    assert result.statistic == expected.statistic


def test_newcombe_interval_matches_the_paper() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 against 48/80.
    low, high = newcombe_difference_ci(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
    # Built from the two Wilson intervals, as scipy gives them.
    a = stats.binomtest(56, 70).proportion_ci(method="wilson")
    b = stats.binomtest(48, 80).proportion_ci(method="wilson")
    d = 56 / 70 - 48 / 80
    assert low == pytest.approx(d - np.hypot(56 / 70 - a.low, b.high - 48 / 80), rel=1e-12)
    assert high == pytest.approx(d + np.hypot(a.high - 56 / 70, 48 / 80 - b.low), rel=1e-12)


def test_newcombe_interval_stays_inside_minus_one_one() -> None:
    low, high = newcombe_difference_ci(20, 20, 0, 20)
    assert -1.0 <= low < high <= 1.0 and low > 0.7


def test_wilson_interval_is_scipys() -> None:
    for k, n in [(0, 20), (7, 20), (20, 20), (412, 1000)]:
        expected = stats.binomtest(k, n).proportion_ci(method="wilson")
        low, high = wilson_interval(k / n, n)
        assert (low, high) == pytest.approx((expected.low, expected.high), rel=1e-12, abs=1e-15)


def test_welch_test_is_scipys_with_the_interval_of_the_difference() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(1.0, 1.0, 40), rng.normal(0.4, 2.0, 70)
    result = welch_test(x, y)
    expected = stats.ttest_ind(x, y, equal_var=False)
    interval = expected.confidence_interval(0.95)
    assert (result.test, result.statistic, result.p_value) == (
        "welch_t",
        expected.statistic,
        expected.pvalue,
    )
    assert result.df == expected.df
    assert result.ci95 == (interval.low, interval.high)
    assert result.ci95[0] < x.mean() - y.mean() < result.ci95[1]


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mann_whitney_test_is_scipys(alternative: str) -> None:
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 10, 30).astype(float), rng.integers(2, 12, 45).astype(float)
    result = mann_whitney_test(x, y, alternative=alternative)
    expected = stats.mannwhitneyu(x, y, alternative=alternative)
    assert (result.test, result.statistic, result.p_value) == (
        "mann_whitney_u",
        expected.statistic,
        expected.pvalue,
    )


def test_mean_interval_is_the_t_interval() -> None:
    sample = np.array([1.0, 2.0, 4.0, 4.5, 7.0])
    expected = stats.t.interval(0.95, 4, loc=sample.mean(), scale=stats.sem(sample))
    assert mean_interval(sample) == pytest.approx(expected, rel=1e-12)
    assert mean_interval([3.0, 3.0, 3.0]) == (3.0, 3.0)  # no spread, no width


def test_benjamini_hochberg_is_scipys() -> None:
    p = np.array([0.001, 0.04, 0.03, 0.5, 0.2, 0.0001])
    q = benjamini_hochberg(p)
    assert np.array_equal(q, stats.false_discovery_control(p, method="bh"))
    assert (q >= p).all() and q.tolist() == benjamini_hochberg(list(p)).tolist()
    assert benjamini_hochberg([]).size == 0


def test_fisher_screen_never_exceeds_fishers_p() -> None:
    """The screen may only underestimate: a bound above alpha then proves the test fails."""
    rng = np.random.default_rng(5)
    n, successes = 300, 120
    n_with = rng.integers(20, 280, 500)
    k_with = np.array([rng.hypergeometric(successes, n - successes, m) for m in n_with])
    k_with[:50] = np.minimum(n_with[:50], successes)  # extreme tables too
    k_with[50:100] = np.maximum(0, n_with[50:100] - (n - successes))
    bound = fisher_screen(k_with, n_with, successes, n)
    for k, m, b in zip(k_with, n_with, bound, strict=True):
        exact = stats.fisher_exact([[k, m - k], [successes - k, n - m - successes + k]]).pvalue
        assert b <= exact * (1 + 1e-9)


def test_mann_whitney_from_ranks_is_mannwhitneyu() -> None:
    rng = np.random.default_rng(6)
    for ties in (False, True):
        values = rng.integers(0, 7, 400).astype(float) if ties else rng.normal(size=400)
        ranks = stats.rankdata(values)
        _, counts = np.unique(values, return_counts=True)
        tie_term = float(np.sum(counts.astype(float) ** 3 - counts))
        masks = rng.random((60, values.size)) < rng.uniform(0.05, 0.95, (60, 1))
        screen = mann_whitney_from_ranks(masks @ ranks, masks.sum(axis=1), values.size, tie_term)
        for mask, p in zip(masks, screen, strict=True):
            expected = stats.mannwhitneyu(values[mask], values[~mask]).pvalue
            assert p == pytest.approx(expected, rel=1e-9, abs=1e-300)
