"""Learners: they read spans and rewards through `EvolutionStore` and make agents better
(DESIGN §7). Their dependencies are the `[learn]` extra."""

from __future__ import annotations

from .analysis import AnalysisReport, analyze

try:
    from .apo.candidates import Candidate, OptimizeResult, Progress
    from .apo.engine import ApoSettings, optimize_prompt, optimize_prompt_async
    from .apo.evaluation import Evaluation
    from .coach import Application, Coach
    from .export import export
    from .patterns import MinerSettings, find_patterns, mine_patterns
    from .ppo import train_ppo
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extras
    if exc.name in ("deap", "moocore"):
        raise ModuleNotFoundError(
            "the learners need the [learn] extra: pip install 'evolution-store[learn]'",
            name=exc.name,
        ) from exc
    raise

__all__ = [
    "AnalysisReport",
    "ApoSettings",
    "Application",
    "Candidate",
    "Coach",
    "Evaluation",
    "MinerSettings",
    "OptimizeResult",
    "Progress",
    "analyze",
    "export",
    "find_patterns",
    "mine_patterns",
    "optimize_prompt",
    "optimize_prompt_async",
    "train_ppo",
]
