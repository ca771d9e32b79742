"""The pattern learner's findings and records (`patterns`, steps 5 and 6): success, failure or
optimization, the agent check, and each pattern's effect, evidence and explanation."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as scipy_stats

from ..pattern_writes import pattern_id
from .pattern_conditions import Candidates, Condition, Context
from .pattern_hypotheses import (
    Data,
    Family,
    Variable,
    block_sums,
    scipy_test_result,
    tests_of_family,
)
from .pattern_settings import METRICS, MinerSettings
from .stats import (
    HypothesisResult,
    mean_interval,
    newcombe_difference_ci,
    welch_test,
    wilson_interval,
)

if TYPE_CHECKING:
    from ..pattern_facts import ExecutionFacts

_TEST_NAMES = {"fisher_exact": "Fisher", "mann_whitney_u": "Mann–Whitney"}


# -- 5. findings: kinds and the agent check -------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """One test of a family, read for its condition or, with `complement`, for the
    condition that picks exactly the other executions of the context (the same test seen
    from the other side: same p and q, opposite direction)."""

    family: Family
    j: int
    complement: int | None = None

    @property
    def q(self) -> float:
        assert self.family.q is not None
        return float(self.family.q[self.j])

    @property
    def p(self) -> float:
        return float(self.family.p[self.j])

    @property
    def direction(self) -> float:
        direction = float(self.family.direction[self.j])
        return -direction if self.complement is not None else direction

    @property
    def condition(self) -> int:
        return (
            self.complement if self.complement is not None else int(self.family.conditions[self.j])
        )

    @property
    def n_with(self) -> int:
        n_with = int(self.family.n_with[self.j])
        return self.family.rows.size - n_with if self.complement is not None else n_with

    def flipped(self, complement: int | None) -> _Ref:
        return _Ref(self.family, self.j, complement)


@dataclass(frozen=True)
class _Finding:
    kind: str
    primary: _Ref  # the test the pattern reports
    outcome: _Ref | None  # an optimization's outcome test


def classify_findings(
    families: list[Family], complements: list[dict[int, int]], fdr: float
) -> list[_Finding]:
    """Success and failure findings on the outcome, then optimizations (module docstring).
    Of a condition and its complement only the first is tested; an optimization found as
    "costs more" on the first is reported on the complement."""
    outcome_tests: dict[tuple[int, int], _Ref] = {}
    found: dict[tuple[int, int], _Finding] = {}
    cheaper: dict[tuple[int, int, int | None], list[_Ref]] = defaultdict(list)
    for family in families:
        assert family.q is not None
        if family.variable == "outcome":
            for j, condition in enumerate(family.conditions.tolist()):
                outcome_tests[(family.context, condition)] = _Ref(family, j)
        for j in np.flatnonzero(family.q <= fdr).tolist():
            ref = _Ref(family, j)
            key = (family.context, ref.condition)
            if family.variable == "outcome":
                if ref.direction != 0:
                    found[key] = _Finding("success" if ref.direction > 0 else "failure", ref, None)
                continue
            complement = complements[family.context].get(ref.condition)
            if ref.direction > 0 and complement is not None:
                ref = ref.flipped(complement)
            if ref.direction < 0:
                cheaper[(*key, ref.complement)].append(ref)
    for (context, condition, complement), refs in cheaper.items():
        outcome = outcome_tests.get((context, condition))
        if (context, condition) in found or outcome is None:
            continue  # a finding on the outcome says more; an untested outcome says nothing
        outcome = outcome.flipped(complement)
        if outcome.direction < 0 and outcome.p < fdr:
            continue  # cheaper but worse is not an optimization
        best = min(refs, key=lambda ref: (ref.q, METRICS.index(ref.family.variable)))
        found[(context, condition)] = _Finding("optimization", best, outcome)
    return list(found.values())


def needs_agent_check(
    finding: _Finding,
    context: Context,
    candidates: Candidates,
    data: Data,
    settings: MinerSettings,
) -> bool:
    """Whether a finding's context mixes two agents or more (runs without one aside)."""
    if not settings.agent_check or context.agent is not None:
        return False
    if candidates.conditions[finding.primary.condition].feature["type"] == "agent":
        return False  # the agent's own effect is what the check would remove
    agents = np.unique(data.agent_codes[context.rows])
    return int((agents >= 0).sum()) > 1


