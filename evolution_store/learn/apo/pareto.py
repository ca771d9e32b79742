"""NSGA-II over (success, -tokens, -latency) with DEAP: survival of the population, its
Pareto front, and the front's hypervolume."""

from __future__ import annotations

from collections.abc import Sequence

from deap import base, tools

from .candidates import Candidate

__all__ = ["hypervolume", "nsga2_survivors", "pareto_front"]


class ApoFitness(base.Fitness):
    """Success is maximised, tokens and latency minimised: declared once, as DEAP does."""

    weights = (1.0, -1.0, -1.0)


class _Individual:
    """What DEAP's selectors need: a `fitness`; `candidate` is carried along."""

    def __init__(self, candidate: Candidate) -> None:
        self.candidate = candidate
        self.fitness = ApoFitness(objectives(candidate))


def objectives(candidate: Candidate) -> tuple[float, float, float]:
    return (candidate.success or 0.0, candidate.tokens or 0.0, candidate.latency_ms or 0.0)


def nsga2_survivors(population: Sequence[Candidate], k: int) -> list[Candidate]:
    """The `k` candidates NSGA-II keeps: by non-dominated rank, then crowding distance, so a
    short prompt on the front survives beside a more successful long one."""
    if len(population) <= k:
        return list(population)
    chosen = tools.selNSGA2([_Individual(c) for c in population], k)
    kept = {id(ind.candidate) for ind in chosen}
    return [c for c in population if id(c) in kept]  # in the population's order: reproducible


def pareto_front(population: Sequence[Candidate]) -> list[Candidate]:
    """The non-dominated candidates, in the population's order."""
    if not population:
        return []
    first = tools.sortNondominated(
        [_Individual(c) for c in population], len(population), first_front_only=True
    )[0]
    kept = {id(ind.candidate) for ind in first}
    return [c for c in population if id(c) in kept]


def hypervolume(front: Sequence[Candidate], *, max_tokens: float, max_latency_ms: float) -> float:
    """The volume the front dominates in the unit cube of (failure rate, tokens / max_tokens,
    latency / max_latency_ms), reference point (1, 1, 1): 1.0 would be perfect success at no
    cost. Points worse than the reference contribute nothing."""
    import moocore  # comes with deap

    points = [
        (
            1.0 - (c.success or 0.0),
            min(1.0, (c.tokens or 0.0) / max_tokens) if max_tokens > 0 else 0.0,
            min(1.0, (c.latency_ms or 0.0) / max_latency_ms) if max_latency_ms > 0 else 0.0,
        )
        for c in front
    ]
    if not points:
        return 0.0
    return float(moocore.hypervolume(points, ref=[1.0, 1.0, 1.0]))
