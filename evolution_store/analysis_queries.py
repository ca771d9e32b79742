"""The lab technician's reads (`evolution_store.learn.analysis`): what a window of executions
did, aggregated in the database wherever SQL can.

The window is the executions created in [since, until); with an agent, those with at least
one span of that agent. Their spans are reached through `ix_spans_task_sequence` (by task),
never by scanning the spans of other executions. Markers' own executions (tasks named
`markers:<agent>`) are left out: a marker is a note about the work, not work.

Counts are GROUP BY queries. Percentiles, step totals and error grouping need the rows
themselves: those are streamed in partitions (`STREAM_ROWS`) to a caller's fold, durations in
an order that keeps at most one operation's values in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .marker_writes import MARKER_SPAN, TASK_PREFIX
from .schema import executions, spans, task_tags, tasks

#: rows per partition of a streamed read
STREAM_ROWS = 10_000
#: execution statuses that have an outcome; `running` ones are counted but not judged
FINISHED = ("succeeded", "failed", "timeout")


def _window(since: int, until: int, agent: str | None) -> list[sa.ColumnElement[bool]]:
    """The conditions on `executions` that make the window."""
    conditions = [
        executions.c.created_at >= since,
        executions.c.created_at < until,
        ~executions.c.task_id.startswith(TASK_PREFIX, autoescape=True),
    ]
    if agent is not None:
        # An alias: the statements that use the window read `spans` themselves.
        own = spans.alias("agent_spans")
        ran = sa.select(own.c.pk).where(
            own.c.task_id == executions.c.task_id,
            own.c.execution_id == executions.c.id,
            own.c.agent == agent,
        )
        conditions.append(sa.exists(ran))
    return conditions


def _window_spans() -> sa.Join:
    return spans.join(
        executions,
        sa.and_(executions.c.task_id == spans.c.task_id, executions.c.id == spans.c.execution_id),
    )


async def execution_counts(
    conn: AsyncConnection, *, since: int, until: int, agent: str | None = None
) -> dict[str, int]:
    """status -> number of the window's executions (statuses with none are absent)."""
    query = (
        sa.select(executions.c.status, sa.func.count())
        .where(*_window(since, until, agent))
        .group_by(executions.c.status)
    )
    return {status: count for status, count in (await conn.execute(query)).all()}


async def group_outcomes(
    conn: AsyncConnection, *, since: int, until: int, agent: str | None = None
) -> list[tuple[str, str, int, int]]:
    """(kind, name, finished, succeeded) for each task name (kind "task") and task tag (kind
    "tag") among the window's finished executions."""
    finished = executions.c.status.in_(FINISHED)
    succeeded = sa.func.sum(sa.case((executions.c.status == "succeeded", 1), else_=0))
    where = [*_window(since, until, agent), finished]
    by_name = (
        sa.select(sa.literal("task"), tasks.c.name, sa.func.count(), succeeded)
        .select_from(executions.join(tasks, tasks.c.id == executions.c.task_id))
        .where(*where)
        .group_by(tasks.c.name)
    )
    by_tag = (
        sa.select(sa.literal("tag"), task_tags.c.tag, sa.func.count(), succeeded)
        .select_from(executions.join(task_tags, task_tags.c.task_id == executions.c.task_id))
        .where(*where)
        .group_by(task_tags.c.tag)
    )
    rows = (await conn.execute(sa.union_all(by_name, by_tag))).all()
    return [(kind, name, int(n), int(ok or 0)) for kind, name, n, ok in rows]


async def window_spans(
    conn: AsyncConnection,
    *,
    since: int,
    until: int,
    agent: str | None = None,
    consume: Callable[[list[Any]], None],
) -> None:
    """Call `consume(rows)` with every timed span of the window but markers, a partition at a
    time: rows of (operation, name, agent, is root, span_id, duration_ns), the operation being
    `spans.operation`, else the span's name. Ordered by operation, then duration: a fold
    holds one operation's durations at a time, and each arrives sorted."""
    operation = sa.func.coalesce(spans.c.operation, spans.c.name)
    query = (
        sa.select(
            operation,
            spans.c.name,
            spans.c.agent,
            spans.c.parent_span_id.is_(None),
            spans.c.span_id,
            spans.c.duration_ns,
        )
        .select_from(_window_spans())
        .where(
            *_window(since, until, agent),
            spans.c.duration_ns.is_not(None),
            spans.c.name != MARKER_SPAN,
        )
        .order_by(operation, spans.c.duration_ns)
    )
    await _stream(conn, query, consume)


async def error_spans(
    conn: AsyncConnection,
    *,
    since: int,
    until: int,
    agent: str | None = None,
    consume: Callable[[list[Any]], None],
) -> None:
    """Call `consume(rows)` with the window's error spans, a partition at a time: rows of
    (span_id, name, agent, status_message, events JSON text)."""
    query = (
        sa.select(
            spans.c.span_id, spans.c.name, spans.c.agent, spans.c.status_message, spans.c.events
        )
        .select_from(_window_spans())
        .where(*_window(since, until, agent), spans.c.status_code == "error")
    )
    await _stream(conn, query, consume)


async def _stream(
    conn: AsyncConnection, query: sa.Select[Any], consume: Callable[[list[Any]], None]
) -> None:
    """`consume` each partition of the rows, as the driver fetches them."""
    result = await conn.stream(query.execution_options(yield_per=STREAM_ROWS))
    async for partition in result.partitions(STREAM_ROWS):
        consume(list(partition))