def check_agents(
    findings: list[_Finding], candidates: Candidates, data: Data, settings: MinerSettings
) -> list[bool]:
    """Whether each finding passes the agent check (module docstring, step 6). The agents'
    tests are run as the contexts' are: per context, variable and agent, all the conditions
    to check at once (`tests_of_family` on the agent's executions), one-sided p = the observed
    side's tail, or 1 - it when the agent's data fall on the other side."""
    strata: dict[int, list[tuple[float, float]]] = defaultdict(list)
    by_family: dict[int, list[tuple[int, _Ref]]] = defaultdict(list)
    for position, finding in enumerate(findings):
        by_family[id(finding.primary.family)].append((position, finding.primary))
    for refs in by_family.values():
        family = refs[0][1].family
        agents = data.agent_codes[family.rows]
        checked = np.unique([ref.condition for _, ref in refs])
        for agent in np.unique(agents[agents >= 0]).tolist():
            mine = Context(None, None, family.rows[agents == agent])
            variable = Variable.of(family.variable, mine, data, settings.min_support)
            if variable is None:
                continue
            inside = candidates.members[checked][:, variable.rows]
            sums = block_sums(inside, np.column_stack(variable.columns))
            tested = tests_of_family(-1, variable, checked, sums, candidates, settings)
            if tested is None:
                continue
            at = {condition: j for j, condition in enumerate(tested.conditions.tolist())}
            for position, ref in refs:
                j = at.get(ref.condition)
                if j is None:
                    continue  # no support inside this agent
                observed, tail = float(tested.observed[j]), float(tested.tail[j])
                p = tail if observed == ref.direction else 1 - tail if observed else 0.5
                strata[position].append((p, _weight(int(tested.n_with[j]), tested.rows.size)))
    return [holds_within_agents(strata[i], settings.fdr) for i in range(len(findings))]


def _weight(n_with: int, n: int) -> float:
    """Stouffer weight of an agent's test: sqrt(n_with n_without / n), its effective size."""
    return math.sqrt(n_with * (n - n_with) / n)


def holds_within_agents(strata: list[tuple[float, float]], fdr: float) -> bool:
    """The agent check (module docstring, step 6) on the agents' one-sided p-values."""
    if len(strata) < 2:
        return False  # met inside one agent only: it cannot be told apart from the agent
    # Stouffer's weighted z (`scipy.stats.combine_pvalues(method="stouffer")`), for every
    # leave-one-out set at once. z is infinite at p = 0 or 1: clipped, it stays finite.
    p = np.clip([p for p, _ in strata], 1e-300, 1 - 1e-16)
    w = np.asarray([w for _, w in strata])
    z = scipy_stats.norm.isf(p)
    left_out = (np.dot(w, z) - w * z) / np.sqrt(np.dot(w, w) - w * w)
    return bool((scipy_stats.norm.sf(left_out) < fdr).all())


# -- 6. the pattern records -----------------------------------------------------------------------


def pattern_record(
    finding: _Finding,
    context: Context,
    candidates: Candidates,
    data: Data,
    equivalent: list[str],
    settings: MinerSettings,
) -> dict[str, Any]:
    ref = finding.primary
    condition = candidates.conditions[ref.condition]
    effect, with_ci, without_ci, secondary = _effect(ref, candidates, data)
    if finding.outcome is not None:
        secondary["outcome"] = _outcome_summary(finding.outcome, candidates, data)
    result = _test_result(ref, candidates, data)
    evidence: dict[str, Any] = {
        "test": result.test,
        "statistic": _finite(result.statistic),
        "p_value": result.p_value,
        "q_value": ref.q,
        "n_with": ref.n_with,
        "n_without": ref.family.rows.size - ref.n_with,
        "with_ci95": with_ci,
        "without_ci95": without_ci,
        "secondary": secondary or None,
        "sample_span_ids": _sample_spans(finding, candidates, data, settings.sample_spans),
        "equivalent": equivalent,
    }
    context_dict = context.as_dict()
    return {
        "id": pattern_id(context_dict, condition.text),
        "kind": finding.kind,
        "context": context_dict,
        "condition": condition.text,
        "feature": condition.feature,
        "effect": effect,
        "evidence": evidence,
        "explanation": _explanation(finding, context, condition, effect, evidence),
    }


