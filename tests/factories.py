"""Builders for the rows tests post and store: span dicts (the REST/JSON shape), `SpanRecord`s,
tasks and rewards. Every builder fills in valid defaults and takes overrides as keywords.

    batch = span_batch(50, attributes={"gen_ai.agent.name": "planner"})
    await api_client.post("/api/v1/spans", json={"spans": batch})
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import Any

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


class FailingStore:
    """Stands in for a store whose writer fails in a given way (overload, database down), for
    the receivers' error answers; everything before the write (decoding) is real."""

    prices = PriceTable()
    indexed_keys: frozenset[str] = frozenset()

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def ingest_prepared(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error
