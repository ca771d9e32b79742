"""The statistics of experiment results: numbers in, dicts out, no database and no clock.

A/B variants are compared on their reward values (mean, sample stdev, a Student t 95 %
interval, Welch's t-test against the first variant); regression variants on their per-example
scores (success rate with a Wilson interval when every score is 0 or 1, a t interval
otherwise). Distributions come from `scipy.stats` by name (STYLE §6), imported on first use:
scipy takes over a second to import, and most processes that import the store never read an
experiment.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

#: the confidence level of every interval reported
CONFIDENCE = 0.95


def mean_stdev(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1), each None without enough values. Two
    passes with exact sums (`math.fsum`): no cancellation for values far from zero."""
    n = len(values)
    if n == 0:
        return None, None
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def t_interval(n: int, mean: float | None, stdev: float | None) -> list[float] | None:
    """The Student t 95 % interval of a mean; None below two values."""
    if n < 2 or mean is None or stdev is None:
        return None
    from scipy import stats

    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * stdev / math.sqrt(n)
    return [mean - half, mean + half]


def describe(values: Sequence[float]) -> dict[str, Any]:
    """{n, mean, stdev, ci95} of `values` (mean None when empty; stdev and ci95 None below
    two values)."""
    mean, stdev = mean_stdev(values)
    return {
        "n": len(values),
        "mean": mean,
        "stdev": stdev,
        "ci95": t_interval(len(values), mean, stdev),
    }


def welch_p_value(values: Sequence[float], reference: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`) of
    `values` against `reference`. None when either side has fewer than two values or both
    have no variance (the test statistic is undefined)."""
    if len(values) < 2 or len(reference) < 2:
        return None
    if _constant(values) and _constant(reference):
        return None
    from scipy import stats

    # scipy warns of lost precision when one side's values are all equal; its variance is
    # then exactly 0, which the test handles (only both sides constant is undefined).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_ind(values, reference, equal_var=False).pvalue)
    return p if math.isfinite(p) else None


def _constant(values: Sequence[float]) -> bool:
    first = values[0]
    return all(v == first for v in values)


def success(scores: Sequence[float]) -> dict[str, Any]:
    """{n, success (the mean score), ci95} of a regression variant's scores on one example
    set. Pass/fail scores (all 0 or 1) get the Wilson score interval
    (`binomtest(...).proportion_ci("wilson")`), which stays inside [0, 1] and is defined for
    0 or n successes; other scores the t interval of their mean (None below two)."""
    n = len(scores)
    if n == 0:
        return {"n": 0, "success": None, "ci95": None}
    if all(s in (0.0, 1.0) for s in scores):
        from scipy import stats

        k = sum(1 for s in scores if s == 1.0)
        ci = stats.binomtest(k, n).proportion_ci(CONFIDENCE, method="wilson")
        return {"n": n, "success": k / n, "ci95": [float(ci.low), float(ci.high)]}
    mean, stdev = mean_stdev(scores)
    return {"n": n, "success": mean, "ci95": t_interval(n, mean, stdev)}


def ab_results(
    variants: Sequence[Mapping[str, Any]],
    values: Mapping[str, Sequence[float]],
    usage: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Per A/B variant, in order: {prompt_id, weight, n, mean, stdev, ci95, executions,
    tokens, latency_ms, p_value}. `values[prompt_id]` are its reward values; `usage[prompt_id]`
    its executions' {executions, tokens, latency_ms} (mean tokens and latency per execution,
    over `executions` of them). The p-value compares each variant with the first (None for the
    first itself)."""
    reference = list(values.get(variants[0]["prompt_id"], ())) if variants else []
    results = []
    for index, variant in enumerate(variants):
        prompt_id = variant["prompt_id"]
        own = list(values.get(prompt_id, ()))
        spent = usage.get(prompt_id, {})
        results.append(
            {
                "prompt_id": prompt_id,
                "weight": variant["weight"],
                **describe(own),
                "executions": spent.get("executions", 0),
                "tokens": spent.get("tokens"),
                "latency_ms": spent.get("latency_ms"),
                "p_value": None if index == 0 else welch_p_value(own, reference),
            }
        )
    return results


def regression_results(
    variants: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    target: Sequence[str],
    control: Sequence[str],
) -> list[dict[str, Any]]:
    """Per regression variant, in order: {prompt_id, target: success(...), control:
    success(...), tokens, latency_ms}. `rows` are the posted results ({prompt_id, example_id,
    score, tokens, latency_ms}); target and control count the rows of their example ids;
    tokens and latency are means over every row of the variant that has them."""
    target_ids, control_ids = set(target), set(control)
    by_prompt: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_prompt.setdefault(row["prompt_id"], []).append(row)
    results = []
    for variant in variants:
        own = by_prompt.get(variant["prompt_id"], [])
        results.append(
            {
                "prompt_id": variant["prompt_id"],
                "target": success([r["score"] for r in own if r["example_id"] in target_ids]),
                "control": success([r["score"] for r in own if r["example_id"] in control_ids]),
                "tokens": _mean_of(r["tokens"] for r in own),
                "latency_ms": _mean_of(r["latency_ms"] for r in own),
            }
        )
    return results


def _mean_of(values: Any) -> float | None:
    present = [v for v in values if v is not None]
    return math.fsum(present) / len(present) if present else None
