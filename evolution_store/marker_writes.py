"""Markers: spans that say when something changed (DESIGN §7), written by the change itself.

Approving or rolling back a prompt, moving a label, starting or stopping an experiment each
add a span named `evolution.marker` in the same transaction as the change, through the same
span path as every other span: timelines and learners read markers like any other span, and
a change is never stored without its marker (or the marker without the change).
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from .group_commit import WriteContext
from .models import SpanRecord
from .promote import PriceTable
from .span_rows import prepare_spans
from .span_writes import apply_span_batches

MARKER_SPAN = "evolution.marker"
KIND = "evolution.marker.kind"
BEFORE = "evolution.marker.before"
AFTER = "evolution.marker.after"
AGENT = "gen_ai.agent.name"
#: markers of one agent share a task, so its timeline is one task's spans
TASK_PREFIX = "markers:"


async def write_marker(
    conn: AsyncConnection,
    ctx: WriteContext,
    *,
    agent: str,
    kind: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    attributes: dict[str, Any] | None = None,
) -> str:
    """Store a marker span for `agent` inside the caller's transaction; returns its span id.

    `before` and `after` describe what changed (e.g. the production prompt's id and version);
    `attributes` add anything a reader may filter on (`evolution.prompt.id`, …)."""
    span_id = secrets.token_hex(8)
    values: dict[str, Any] = {
        KIND: kind,
        AGENT: agent,
        "evolution.task.id": TASK_PREFIX + agent,
        **(attributes or {}),
    }
    if before is not None:
        values[BEFORE] = orjson.dumps(before).decode()
    if after is not None:
        values[AFTER] = orjson.dumps(after).decode()
    record = SpanRecord(
        trace_id=secrets.token_hex(16),
        span_id=span_id,
        name=MARKER_SPAN,
        start_time=ctx.now_ns,
        end_time=ctx.now_ns,
        attributes=values,
        status_code="ok",
    )
    # Costs and indexed keys do not matter for a marker: the writer re-checks the keys.
    batch = prepare_spans([record], PriceTable(), frozenset())
    await apply_span_batches(conn, ctx, [batch])
    return span_id
