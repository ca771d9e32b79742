"""Builders for the rows tests post and store: span dicts (the REST/JSON shape), `SpanRecord`s,
tasks and rewards. Every builder fills in valid defaults and takes overrides as keywords.

    batch = span_batch(50, attributes={"gen_ai.agent.name": "planner"})
    await api_client.post("/api/v1/spans", json={"spans": batch})
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from typing import Any

import orjson

from evolution_store.models import RewardIn, SpanRecord, TaskIn
from evolution_store.promote import PriceTable

_counter = itertools.count(1)


def trace_id() -> str:
    """A fresh, valid (non-zero) 32-hex trace id."""
    return secrets.token_hex(16)


def span_id() -> str:
    """A fresh, valid (non-zero) 16-hex span id."""
    return secrets.token_hex(8)


def unique_name(prefix: str = "item") -> str:
    return f"{prefix}-{next(_counter)}-{secrets.token_hex(3)}"


def span_dict(**overrides: Any) -> dict[str, Any]:
    """One span as `POST /api/v1/spans` takes it: a 1 ms internal span, status ok."""
    start = overrides.pop("start_time", None) or time.time_ns()
    span: dict[str, Any] = {
        "trace_id": trace_id(),
        "span_id": span_id(),
        "name": "step",
        "kind": "internal",
        "start_time": start,
        "end_time": start + 1_000_000,
        "status_code": "ok",
        "attributes": {},
    }
    span.update(overrides)
    return span


def span_batch(count: int, *, trace: str | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """`count` spans of one trace (fresh unless given): a root and its children, in order."""
    trace = trace or trace_id()
    start = time.time_ns()
    root = span_dict(trace_id=trace, name="root", start_time=start, **overrides)
    spans = [root]
    for index in range(1, count):
        spans.append(
            span_dict(
                trace_id=trace,
                parent_span_id=root["span_id"],
                name=f"step-{index}",
                start_time=start + index * 1_000,
                **overrides,
            )
        )
    return spans[:count]


def span_record(**overrides: Any) -> SpanRecord:
    """A `SpanRecord` for `EvolutionStore.ingest`, built from `span_dict` defaults."""
    data = span_dict(**overrides)
    return SpanRecord(**data)


def task_body(**overrides: Any) -> dict[str, Any]:
    """Body of `POST /api/v1/tasks`, with a fresh id."""
    body: dict[str, Any] = {"id": unique_name("task"), "name": "solve", "input": {"q": 1}}
    body.update(overrides)
    return body


def task_in(**overrides: Any) -> TaskIn:
    return TaskIn(**task_body(**overrides))


def reward_body(value: float = 1.0, **overrides: Any) -> dict[str, Any]:
    """Body of `POST /api/v1/rewards`. Give a target: span_id, trace_id, execution_id,
    task_id or links."""
    body: dict[str, Any] = {"name": "quality", "value": value, "source": "code"}
    body.update(overrides)
    return body


def reward_in(value: float = 1.0, **overrides: Any) -> RewardIn:
    return RewardIn(**reward_body(value, **overrides))


def pattern(
    condition: str = "config.temperature <= 0.3",
    *,
    kind: str = "success",
    agent: str | None = "support",
    task_name: str | None = None,
    feature: dict[str, Any] | None = None,
    q: float = 0.001,
    difference: float = 0.3,
    **overrides: Any,
) -> dict[str, Any]:
    """A Pattern as the miner hands it to `EvolutionStore.save_patterns` (DESIGN §7): its id
    the digest of its context and condition, success 0.5 + `difference` against 0.5."""
    context = {"agent": agent, "task_name": task_name}
    digest = hashlib.sha256(orjson.dumps([context, condition], option=orjson.OPT_SORT_KEYS))
    with_, without = 0.5 + difference, 0.5
    made: dict[str, Any] = {
        "id": digest.hexdigest()[:16],
        "kind": kind,
        "context": context,
        "condition": condition,
        "feature": feature or {"type": "config", "key": "temperature", "op": "<=", "value": 0.3},
        "effect": {
            "outcome": "success_rate",
            "with": with_,
            "without": without,
            "difference": difference,
            "ci95": [difference - 0.1, difference + 0.1],
        },
        "evidence": {
            "test": "fisher_exact",
            "p_value": q / 10,
            "q_value": q,
            "n_with": 140,
            "n_without": 300,
            "with_ci95": [with_ - 0.07, with_ + 0.06],
            "without_ci95": [0.45, 0.55],
            "secondary": None,
            "sample_span_ids": {"with": [span_id()], "without": [span_id()]},
        },
        "explanation": f"runs with {condition} succeed {with_:.0%} (n=140) against "
        f"{without:.0%} otherwise (n=300); q={q:g}, Fisher, BH",
    }
    made.update(overrides)
    return made


class FailingStore:
    """Stands in for a store whose writer fails in a given way (overload, database down), for
    the receivers' error answers; everything before the write (decoding) is real."""

    prices = PriceTable()
    indexed_keys: frozenset[str] = frozenset()

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def ingest_prepared(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error
