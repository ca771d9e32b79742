"""What the optimiser keeps about each prompt it tried, and what it returns."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ..stats import wilson_interval

__all__ = ["Candidate", "OptimizeResult", "Progress"]


@dataclass
class Candidate:
    """One prompt the optimiser scored. `success`, `tokens` and `latency_ms` are means over the
    valset examples in `scores`; a child refused before the gate has only its screening."""

    id: str
    prompt: str
    parent_ids: list[str]
    origin: str
    generation: int
    status: str = "draft"
    success: float | None = None
    tokens: float | None = None
    latency_ms: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    costs: dict[str, tuple[float, float]] = field(default_factory=dict)
    note: str = ""

    def measure(self, scores: dict[str, float], costs: dict[str, tuple[float, float]]) -> None:
        """Set the valset means from per-example scores and (tokens, latency_ms) pairs."""
        self.scores = dict(scores)
        self.costs = dict(costs)
        n = len(scores)
        self.success = math.fsum(scores.values()) / n if n else None
        self.tokens = math.fsum(c[0] for c in costs.values()) / n if n else None
        self.latency_ms = math.fsum(c[1] for c in costs.values()) / n if n else None

    def fitness(self) -> dict[str, Any] | None:
        """The registry's fitness document: means on valset, n, and a Wilson 95 % interval."""
        if self.success is None:
            return None
        n = len(self.scores)
        low, high = wilson_interval(self.success, n)
        return {
            "success": round(self.success, 6),
            "tokens": None if self.tokens is None else round(self.tokens, 3),
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
            "n": n,
            "ci95": [round(low, 6), round(high, 6)],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "prompt": self.prompt,
            "parent_ids": list(self.parent_ids),
            "origin": self.origin,
            "generation": self.generation,
            "status": self.status,
            "success": self.success,
            "tokens": self.tokens,
            "latency_ms": self.latency_ms,
            "n": len(self.scores),
            "note": self.note,
        }


@dataclass(frozen=True)
class Progress:
    """What a progress bar shows after each step of the search."""

    calls_used: int
    budget: int
    best_success: float
    front_size: int
    generation: int


@dataclass
class OptimizeResult:
    """What `optimize_prompt` found. `best` is the gate-passed candidate (or the seed) with the
    highest valset success, fewer tokens then lower latency breaking ties."""

    best: Candidate
    front: list[Candidate]
    candidates: list[Candidate]
    baseline: Candidate
    metric_calls: int
    budget: int
    generations: int
    spend: dict[str, int]
    llm_calls: int
    run_id: str
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """A JSON-able account of the run (the CLI's optimization_summary.json)."""
        base = self.baseline.success or 0.0
        best = self.best.success or 0.0
        promoted = [c for c in self.candidates if c.status == "candidate"]
        return {
            "run_id": self.run_id,
            "baseline": self.baseline.to_dict(),
            "best": self.best.to_dict(),
            "improvement": round(best - base, 6),
            "generations": self.generations,
            "population": len(promoted) + 1,
            "candidates_scored": len(self.candidates),
            "calls_used": self.metric_calls,
            "budget": self.budget,
            "spend": dict(self.spend),
            "llm_calls": self.llm_calls,
            "front": [c.to_dict() for c in self.front],
            "warnings": list(self.warnings),
        }
