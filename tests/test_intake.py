"""The OTLP intake budget (evolution_store/intake.py): bytes held by requests in flight, refused
with Overloaded past the budget, always given back."""

from __future__ import annotations

import pytest

from evolution_store.errors import Overloaded
from evolution_store.intake import IntakeBudget


def test_holds_add_up_and_are_given_back() -> None:
    budget = IntakeBudget(100)
    with budget.hold() as first, budget.hold() as second:
        first.add(30)
        second.add(40)
        first.add(30)
        assert budget.held == 100
    assert budget.held == 0


def test_past_the_budget_is_overloaded_and_holds_nothing_more() -> None:
    budget = IntakeBudget(100)
    with budget.hold() as first, budget.hold() as second:
        first.add(60)
        with pytest.raises(Overloaded) as refused:
            second.add(41)
        assert refused.value.retry_after > 0
        assert budget.held == 60 and second.size == 0
        second.add(40)  # what fits still goes in
    assert budget.held == 0


def test_one_request_larger_than_the_budget_goes_in_alone() -> None:
    budget = IntakeBudget(100)
    with budget.hold() as big:
        big.add(80)
        big.add(500)  # no one else holds anything: it could never go in otherwise
        with budget.hold() as other, pytest.raises(Overloaded):
            other.add(1)
    assert budget.held == 0


def test_a_failing_request_gives_its_bytes_back() -> None:
    budget = IntakeBudget(100)
    with pytest.raises(RuntimeError), budget.hold() as hold:
        hold.add(70)
        raise RuntimeError("decode failed")
    assert budget.held == 0
