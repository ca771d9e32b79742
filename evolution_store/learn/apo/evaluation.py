"""One metric call: run the user's `evaluate`, never twice for the same pair, never past the
budget, and fill in tokens and latency from the spans the call made."""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

__all__ = [
    "BudgetExhausted",
    "EvalRecord",
    "Evaluation",
    "Evaluator",
    "example_ids",
]


@dataclass(frozen=True)
class Evaluation:
    """The judgement of one run of the agent on one example. `score` is in [0, 1]; `feedback`
    says what went wrong (a symptom is enough); `tokens` and `latency_ms`, when None, are read
    from the spans the call made."""

    score: float
    feedback: str = ""
    tokens: float | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class EvalRecord:
    """One metric call as the recorder stores it (tokens and latency resolved)."""

    example_id: str
    example: Mapping[str, Any]
    split: str
    evaluation: Evaluation


class BudgetExhausted(Exception):
    """The run has spent `max_metric_calls`; no further call is made."""


EvaluateFn = Callable[[str, dict], "Evaluation | float | Awaitable[Evaluation | float]"]


def example_ids(examples: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    """An example's `id` key names it; otherwise its position in its split does."""
    ids = []
    for index, example in enumerate(examples):
        given = example.get("id") if isinstance(example, Mapping) else None
        ids.append(str(given) if given is not None else f"{prefix}-{index}")
    return ids


def _pair_key(prompt: str, example: Mapping[str, Any]) -> tuple[str, bytes]:
    return prompt, orjson.dumps(example, option=orjson.OPT_SORT_KEYS, default=str)


def _as_evaluation(value: Any) -> Evaluation:
    if isinstance(value, Evaluation):
        evaluation = value
    elif isinstance(value, bool | int | float):
        evaluation = Evaluation(score=float(value))
    else:
        raise TypeError(f"evaluate() must return an Evaluation or a float, not {type(value)!r}")
    score = evaluation.score
    if not isinstance(score, int | float) or math.isnan(score):
        raise ValueError(f"evaluate() returned a score that is not a number: {score!r}")
    return replace(evaluation, score=min(1.0, max(0.0, float(score))))


def estimate_tokens(text: str) -> float:
    """A model-free token count (about four characters a token), used when neither the
    evaluation nor any span says how many tokens a call used."""
    return float(max(1, math.ceil(len(text) / 4)))


class Evaluator:
    """Counts, caches and budgets metric calls. One `evaluate()` call is one metric call; a
    (prompt, example) pair already evaluated is answered from the cache at no cost."""

    def __init__(self, evaluate: EvaluateFn, budget: int, capture: Any = None) -> None:
        self._evaluate = evaluate
        self.budget = budget
        self.calls = 0
        self._capture = capture
        self._cache: dict[tuple[str, bytes], Evaluation] = {}
        #: calls whose `evaluate` raised; each counts as a failure (score 0) of the prompt
        self.errors = 0
        self.first_error: Exception | None = None

    @property
    def remaining(self) -> int:
        return self.budget - self.calls

    def cached(self, prompt: str, example: Mapping[str, Any]) -> Evaluation | None:
        return self._cache.get(_pair_key(prompt, example))

    async def __call__(self, prompt: str, example: Mapping[str, Any]) -> tuple[Evaluation, bool]:
        """The evaluation of `prompt` on `example` and whether it cost a call."""
        key = _pair_key(prompt, example)
        known = self._cache.get(key)
        if known is not None:
            return known, False
        if self.calls >= self.budget:
            raise BudgetExhausted
        self.calls += 1
        evaluation = await self._run(prompt, dict(example))
        self._cache[key] = evaluation
        return evaluation, True

    async def _run(self, prompt: str, example: dict) -> Evaluation:
        measured = None
        if self._capture is not None:
            with self._capture.call() as measured:
                raw = await self._invoke_guarded(prompt, example)
        else:
            raw = await self._invoke_guarded(prompt, example)
        evaluation = _as_evaluation(raw)
        tokens, latency = evaluation.tokens, evaluation.latency_ms
        if tokens is None:
            tokens = measured.tokens if measured and measured.tokens else estimate_tokens(prompt)
        if latency is None:
            latency = measured.latency_ms if measured and measured.spans else 0.0
        return replace(evaluation, tokens=float(tokens), latency_ms=float(latency))

    async def _invoke_guarded(self, prompt: str, example: dict) -> Any:
        """An agent that crashes on an example has failed it: one flaky call must not end a
        long run. The error becomes the feedback; the engine says so once."""
        try:
            return await self._invoke(prompt, example)
        except Exception as exc:  # noqa: BLE001 - any failure of the user's agent is a score
            self.errors += 1
            self.first_error = self.first_error or exc
            return Evaluation(score=0.0, feedback=f"evaluate() raised {type(exc).__name__}: {exc}")

    async def _invoke(self, prompt: str, example: dict) -> Any:
        result = self._evaluate(prompt, example)
        if inspect.isawaitable(result):
            result = await result
        return result
