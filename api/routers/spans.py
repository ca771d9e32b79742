"""`/spans`: post spans as plain JSON (one, a batch, or an array), query them, tag them, and
list the rewards linked to one.

Span bodies can be large (up to `Settings.max_body_bytes`, 413 beyond), so these routes read
and decode the body themselves: a fast JSON decoder, a clear 400 for bytes that are not JSON,
415 for another content type, and 422 naming the field of the first invalid span.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from evolution_store.models import SpanBatchIn, SpanIn, TagsIn
from evolution_store.queries import SpanQuery

from ..deps import Cursor, Limit, Nanos, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/spans", tags=["spans"], dependencies=[ReadAuth])

_SPAN_SCHEMA = SpanIn.model_json_schema()
_BATCH_SCHEMA = {
    "title": "SpanBatchIn",
    "type": "object",
    "properties": {"spans": {"type": "array", "items": _SPAN_SCHEMA}},
    "required": ["spans"],
}


def _body_doc(*schemas: dict[str, Any]) -> dict[str, Any]:
    schema = schemas[0] if len(schemas) == 1 else {"oneOf": list(schemas)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


async def _read_json(request: Request) -> tuple[Any, int]:
    """The decoded body and its size in bytes. 415, 400 or 422 (empty) otherwise."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise HTTPException(
            415, "send spans as application/json (OTLP protobuf goes to /v1/traces)"
        )
    raw = await request.body()
    if not raw.strip():
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "a JSON body is required"}]
        )
    try:
        return orjson.loads(raw), len(raw)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses integers beyond 64 bits and NaN; the standard decoder takes them, and a
    # span with such a value gets a 422 for the field rather than a 400 for the whole body.
    try:
        return json.loads(raw), len(raw)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(400, "request body is not valid JSON") from exc


def _as_batch(payload: Any) -> list[SpanIn]:
    if isinstance(payload, list):
        payload = {"spans": payload}
    return SpanBatchIn.model_validate(payload).spans


async def _ingest(store: Any, spans: list[SpanIn], size: int) -> dict[str, Any]:
    records = [span.to_record() for span in spans]
    result = await store.ingest(records, size_bytes=size)
    answer: dict[str, Any] = {"accepted": result.accepted, "duplicates": result.duplicates}
    if result.rejected:  # spans the database refused, each alone; the others are stored
        answer["rejected"] = result.rejected
    if len(records) == 1:
        answer["trace_id"] = records[0].trace_id
        answer["span_id"] = records[0].span_id
    return answer


@router.post("", openapi_extra=_body_doc(_SPAN_SCHEMA, _BATCH_SCHEMA))
async def post_spans(request: Request, store: StoreDep) -> dict[str, Any]:
    """Store one span (a span object), or many (`{"spans": [...]}` or a JSON array).

    Answers after the spans are committed: `{accepted, duplicates}` (and `rejected`, spans the
    database refused), plus the `trace_id` and `span_id` when one span was posted (ids left out
    are generated). Idempotent on
    (`trace_id`, `span_id`): posting the same span again counts it as a duplicate.
    """
    payload, size = await _read_json(request)
    if isinstance(payload, list) or (isinstance(payload, dict) and "spans" in payload):
        spans = _as_batch(payload)
    else:
        spans = [SpanIn.model_validate(payload)]
    return await _ingest(store, spans, size)


@router.post("/batch", openapi_extra=_body_doc(_BATCH_SCHEMA))
async def post_span_batch(request: Request, store: StoreDep) -> dict[str, Any]:
    """Store a batch `{"spans": [...]}` (or a JSON array) in one commit: `{accepted,
    duplicates}`."""
    payload, size = await _read_json(request)
    return await _ingest(store, _as_batch(payload), size)


@router.get("")
async def list_spans(
    store: StoreDep,
    task_id: Text = None,
    execution_id: Text = None,
    trace_id: Text = None,
    name: Text = None,
    status: Literal["unset", "ok", "error"] | None = None,
    tag: Text = None,
    attribute: Annotated[
        list[str],
        Query(description="`key:value`, repeatable; every pair must match an attribute"),
    ] = [],  # noqa: B006 - FastAPI copies query defaults
    start_after: Nanos = None,
    start_before: Nanos = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Spans matching every filter given, in storage order. Follow `next_cursor`."""
    attributes: dict[str, str] = {}
    for pair in attribute:
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("query", "attribute"),
                        "msg": f"expected key:value, got {pair[:100]!r}",
                    }
                ]
            )
        attributes[key] = value
    query = SpanQuery(
        task_id=task_id,
        execution_id=execution_id,
        trace_id=trace_id,
        name=name,
        status=status,
        tag=tag,
        attributes=attributes,
        start_after=start_after,
        start_before=start_before,
        cursor=cursor,
        limit=limit,
    )
    page = await store.list_spans(query)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/{span_id}")
async def get_span(span_id: str, store: StoreDep, trace_id: Text = None) -> dict[str, Any]:
    """One span. Span ids are unique only within a trace: pass `trace_id` to disambiguate."""
    return await store.get_span(span_id, trace_id=trace_id)


@router.post("/{span_id}/tags")
async def add_span_tags(
    span_id: str, body: TagsIn, store: StoreDep, trace_id: Text = None
) -> dict[str, Any]:
    """Add tags to a span (existing tags stay). Returns the span."""
    return await store.add_span_tags(span_id, body.tags, trace_id=trace_id)


@router.get("/{span_id}/rewards")
async def span_rewards(span_id: str, store: StoreDep, trace_id: Text = None) -> dict[str, Any]:
    """Rewards linked to the span, whichever way they targeted it."""
    items = await store.span_rewards(span_id, trace_id=trace_id)
    return {"items": items, "next_cursor": None}