def _sides(ref: _Ref, candidates: Candidates, data: Data) -> tuple[np.ndarray, np.ndarray]:
    mask = candidates.members[ref.condition, ref.family.rows]
    values = data.values[ref.family.variable][ref.family.rows]
    return values[mask], values[~mask]


def _effect(
    ref: _Ref, candidates: Candidates, data: Data
) -> tuple[dict[str, Any], list[float], list[float], dict[str, Any]]:
    """The effect (with, without, difference, ci95), each side's interval and the secondary
    results of a test."""
    with_, without = _sides(ref, candidates, data)
    if ref.family.fisher:
        k_with, k_without = int(with_.sum()), int(without.sum())
        rate_with, rate_without = k_with / with_.size, k_without / without.size
        interval = newcombe_difference_ci(k_with, with_.size, k_without, without.size)
        effect = _effect_dict("success_rate", rate_with, rate_without, interval)
        return (
            effect,
            list(wilson_interval(rate_with, with_.size)),
            list(wilson_interval(rate_without, without.size)),
            {},
        )
    welch = welch_test(with_, without)
    mean_with, mean_without = float(with_.mean()), float(without.mean())
    difference = mean_with - mean_without
    interval = welch.ci95 if welch.ci95 and all(map(math.isfinite, welch.ci95)) else None
    name = "mean_reward" if ref.family.variable == "outcome" else ref.family.variable
    effect = _effect_dict(name, mean_with, mean_without, interval or (difference, difference))
    secondary = {
        "welch_t": {
            "test": welch.test,
            "statistic": _finite(welch.statistic),
            "p_value": _finite(welch.p_value),
            "df": _finite(welch.df),
            "ci95": list(interval) if interval else None,
        }
    }
    return effect, list(mean_interval(with_)), list(mean_interval(without)), secondary


def _effect_dict(
    outcome: str, with_: float, without: float, interval: tuple[float, float]
) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "with": with_,
        "without": without,
        "difference": with_ - without,
        "ci95": [float(interval[0]), float(interval[1])],
    }


def _outcome_summary(ref: _Ref, candidates: Candidates, data: Data) -> dict[str, Any]:
    """An optimization's outcome test, with the numbers of its sides."""
    result = _test_result(ref, candidates, data)
    return {
        **_effect(ref, candidates, data)[0],
        "test": result.test,
        "p_value": result.p_value,
        "n_with": ref.n_with,
        "n_without": ref.family.rows.size - ref.n_with,
    }


def _test_result(ref: _Ref, candidates: Candidates, data: Data) -> HypothesisResult:
    """A test's result from its condition's side (a complement's statistic is the other
    side's: 1 / odds ratio, n1 n2 - U; p is the same). Fisher: `fisher_exact`. Mann–Whitney:
    U from the context's ranks and the p the run used (`mannwhitneyu`'s computation), or
    `mannwhitneyu` itself where it computes otherwise (8 or fewer a side)."""
    family = ref.family
    known = family.exact.get(ref.j)
    if known is not None and ref.complement is None:
        return known
    mask = candidates.members[ref.condition, family.rows]
    if family.fisher or known is not None:
        result = scipy_test_result(family.fisher, data.values[family.variable][family.rows], mask)
        # the same test from the other side: keep the p BH used (equal but for rounding)
        return replace(result, p_value=known.p_value) if known else result
    assert family.ranks is not None
    n_with = int(mask.sum())
    u_with = float(family.ranks[mask].sum()) - n_with * (n_with + 1) / 2
    return HypothesisResult("mann_whitney_u", u_with, float(family.p[ref.j]))


