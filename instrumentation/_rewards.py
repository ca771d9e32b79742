"""`emit_reward` and the Agent Lightning attribute helpers.

A reward is written straight to the sink `configure()` chose (`POST /api/v1/rewards`, or the
embedded store's `add_reward`), not smuggled in a span, so it is stored even when its target
span has not been exported yet: the server keeps it pending and links it when the span arrives.

The attribute helpers produce exactly what Agent Lightning 0.3 users already emit
(`agentlightning/utils/otel.py`, `agentlightning/semconv.py` in microsoft/agent-lightning):
`agentlightning.link.<i>.key_match` / `.value_match`, `agentlightning.tag.<i>`, and reward spans
named `agentlightning.annotation` carrying `agentlightning.reward.<i>.name` / `.value` with the
primary dimension at index 0.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from ._current import current_task
from ._state import STATE, get_tracer, logger

AGL_ANNOTATION = "agentlightning.annotation"
AGL_REWARD = "agentlightning.reward"
AGL_LINK = "agentlightning.link"
AGL_TAG = "agentlightning.tag"
REWARD_SOURCES = ("human", "llm", "code", "env")


def _link_text(key: str, value: Any) -> str:
    # Agent Lightning only accepts strings; numbers and booleans are turned into the text the
    # store compares selectors with (`42`, `0.5`, `true`) instead of being refused.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    raise ValueError(f"Link value must be a string, got {type(value)} for key '{key}'")


def make_link_attributes(links: Mapping[str, Any]) -> dict[str, str]:
    """Span attributes that point a reward at spans by attribute value (Agent Lightning form).

    Every `{key: value}` must match the target span's attribute exactly; the keys `trace_id`
    and `span_id` mean the span's own ids.

    >>> make_link_attributes({"gen_ai.response.id": "resp-1"})  # doctest: +NORMALIZE_WHITESPACE
    {'agentlightning.link.0.key_match': 'gen_ai.response.id',
     'agentlightning.link.0.value_match': 'resp-1'}
    """
    attributes: dict[str, str] = {}
    for index, (key, value) in enumerate(links.items()):
        if not isinstance(key, str) or not key:
            raise ValueError(f"Link key must be a non-empty string, got {key!r}")
        attributes[f"{AGL_LINK}.{index}.key_match"] = key
        attributes[f"{AGL_LINK}.{index}.value_match"] = _link_text(key, value)
    return attributes


def make_tag_attributes(tags: Iterable[str]) -> dict[str, str]:
    """Span attributes that tag a span (Agent Lightning form); the store indexes them as tags.

    >>> make_tag_attributes(["fast", "reliable"])
    {'agentlightning.tag.0': 'fast', 'agentlightning.tag.1': 'reliable'}
    """
    if isinstance(tags, str):
        tags = [tags]
    attributes: dict[str, str] = {}
    for index, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise ValueError(f"Tags must be strings, got {type(tag)}")
        attributes[f"{AGL_TAG}.{index}"] = tag
    return attributes


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool | int | float):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{what} must be a finite number, got {value!r}")
        return number
    raise TypeError(f"{what} must be a number, got {type(value).__name__}")


def _normalize(value: float | Mapping[str, float]) -> tuple[float, dict[str, float] | None]:
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("a multi-dimensional reward needs at least one dimension")
        dimensions = {str(k): _number(v, f"reward dimension {k!r}") for k, v in value.items()}
        return next(iter(dimensions.values())), dimensions
    return _number(value, "reward"), None


def _default_target() -> dict[str, str]:
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        return {
            "span_id": trace.format_span_id(span_context.span_id),
            "trace_id": trace.format_trace_id(span_context.trace_id),
        }
    handle = current_task()
    if handle is not None:
        return {"execution_id": handle.execution_id}
    raise ValueError(
        "emit_reward() needs a target: call it inside a traced span or task(), or pass "
        "span_id, trace_id, execution_id, task_id or links"
    )


def emit_reward(
    value: float | Mapping[str, float],
    *,
    name: str = "reward",
    span_id: str | None = None,
    trace_id: str | None = None,
    task_id: str | None = None,
    execution_id: str | None = None,
    links: Mapping[str, Any] | None = None,
    tags: Iterable[str] = (),
    feedback: str | None = None,
    reward_id: str | None = None,
    source: str = "code",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Record a reward (a number, or `{dimension: number}` with the primary first) and return
    the stored reward.

    The target defaults to the current span, or else the current `task()`'s execution. Give
    one explicitly to reward something later: `span_id` (+ `trace_id`), `trace_id`,
    `execution_id`, `task_id`, or `links` ({attribute: value} selectors, e.g.
    `{"gen_ai.response.id": rid}`). The target need not exist yet. `reward_id` (generated when
    omitted) makes the write idempotent, so retries never duplicate it.

    It is a synchronous call (one REST round trip in remote mode, retried if transient); from
    a busy event loop, `await asyncio.to_thread(emit_reward, ...)` keeps the loop free.

    Raises `TypeError`/`ValueError` for a bad value or no target, and `EvolutionClientError`
    when the server cannot be reached or refuses the reward. Without `configure()` the reward
    is emitted as an Agent Lightning `agentlightning.annotation` span on the installed
    TracerProvider instead, and the returned dict describes it (`"stored": False`).

    ```python
    @track_evolution
    def answer(q): ...
        emit_reward({"correct": 1.0, "brevity": 0.4}, tags=["auto-eval"])
    ```
    """
    number, dimensions = _normalize(value)
    if source not in REWARD_SOURCES:
        raise ValueError(f"source must be one of {', '.join(REWARD_SOURCES)}")
    target: dict[str, Any] = {
        key: item
        for key, item in (
            ("span_id", span_id),
            ("trace_id", trace_id),
            ("task_id", task_id),
            ("execution_id", execution_id),
            ("links", dict(links) if links else None),
        )
        if item
    }
    if not target:
        target = _default_target()
    payload: dict[str, Any] = {
        "value": number,
        "name": name,
        "dimensions": dimensions,
        "feedback": feedback,
        "source": source,
        "tags": [tags] if isinstance(tags, str) else list(tags),
        "metadata": dict(metadata) if metadata else None,
        "reward_id": reward_id or uuid.uuid4().hex,
        "span_id": None,
        "trace_id": None,
        "execution_id": None,
        "task_id": None,
        "links": None,
        **target,
    }
    sink = STATE.sink
    if sink is None:
        return _emit_annotation_span(payload)
    return sink.add_reward(payload)


