"""The regression gate's verdicts and the binomial allowance behind them."""

from __future__ import annotations

import pytest

from evolution_store.learn.apo.gate import gain_p_value, judge, plan_gate
from evolution_store.learn.stats import max_allowed_failures, wilson_interval

PARENT = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0, "e": 0.0}


def test_target_is_what_the_parent_failed_and_control_what_it_passed():
    plan = plan_gate(PARENT)
    assert plan.target_ids == ["d", "e"] and plan.control_ids == ["a", "b", "c"]
    assert plan.allowed_regressions == 0


def test_a_child_that_fixes_target_and_keeps_control_passes():
    verdict = judge(plan_gate(PARENT), PARENT, {**PARENT, "d": 1.0})
    assert verdict.passed and verdict.improvements == ["d"] and not verdict.regressions
    assert "fixed 1 of 2" in verdict.reason


def test_a_control_regression_is_refused_whatever_the_total():
    child = {"a": 0.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 1.0}  # total 4 > parent's 3
    verdict = judge(plan_gate(PARENT), PARENT, child)
    assert not verdict.passed and verdict.regressions == ["a"]
    assert verdict.reason.startswith("regressed control")
    assert verdict.p_value == 0.0


def test_no_gain_on_target_is_refused():
    verdict = judge(plan_gate(PARENT), PARENT, dict(PARENT))
    assert not verdict.passed and "no gain on target" in verdict.reason


def test_an_unfinished_gate_never_passes():
    verdict = judge(plan_gate(PARENT), PARENT, {"d": 1.0, "e": 1.0}, complete=False)
    assert not verdict.passed


def test_a_perfect_parent_can_only_be_replaced_by_a_cheaper_child():
    perfect = {"a": 1.0, "b": 1.0}
    assert not judge(plan_gate(perfect), perfect, dict(perfect)).passed
    assert judge(plan_gate(perfect), perfect, dict(perfect), cheaper=True).passed


def test_noise_allows_a_few_flips_by_an_exact_binomial_test():
    assert max_allowed_failures(40, 0.0) == 0
    # P(X >= 5 | n=40, p=0.05) < 0.05 <= P(X >= 4)
    assert max_allowed_failures(40, 0.05) == 4
    parent = {str(i): 1.0 for i in range(40)} | {"t1": 0.0, "t2": 0.0, "t3": 0.0}
    child = dict(parent) | {"t1": 1.0, "t2": 1.0, "t3": 1.0, "0": 0.0, "1": 0.0}
    assert judge(plan_gate(parent, noise=0.05), parent, child).passed
    assert not judge(plan_gate(parent, noise=0.0), parent, child).passed


def test_the_total_must_rise_and_a_sign_test_may_ask_for_more():
    parent = {str(i): 1.0 for i in range(40)} | {"t1": 0.0, "t2": 0.0}
    swap = dict(parent) | {"t1": 1.0, "0": 0.0}  # one fixed, one lost: no gain
    verdict = judge(plan_gate(parent, noise=0.05), parent, swap)
    assert not verdict.passed and verdict.reason.startswith("gain not beyond noise")
    one_up = dict(parent) | {"t1": 1.0}
    assert judge(plan_gate(parent, noise=0.05), parent, one_up).passed
    assert not judge(plan_gate(parent, noise=0.05, gain_alpha=0.25), parent, one_up).passed
    assert gain_p_value(1, 0) == 0.5 and gain_p_value(3, 0) == 0.125 and gain_p_value(0, 0) == 1


def test_wilson_interval_stays_inside_the_unit_interval():
    low, high = wilson_interval(1.0, 10)
    assert 0.6 < low < 1.0 and high == pytest.approx(1.0)
    assert type(low) is float and type(high) is float
    assert wilson_interval(0.5, 0) == (0.0, 1.0)