def equivalent_conditions(
    ref: _Ref, candidates: Candidates, equivalents: dict[int, list[str]]
) -> list[str]:
    """The conditions that pick the same executions as the reported one, or exactly the
    others ("not (...)"), in the context."""
    tested = int(ref.family.conditions[ref.j])
    same = equivalents.get(tested, [])
    if ref.complement is None:
        return same
    # Seen from the complement, "not" flips: the tested condition is its "not (...)".
    reported = f"not ({candidates.conditions[ref.complement].text})"
    flipped = [text[5:-1] if text.startswith("not (") else f"not ({text})" for text in same]
    own = f"not ({candidates.conditions[tested].text})"
    return [own, *(text for text in flipped if text != reported[5:-1] and text != reported)]


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _sample_spans(
    finding: _Finding, candidates: Candidates, data: Data, cap: int
) -> dict[str, list[str]]:
    """Span ids of runs that show the effect: on the "with" side the runs furthest in the
    pattern's direction first (a failure's worst runs), on the other side the opposite;
    ties in the facts' order."""
    ref = finding.primary
    rows = ref.family.rows
    mask = candidates.members[ref.condition, rows]
    values = data.values[ref.family.variable][rows]
    toward = 1.0 if finding.kind == "success" else -1.0
    samples = {}
    for side, members, sign in (("with", mask, toward), ("without", ~mask, -toward)):
        side_rows, keys = rows[members], -sign * values[members]
        found: list[str] = []
        wanted = cap
        while len(found) < cap and wanted <= 2 * keys.size:
            found = _span_ids(data.facts, side_rows[_smallest(keys, wanted)], cap)
            wanted *= 4  # runs without sample spans: look further
        samples[side] = found
    return samples


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` smallest keys in order, ties by position, without sorting all
    of them (a side can have 100,000 runs)."""
    if keys.size <= k:
        return np.argsort(keys, kind="stable")
    cutoff = np.partition(keys, k - 1)[k - 1]
    below = np.flatnonzero(keys < cutoff)
    chosen = np.concatenate([below, np.flatnonzero(keys == cutoff)[: k - below.size]])
    return chosen[np.argsort(keys[chosen], kind="stable")]


def _span_ids(facts: Sequence[ExecutionFacts], rows: np.ndarray, cap: int) -> list[str]:
    found: list[str] = []
    for row in rows:
        for span_id in facts[int(row)].sample_span_ids:
            found.append(span_id)
            if len(found) == cap:
                return found
    return found


_PHRASES = {
    "success_rate": "succeed {}",
    "mean_reward": "score a mean reward of {}",
    "tokens": "use {} tokens on average",
    "latency_ms": "take {} ms on average",
    "cost": "cost {} on average",
}


def _explanation(
    finding: _Finding,
    context: Context,
    condition: Condition,
    effect: dict[str, Any],
    evidence: dict[str, Any],
) -> str:
    """One sentence with the numbers, e.g. "support-bot runs with config.temperature ≤ 0.3
    succeed 82 % (n=140, 95 % CI 75–88 %) against 51 % otherwise (n=300); q=0.001,
    Fisher, BH"."""
    rate = effect["outcome"] == "success_rate"
    show = _percent if rate else _amount
    low, high = evidence["with_ci95"]
    interval = (
        f"{_percent(low, sign=False)}–{_percent(high)}" if rate else f"{show(low)}–{show(high)}"
    )
    sentence = (
        f"{_scope(context)} with {condition.text.replace(' <= ', ' ≤ ')} "
        f"{_PHRASES[effect['outcome']].format(show(effect['with']))} "
        f"(n={evidence['n_with']}, 95 % CI {interval}) against {show(effect['without'])} "
        f"otherwise (n={evidence['n_without']})"
    )
    if finding.kind == "optimization":
        outcome = evidence["secondary"]["outcome"]
        shown = _percent if outcome["outcome"] == "success_rate" else _amount
        what = "success" if outcome["outcome"] == "success_rate" else "mean reward"
        sentence += (
            f", with no significant drop in {what} ({shown(outcome['with'])} against "
            f"{shown(outcome['without'])}, p={outcome['p_value']:.2g})"
        )
    return f"{sentence}; q={evidence['q_value']:.2g}, {_TEST_NAMES[evidence['test']]}, BH"


def _scope(context: Context) -> str:
    runs = f"{context.agent} runs" if context.agent is not None else "Runs"
    return f"{runs} of task {context.task_name}" if context.task_name is not None else runs


def _percent(value: float, *, sign: bool = True) -> str:
    return f"{100 * value:.0f} %" if sign else f"{100 * value:.0f}"


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
