"""From a decoded span to the columns queries and learners need: its task and execution ids,
tags, and promoted columns (agent, operation, model, tokens, cost, duration).

Every ingest path reaches these through `span_rows.prepare_spans`. The rules come from
OTLP_NOTES ("Attributes worth promoting"): the first present source wins, and tokens are kept
only on LLM spans because agent spans may repeat their children's totals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .models import SpanRecord, clean_text

TASK_ID_KEYS = ("evolution.task.id", "agentlightning.rollout_id")
EXECUTION_ID_KEYS = ("evolution.execution.id", "agentlightning.attempt_id")
_ID_KEYS = frozenset(TASK_ID_KEYS + EXECUTION_ID_KEYS)
TAGS_KEY = "evolution.tags"
AL_TAG_PREFIX = "agentlightning.tag."
_AL_FIRST_TAG = AL_TAG_PREFIX + "0"

AGENT_KEYS = ("gen_ai.agent.name", "agent.name", "evolution.agent")
OPERATION_KEYS = ("gen_ai.operation.name", "openinference.span.kind")
MODEL_KEYS = ("gen_ai.response.model", "gen_ai.request.model", "llm.model_name")
INPUT_TOKEN_KEYS = (
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.prompt_tokens",
    "llm.token_count.prompt",
)
OUTPUT_TOKEN_KEYS = (
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.completion_tokens",
    "llm.token_count.completion",
)
LLM_OPERATIONS = frozenset(
    {"chat", "text_completion", "generate_content", "embeddings", "llm", "embedding"}
)


def first(attributes: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    """The value of the first of `keys` present and not empty, else None."""
    for key in keys:
        value = attributes.get(key)
        if value is not None and value != "":
            return value
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def ids_from_attributes(record: SpanRecord) -> tuple[str | None, str | None]:
    """(task id, execution id) from the resource first, then the span (DESIGN §2)."""
    task_id = _as_id(record.task_id)
    execution_id = _as_id(record.execution_id)
    for source in (record.resource, record.attributes):
        # Most spans name neither id: one pass over the keys in C settles those.
        if _ID_KEYS.isdisjoint(source):
            continue
        task_id = task_id or _as_id(first(source, TASK_ID_KEYS))
        execution_id = execution_id or _as_id(first(source, EXECUTION_ID_KEYS))
    return task_id, execution_id


def _as_id(value: Any) -> str | None:
    if value is None:
        return None
    text = clean_text(str(value).strip())
    return text[:200] or None


def tags_from_attributes(record: SpanRecord) -> list[str]:
    """Tags given explicitly, in `evolution.tags`, or Agent Lightning's `agentlightning.tag.<i>`."""
    attributes = record.attributes
    carried = attributes.get(TAGS_KEY)
    # Agent Lightning numbers its tags from 0; skip the scan when there is none.
    numbered = _AL_FIRST_TAG in attributes
    if not record.tags and carried is None and not numbered:
        return []
    tags = list(record.tags)
    if isinstance(carried, str):
        tags.append(carried)
    elif isinstance(carried, (list, tuple)):  # a tuple checks faster than a union
        tags.extend(map(str, carried))
    if numbered:
        for key, value in attributes.items():
            if key.startswith(AL_TAG_PREFIX) and isinstance(value, str):
                tags.append(value)
    return unique_tags(tags)


def unique_tags(tags: list[str]) -> list[str]:
    """Non-empty tags cut to 200 characters and cleaned (`clean_text`), without repeats (rows
    must be unique), in order. Deduplicated after cutting and cleaning: two may become one."""
    joined = "".join(tags)
    if len(joined) <= 200 and joined.isascii() and "\x00" not in joined and "" not in tags:
        return list(dict.fromkeys(tags))  # the usual tags: nothing to cut, clean or drop
    return list(dict.fromkeys([clean_text(tag[:200]) for tag in tags if tag]))


class PriceTable:
    """USD per million tokens by model name, for spans that do not carry `llm.cost.total`."""

    def __init__(self, prices: Mapping[str, tuple[float, float]] | None = None) -> None:
        self.prices = dict(prices or {})

    def cost(
        self, model: str | None, input_tokens: int | None, output_tokens: int | None
    ) -> float | None:
        if (
            not model
            or model not in self.prices
            or (input_tokens is None and output_tokens is None)
        ):
            return None
        per_input, per_output = self.prices[model]
        return ((input_tokens or 0) * per_input + (output_tokens or 0) * per_output) / 1_000_000


#: what `promoted_columns` returns, in order
PROMOTED_COLUMNS = (
    "agent",
    "operation",
    "model",
    "input_tokens",
    "output_tokens",
    "cost",
    "duration_ns",
)


def promoted_columns(record: SpanRecord, prices: PriceTable) -> tuple[Any, ...]:
    """The span's promoted column values, in `PROMOTED_COLUMNS` order (a tuple, not a dict:
    this runs for every span ingested)."""
    attributes = record.attributes
    operation = first(attributes, OPERATION_KEYS)
    operation = str(operation)[:100] if operation is not None else None
    agent = first(attributes, AGENT_KEYS) or record.resource.get("service.name")
    model = first(attributes, MODEL_KEYS)
    model = str(model)[:500] if model is not None else None
    is_llm = operation is not None and operation.lower() in LLM_OPERATIONS
    input_tokens = _as_int(first(attributes, INPUT_TOKEN_KEYS)) if is_llm else None
    output_tokens = _as_int(first(attributes, OUTPUT_TOKEN_KEYS)) if is_llm else None
    cost = attributes.get("llm.cost.total")
    if cost is not None:
        cost = _as_float(cost)
    if cost is None and is_llm:
        cost = prices.cost(model, input_tokens, output_tokens)
    duration = None
    if record.end_time is not None and record.end_time >= record.start_time:
        duration = record.end_time - record.start_time
    return (
        clean_text(str(agent)[:500]) if agent is not None else None,
        clean_text(operation) if operation else None,
        clean_text(model) if model else None,
        input_tokens,
        output_tokens,
        cost,
        duration,
    )