def _emit_annotation_span(payload: dict[str, Any]) -> dict[str, Any]:
    """The unconfigured path: an Agent Lightning reward span on whatever provider is installed."""
    dimensions = payload["dimensions"] or {payload["name"]: payload["value"]}
    attributes: dict[str, Any] = {}
    for index, (dim, number) in enumerate(dimensions.items()):
        attributes[f"{AGL_REWARD}.{index}.name"] = dim
        attributes[f"{AGL_REWARD}.{index}.value"] = number
    selectors = dict(payload["links"] or {})
    for key in ("span_id", "trace_id"):
        if payload[key]:
            selectors[key] = payload[key]
    attributes.update(make_link_attributes(selectors))
    attributes.update(make_tag_attributes(payload["tags"]))
    attributes["evolution.reward.id"] = payload["reward_id"]
    attributes["evolution.reward.name"] = payload["name"]
    attributes["evolution.reward.source"] = payload["source"]
    for key in ("execution_id", "task_id", "feedback"):
        if payload[key]:
            attributes[f"evolution.reward.{key}"] = payload[key]
    tracer = STATE.tracer or get_tracer()
    span = tracer.start_span(AGL_ANNOTATION, attributes=attributes)
    if not span.is_recording():
        logger.warning(
            "emit_reward: no TracerProvider and no configure(); reward %s was not recorded",
            payload["reward_id"],
        )
    span.set_status(Status(StatusCode.OK))
    span.end()
    return {
        "id": payload["reward_id"],
        "name": payload["name"],
        "value": payload["value"],
        "dimensions": dict(dimensions),
        "feedback": payload["feedback"],
        "source": payload["source"],
        "tags": payload["tags"],
        "metadata": payload["metadata"] or {},
        "target": {
            k: payload[k]
            for k in ("span_id", "trace_id", "execution_id", "task_id", "links")
            if payload[k]
        },
        "resolved": False,
        "span_ids": [],
        "stored": False,
    }
