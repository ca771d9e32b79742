"""The regression gate a child passes before it becomes a `candidate`.

Target = the valset examples its parent failed, control = those the parent passed. The child
must raise the target's mean score; the number of control examples whose score falls must
stay within what evaluation noise explains (a one-sided exact binomial test of that count
against the flip rate `noise`; with `noise` 0, for a deterministic evaluator, no control
example may fall); and its total over the valset must beat the parent's. A child that
regresses control is refused whatever its total."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..stats import max_allowed_failures

__all__ = ["GatePlan", "GateVerdict", "plan_gate", "judge"]

#: a score at or above this counts as a pass when splitting target from control
PASS_SCORE = 1.0
_EPS = 1e-9


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str
    target_ids: list[str]
    control_ids: list[str]
    parent_scores: dict[str, float]
    child_scores: dict[str, float]
    regressions: list[str]
    improvements: list[str]
    p_value: float | None
    test: str


@dataclass(frozen=True)
class GatePlan:
    """Which examples the child is judged on, in the order worth paying for: target first
    (a child that fixes nothing is refused before control is spent), then control."""

    target_ids: list[str]
    control_ids: list[str]
    allowed_regressions: int
    noise: float
    alpha: float
    gain_alpha: float = 1.0


def plan_gate(
    parent_scores: dict[str, float],
    noise: float = 0.0,
    alpha: float = 0.05,
    gain_alpha: float = 1.0,
) -> GatePlan:
    target = [i for i, s in parent_scores.items() if s < PASS_SCORE - _EPS]
    control = [i for i, s in parent_scores.items() if s >= PASS_SCORE - _EPS]
    allowed = max_allowed_failures(len(control), noise, alpha)
    return GatePlan(target, control, allowed, noise, alpha, gain_alpha)


def gain_p_value(improved: int, fallen: int) -> float:
    """One-sided exact sign test: the chance of at least `improved` rises among the examples
    that changed, were a rise and a fall equally likely (the child no better than noise)."""
    from scipy import stats

    changed = improved + fallen
    return float(stats.binom.sf(improved - 1, changed, 0.5)) if changed else 1.0


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values) if values else 0.0


def _total(scores: dict[str, float]) -> float:
    return math.fsum(scores.values())


def target_improved(plan: GatePlan, parent: dict[str, float], child: dict[str, float]) -> bool:
    """Whether the child's mean over the whole target beats the parent's."""
    ids = plan.target_ids
    return bool(ids) and _mean([child[i] for i in ids]) > _mean([parent[i] for i in ids]) + _EPS


def regressions(plan: GatePlan, parent: dict[str, float], child: dict[str, float]) -> list[str]:
    return [i for i in plan.control_ids if i in child and child[i] < parent[i] - _EPS]


def judge(
    plan: GatePlan,
    parent: dict[str, float],
    child: dict[str, float],
    *,
    cheaper: bool = False,
    complete: bool = True,
) -> GateVerdict:
    """The verdict on a child scored on `child` (a subset when the gate stopped early, then
    `complete` is False). With an empty target (the parent passes everything) the child can
    only earn its place by costing less with no control regression (`cheaper`)."""
    from scipy import stats

    fallen = regressions(plan, parent, child)
    improved = [i for i in plan.target_ids if i in child and child[i] > parent[i] + _EPS]
    n_control = len(plan.control_ids)
    p_value = (
        float(stats.binom.sf(len(fallen) - 1, n_control, plan.noise))
        if n_control and plan.noise > 0
        else (1.0 if not fallen else 0.0)
    )
    test = (
        f"one-sided exact binomial test of control regressions against flip rate {plan.noise:g} "
        f"at alpha {plan.alpha:g}: at most {plan.allowed_regressions} of {n_control} may fall"
    )
    if len(fallen) > plan.allowed_regressions:
        passed = False
        reason = f"regressed control: {len(fallen)} of {n_control} passing examples now fail"
    elif not complete:
        passed = False
        reason = "stopped before the gate finished (budget spent)"
    elif plan.target_ids and not target_improved(plan, parent, child):
        passed = False
        reason = f"no gain on target: fixed {len(improved)} of {len(plan.target_ids)}"
    elif plan.target_ids and (
        _total(child) <= _total(parent) + _EPS
        or gain_p_value(len(improved), len(fallen)) > plan.gain_alpha
    ):
        passed = False
        reason = (
            f"gain not beyond noise: fixed {len(improved)} target examples, "
            f"{len(fallen)} control examples fell"
        )
    elif not plan.target_ids and not cheaper:
        passed = False
        reason = "parent already passes every example and the child costs no less"
    else:
        passed = True
        reason = (
            f"fixed {len(improved)} of {len(plan.target_ids)} target examples; "
            f"{len(fallen)} of {n_control} control examples fell "
            f"(allowed {plan.allowed_regressions})"
        )
    return GateVerdict(
        passed=passed,
        reason=reason,
        target_ids=list(plan.target_ids),
        control_ids=list(plan.control_ids),
        parent_scores={i: parent[i] for i in plan.target_ids + plan.control_ids},
        child_scores=dict(child),
        regressions=fallen,
        improvements=improved,
        p_value=p_value,
        test=test,
    )
