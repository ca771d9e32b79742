"""The statistics the learners share, on scipy.stats."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

__all__ = [
    "HypothesisResult",
    "benjamini_hochberg",
    "fisher_screen",
    "fisher_test",
    "mann_whitney_from_ranks",
    "mann_whitney_test",
    "max_allowed_failures",
    "mean_interval",
    "newcombe_difference_ci",
    "welch_test",
    "wilson_interval",
]


def wilson_interval(rate: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a success rate measured on `n` trials (fractional scores are
    treated as rates). Unlike the normal interval it stays inside [0, 1] for small n."""
    if n <= 0:
        return (0.0, 1.0)
    rate = min(1.0, max(0.0, rate))
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    denominator = 1 + z * z / n
    centre = (rate + z * z / (2 * n)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def max_allowed_failures(n: int, noise: float, alpha: float = 0.05) -> int:
    """The most of `n` control examples that may flip from pass to fail before a one-sided
    exact binomial test (flip rate `noise` under "nothing changed") calls it a regression at
    level `alpha`. With `noise` 0 no flip is allowed: a deterministic evaluator never flips."""
    if n <= 0 or noise <= 0:
        return 0
    allowed = 0
    # P(X >= k) for X ~ Binomial(n, noise); the first k with P < alpha is a regression.
    for k in range(1, n + 1):
        if stats.binom.sf(k - 1, n, noise) < alpha:
            break
        allowed = k
    return allowed


# -- two-group tests (the pattern learner) ------------------------------------------------------


@dataclass(frozen=True)
class HypothesisResult:
    """One scipy test of "with" against "without": what it is called, its statistic and p."""

    test: str  # "fisher_exact", "mann_whitney_u" or "welch_t"
    statistic: float  # Fisher: the odds ratio; Mann–Whitney: U of the first sample; Welch: t
    p_value: float
    df: float | None = None  # Welch's degrees of freedom
    ci95: tuple[float, float] | None = None  # Welch: 95 % interval of mean(x) - mean(y)


def fisher_test(
    successes_with: int,
    n_with: int,
    successes_without: int,
    n_without: int,
    *,
    alternative: str = "two-sided",
) -> HypothesisResult:
    """Fisher's exact test of the 2x2 table [[successes, failures] with, [... ] without]
    (`scipy.stats.fisher_exact`). "greater": the rate is higher with than without."""
    table = [
        [successes_with, n_with - successes_with],
        [successes_without, n_without - successes_without],
    ]
    result = stats.fisher_exact(table, alternative=alternative)
    return HypothesisResult("fisher_exact", float(result.statistic), float(result.pvalue))


def newcombe_difference_ci(
    successes_a: int, n_a: int, successes_b: int, n_b: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Interval for the rate difference a - b from the two Wilson intervals (Newcombe 1998,
    method 10): it stays inside [-1, 1] and behaves at rates near 0 or 1, where the Wald
    interval does not."""
    rate_a = successes_a / n_a if n_a else 0.0
    rate_b = successes_b / n_b if n_b else 0.0
    low_a, high_a = wilson_interval(rate_a, n_a, confidence)
    low_b, high_b = wilson_interval(rate_b, n_b, confidence)
    difference = rate_a - rate_b
    low = difference - math.sqrt((rate_a - low_a) ** 2 + (high_b - rate_b) ** 2)
    high = difference + math.sqrt((high_a - rate_a) ** 2 + (rate_b - low_b) ** 2)
    return (max(-1.0, low), min(1.0, high))


def welch_test(x: ArrayLike, y: ArrayLike, confidence: float = 0.95) -> HypothesisResult:
    """Welch's t-test of mean(x) = mean(y) (`scipy.stats.ttest_ind(equal_var=False)`), with
    the interval of the mean difference. Constant samples give nan, as scipy does."""
    result = stats.ttest_ind(x, y, equal_var=False)
    interval = result.confidence_interval(confidence)
    return HypothesisResult(
        "welch_t",
        float(result.statistic),
        float(result.pvalue),
        df=float(result.df),
        ci95=(float(interval.low), float(interval.high)),
    )


def mann_whitney_test(
    x: ArrayLike, y: ArrayLike, *, alternative: str = "two-sided"
) -> HypothesisResult:
    """Mann–Whitney U test with scipy's defaults (`scipy.stats.mannwhitneyu`: continuity
    correction, exact below 9 per side without ties, else the tie-corrected normal)."""
    result = stats.mannwhitneyu(x, y, alternative=alternative)
    return HypothesisResult("mann_whitney_u", float(result.statistic), float(result.pvalue))


def mean_interval(values: ArrayLike, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of a sample's mean; a constant sample's is the point itself."""
    sample = np.asarray(values, dtype=np.float64)
    mean = float(sample.mean())
    sem = float(sample.std(ddof=1)) / math.sqrt(sample.size) if sample.size > 1 else 0.0
    if not sem > 0:
        return (mean, mean)
    # `stats.t.interval(confidence, n - 1, loc=mean, scale=sem)`, without its per-call cost
    half = float(stats.t.ppf(0.5 + confidence / 2, sample.size - 1)) * sem
    return (mean - half, mean + half)


def benjamini_hochberg(p_values: ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values), in the order given
    (`scipy.stats.false_discovery_control(method="bh")`): keeping q <= alpha keeps the
    expected share of false discoveries at most alpha (independent or positively dependent
    tests)."""
    p = np.asarray(p_values, dtype=np.float64)
    if p.size == 0:
        return p.copy()
    return np.asarray(stats.false_discovery_control(p, method="bh"), dtype=np.float64)


# -- many tests at once ------------------------------------------------------------------------


def fisher_screen(
    successes_with: ArrayLike, n_with: ArrayLike, successes: int, n: int
) -> np.ndarray:
    """A lower bound on Fisher's two-sided p for many tables sharing the margins `successes`
    of `n`: the hypergeometric tail on the observed side (`scipy.stats.hypergeom`, one call
    for all). The two-sided p adds the other side's tail to it, so a bound above alpha
    proves the test cannot pass alpha."""
    k = np.asarray(successes_with, dtype=np.int64)
    drawn = np.asarray(n_with, dtype=np.int64)
    below = k * n < drawn * successes  # fewer successes than expected: the lower tail
    tail = np.empty(k.shape)
    tail[below] = stats.hypergeom.cdf(k[below], n, successes, drawn[below])
    tail[~below] = stats.hypergeom.sf(k[~below] - 1, n, successes, drawn[~below])
    return np.clip(tail, 0.0, 1.0)


def mann_whitney_from_ranks(
    rank_sums: ArrayLike, n_with: ArrayLike, n: int, tie_term: float
) -> np.ndarray:
    """Two-sided Mann–Whitney p for many splits of one sample of size `n` at once, from the
    rank sums of the "with" sides (ranks of the whole sample, averaged over ties; `tie_term`
    = sum of t^3 - t over the tie groups). This is `mannwhitneyu`'s own computation for more
    than 8 a side (its "asymptotic" method: U, the tie-corrected normal approximation with
    continuity correction, `scipy.stats.norm`); the sample is ranked once for all splits,
    where `mannwhitneyu` would rank it again for each. Tests pin it to `mannwhitneyu`."""
    n1 = np.asarray(n_with, dtype=np.float64)
    n2 = n - n1
    u1 = np.asarray(rank_sums, dtype=np.float64) - n1 * (n1 + 1) / 2
    u = np.maximum(u1, n1 * n2 - u1)
    spread = np.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (u - n1 * n2 / 2 - 0.5) / spread
    return np.clip(2 * stats.norm.sf(z), 0.0, 1.0)
