"""The statistics the learners share, on scipy.stats."""

from __future__ import annotations

import math

from scipy import stats

__all__ = ["max_allowed_failures", "wilson_interval"]


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
