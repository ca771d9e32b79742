"""The coach (issue 23) tuning the APO engine's own knobs during a run.

Once per iteration the engine shows the coach where the search stands (success of the best
member and of the Pareto front, the front's size, children accepted and rejected, metric calls
used) and its full settings plus the reflection LLM's temperature, then carries whatever the
coach's recommendations changed into the running settings. Which knobs the coach may touch is
the coach's `parameters`, e.g. `{"minibatch_size": (1, 8), "crossover_rate": (0.0, 0.6),
"temperature": (0.0, 1.2)}`; names that are not settings are ignored here.
"""

from __future__ import annotations

import dataclasses
from statistics import fmean
from typing import Any

from .pareto import pareto_front

__all__ = ["coach_step"]


async def coach_step(coach: Any, run: Any, iteration: int, seen: int) -> Any:
    """Observe iteration `iteration` (`seen` = candidates that existed before it) and return
    the run's settings with the coach's applied recommendations."""
    settings = run.settings
    config = dataclasses.asdict(settings)
    if run.llm is not None and isinstance(getattr(run.llm, "temperature", None), int | float):
        config["temperature"] = run.llm.temperature
    await coach.aobserve(
        iteration, metrics=_metrics(run), config=config, log_lines=_log(run.candidates[seen:])
    )
    new = await coach.aapply(config)
    changed = {k: v for k, v in new.items() if k not in config or config[k] != v}
    if "temperature" in changed and run.llm is not None:
        run.llm.temperature = changed["temperature"]
    fields = {f.name for f in dataclasses.fields(settings)}
    known = {k: v for k, v in changed.items() if k in fields}
    return dataclasses.replace(settings, **known) if known else settings


def _metrics(run: Any) -> dict[str, Any]:
    front = pareto_front(run.population)
    statuses = [c.status for c in run.candidates]
    return {
        "best": max((c.success or 0.0) for c in run.population),
        "mean": fmean((c.success or 0.0) for c in front) if front else 0.0,
        "front_size": len(front),
        "accepted": statuses.count("candidate"),
        "rejected": statuses.count("archived"),
        "calls_used": run.evaluator.calls,
        "calls_left": run.evaluator.remaining,
        "llm_calls": run.llm_calls,
    }


def _log(new: list[Any]) -> list[str]:
    return [f"{c.origin} child {c.id}: {c.status} ({c.note or 'no verdict'})" for c in new]
