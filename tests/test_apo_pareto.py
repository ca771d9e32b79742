"""NSGA-II survival, the Pareto front and its hypervolume."""

from __future__ import annotations

import pytest

from evolution_store.learn.apo.candidates import Candidate
from evolution_store.learn.apo.pareto import hypervolume, nsga2_survivors, pareto_front


def cand(name: str, success: float, tokens: float, latency: float) -> Candidate:
    return Candidate(name, name, [], "seed", 0, success=success, tokens=tokens, latency_ms=latency)


POPULATION = [
    cand("long-best", 0.9, 400, 40),
    cand("short", 0.6, 50, 5),
    cand("dominated", 0.5, 300, 30),
    cand("middle", 0.8, 200, 20),
]


def test_the_front_keeps_short_prompts_beside_successful_ones():
    assert [c.id for c in pareto_front(POPULATION)] == ["long-best", "short", "middle"]


def test_nsga2_drops_the_dominated_first_and_keeps_the_extremes():
    kept = [c.id for c in nsga2_survivors(POPULATION, 2)]
    assert kept == ["long-best", "short"]
    assert nsga2_survivors(POPULATION, 10) == POPULATION


def test_hypervolume_of_a_perfect_free_prompt_is_one_and_grows_with_the_front():
    assert hypervolume([cand("ideal", 1.0, 0, 0)], max_tokens=100, max_latency_ms=10) == 1.0
    one = hypervolume(POPULATION[:1], max_tokens=500, max_latency_ms=50)
    front = hypervolume(pareto_front(POPULATION), max_tokens=500, max_latency_ms=50)
    assert 0 < one < front < 1
    assert hypervolume([], max_tokens=1, max_latency_ms=1) == 0.0
    assert one == pytest.approx(0.9 * 0.2 * 0.2)
