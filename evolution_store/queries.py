"""Every read of tasks, executions, spans and rewards: filters and keyset pagination.

Summaries and agent stats are in `aggregates`; rows become dicts in `rows`.

Reads run on the reader engine's own connections and never wait behind the writer. Lists
use keyset pagination: the cursor is the sort key of the last row, opaque to callers.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import InvalidInput, NotFound
from .rows import MAX_LINKED_IDS, execution_dict, reward_dict, span_dict, task_dict
from .schema import (
    digest_matches,
    executions,
    indexed_keys,
    reward_links,
    reward_span_tags,
    reward_tags,
    rewards,
    span_id_equals,
    span_tags,
    spans,
    task_tags,
    tasks,
)
from .span_rows import attribute_digest
from .sql import json_member_text


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_cursor: str | None = None


@dataclass
class SpanQuery:
    task_id: str | None = None
    execution_id: str | None = None
    trace_id: str | None = None
    name: str | None = None
    status: str | None = None
    tag: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    start_after: int | None = None
    start_before: int | None = None
    cursor: str | None = None
    limit: int = 100


@dataclass
class RewardQuery:
    tag: str | None = None
    tag_scope: str = "any"
    name: str | None = None
    span_id: str | None = None
    trace_id: str | None = None
    execution_id: str | None = None
    task_id: str | None = None
    resolved: bool | None = None
    cursor: str | None = None
    limit: int = 100


# -- cursors ---------------------------------------------------------------------------------


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued", field="cursor") from exc
    if not isinstance(values, list) or len(values) != width:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return values


def _typed(values: list[Any], order: list[sa.ColumnElement[Any]]) -> list[Any]:
    """Refuse cursor values whose type does not fit their column: a forged cursor must get
    a 422, never reach the database as a type error."""
    for value, column in zip(values, order, strict=True):
        if isinstance(column.type, sa.Integer):
            fits = isinstance(value, int) and not isinstance(value, bool)
            fits = fits and -(2**63) <= value < 2**63
        else:
            fits = isinstance(value, str) and "\x00" not in value and value.isprintable()
        if not fits:
            raise InvalidInput("cursor is not one this server issued", field="cursor")
    return values


def check_limit(limit: int) -> int:
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000", field="limit")
    return limit


async def keyset_page(
    conn: AsyncConnection,
    query: sa.Select[Any],
    order: list[sa.ColumnElement[Any]],
    *,
    cursor: str | None,
    limit: int,
    descending: bool = False,
) -> tuple[list[Any], str | None]:
    """Keyset pagination over `order` (whose last column must be unique)."""
    check_limit(limit)
    if cursor:
        values = _typed(decode_cursor(cursor, len(order)), order)
        keyset = sa.tuple_(*order)
        bound = sa.tuple_(*[sa.literal(v) for v in values])
        query = query.where(keyset < bound if descending else keyset > bound)
    ordering = [column.desc() if descending else column.asc() for column in order]
    rows = (await conn.execute(query.order_by(*ordering).limit(limit + 1))).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]._mapping
        next_cursor = encode_cursor([last[column.key] for column in order])
    return rows, next_cursor


# -- tasks and executions --------------------------------------------------------------------


async def get_task(conn: AsyncConnection, task_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(tasks).where(tasks.c.id == task_id))).first()
    if row is None:
        raise NotFound(f"task {task_id!r} not found")
    return task_dict(row._mapping)


async def list_tasks(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    tag: str | None = None,
    agent: str | None = None,
    since: int | None = None,
    until: int | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Tasks newest first, keyset paged; `since`/`until` bound their creation time (ns);
    `agent` keeps the tasks with a span of that agent (checked task by task, newest first,
    through the spans' task index, so a common agent's first page is quick)."""
    query = sa.select(tasks)
    if status:
        query = query.where(tasks.c.status == status)
    if tag:
        query = query.where(
            tasks.c.id.in_(sa.select(task_tags.c.task_id).where(task_tags.c.tag == tag))
        )
    if since is not None:
        query = query.where(tasks.c.created_at >= since)
    if until is not None:
        query = query.where(tasks.c.created_at < until)
    if agent:
        query = query.where(
            sa.exists(
                sa.select(sa.literal(1)).where(
                    spans.c.task_id == tasks.c.id, spans.c.agent == agent
                )
            )
        )
    rows, next_cursor = await keyset_page(
        conn, query, [tasks.c.created_at, tasks.c.id], cursor=cursor, limit=limit, descending=True
    )
    return Page([task_dict(row._mapping) for row in rows], next_cursor)


async def get_execution(conn: AsyncConnection, execution_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(executions).where(executions.c.id == execution_id))).first()
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    return execution_dict(row._mapping)


async def list_executions(conn: AsyncConnection, task_id: str) -> list[dict[str, Any]]:
    await get_task(conn, task_id)
    rows = await conn.execute(
        sa.select(executions).where(executions.c.task_id == task_id).order_by(executions.c.attempt)
    )
    return [execution_dict(row._mapping) for row in rows]


async def agent_tasks(
    conn: AsyncConnection, agent: str, *, limit: int = 200
) -> list[dict[str, Any]]:
    """Up to `limit` tasks that `agent`'s spans ran under and that have an input: failed ones
    first, then the newest. A task belongs to an agent through its spans (the promoted
    `agent` column), since tasks carry no agent of their own. This is what
    `train apo --dataset store:agent=NAME` optimises on: failures are what a new prompt
    must fix, so a limit keeps them before successes."""
    check_limit(limit)
    ran = sa.select(spans.c.task_id).where(spans.c.agent == agent)
    failed_first = sa.case((tasks.c.status == "failed", 0), else_=1)
    query = (
        sa.select(tasks)
        .where(tasks.c.id.in_(ran), tasks.c.input.is_not(None))
        .order_by(failed_first, tasks.c.created_at.desc(), tasks.c.id.desc())
        .limit(limit)
    )
    return [task_dict(row._mapping) for row in await conn.execute(query)]


# -- spans -----------------------------------------------------------------------------------


def attribute_equals(
    conn: AsyncConnection, key: str, value: str, indexed: set[str]
) -> sa.ColumnElement[bool]:
    """`attributes[key] == value` (compared as canonical text). Indexed keys use the attribute
    index; others fall back to a JSON scan (say so in the docs: index keys you filter on)."""
    if key in indexed:
        return spans.c.pk.in_(digest_matches(attribute_digest(key, value)))
    return json_member_text(conn.dialect.name, spans.c.attributes, key) == value


async def _indexed(conn: AsyncConnection) -> set[str]:
    return {row[0] for row in await conn.execute(sa.select(indexed_keys.c.key))}


async def list_spans(conn: AsyncConnection, q: SpanQuery) -> Page:
    query = sa.select(spans)
    if q.task_id:
        query = query.where(spans.c.task_id == q.task_id)
    if q.execution_id:
        # Spans are indexed by (task_id, sequence); naming the execution's task uses it.
        query = query.where(
            spans.c.execution_id == q.execution_id, spans.c.task_id == _task_of(q.execution_id)
        )
    if q.trace_id:
        query = query.where(spans.c.trace_id == q.trace_id)
    if q.name:
        query = query.where(spans.c.name == q.name)
    if q.status:
        query = query.where(spans.c.status_code == q.status)
    if q.tag:
        query = query.where(
            spans.c.pk.in_(sa.select(span_tags.c.span_pk).where(span_tags.c.tag == q.tag))
        )
    if q.attributes:
        indexed = await _indexed(conn)
        for key, value in q.attributes.items():
            query = query.where(attribute_equals(conn, key, value, indexed))
    if q.start_after is not None:
        query = query.where(spans.c.start_time >= q.start_after)
    if q.start_before is not None:
        query = query.where(spans.c.start_time < q.start_before)
    if q.task_id or q.execution_id:
        order = [spans.c.sequence, spans.c.pk]
    elif q.trace_id:
        order = [spans.c.start_time, spans.c.pk]
    else:
        order = [spans.c.pk]
    rows, next_cursor = await keyset_page(conn, query, order, cursor=q.cursor, limit=q.limit)
    return Page([span_dict(row._mapping) for row in rows], next_cursor)


def _task_of(execution_id: str) -> Any:
    return sa.select(executions.c.task_id).where(executions.c.id == execution_id).scalar_subquery()


async def find_span(conn: AsyncConnection, span_id: str, trace_id: str | None) -> Any:
    span_id, trace_id = span_identity(span_id, trace_id)
    query = sa.select(spans).where(span_id_equals(span_id))
    if trace_id:
        query = query.where(spans.c.trace_id == trace_id)
    rows = (await conn.execute(query.limit(2))).all()
    if not rows:
        raise NotFound(f"span {span_id!r} not found")
    if len(rows) > 1:
        raise InvalidInput("span id is ambiguous; pass trace_id", field="trace_id")
    return rows[0]


async def get_span(conn: AsyncConnection, span_id: str, trace_id: str | None = None) -> dict:
    return span_dict((await find_span(conn, span_id, trace_id))._mapping)


def span_identity(span_id: str, trace_id: str | None) -> tuple[str, str | None]:
    """Validated ids for a span lookup: a malformed id is a 422 naming the field."""
    from .models import normalize_span_id, normalize_trace_id

    return normalize_span_id(span_id), None if trace_id is None else normalize_trace_id(trace_id)


async def span_rewards(
    conn: AsyncConnection, span_id: str, trace_id: str | None = None
) -> list[dict[str, Any]]:
    pk = (await find_span(conn, span_id, trace_id))._mapping["pk"]
    rows = (
        await conn.execute(
            sa.select(rewards)
            .where(
                rewards.c.pk.in_(
                    sa.select(reward_links.c.reward_pk).where(reward_links.c.span_pk == pk)
                )
            )
            .order_by(rewards.c.pk)
        )
    ).all()
    return await _with_links(conn, rows)


# -- rewards ---------------------------------------------------------------------------------


def _linked_spans_where(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    """Rewards linked to at least one span matching `condition`."""
    return rewards.c.pk.in_(
        sa.select(reward_links.c.reward_pk)
        .join(spans, spans.c.pk == reward_links.c.span_pk)
        .where(condition)
    )


def reward_filters(q: RewardQuery) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if q.name:
        where.append(rewards.c.name == q.name)
    if q.tag:
        own = rewards.c.pk.in_(sa.select(reward_tags.c.reward_pk).where(reward_tags.c.tag == q.tag))
        on_spans = rewards.c.pk.in_(
            sa.select(reward_span_tags.c.reward_pk).where(reward_span_tags.c.tag == q.tag)
        )
        scopes = {"reward": own, "span": on_spans, "any": sa.or_(own, on_spans)}
        if q.tag_scope not in scopes:
            raise InvalidInput("tag_scope must be any, reward or span", field="tag_scope")
        where.append(scopes[q.tag_scope])
    if q.span_id:
        where.append(
            sa.or_(
                rewards.c.target_span_id == q.span_id,
                _linked_spans_where(span_id_equals(q.span_id)),
            )
        )
    if q.trace_id:
        where.append(
            sa.or_(
                rewards.c.target_trace_id == q.trace_id,
                _linked_spans_where(spans.c.trace_id == q.trace_id),
            )
        )
    if q.execution_id:
        in_execution = sa.and_(
            spans.c.task_id == _task_of(q.execution_id), spans.c.execution_id == q.execution_id
        )
        where.append(
            sa.or_(
                rewards.c.target_execution_id == q.execution_id, _linked_spans_where(in_execution)
            )
        )
    if q.task_id:
        where.append(
            sa.or_(
                rewards.c.target_task_id == q.task_id,
                _linked_spans_where(spans.c.task_id == q.task_id),
            )
        )
    if q.resolved is not None:
        where.append(
            rewards.c.resolved_at.is_not(None) if q.resolved else rewards.c.resolved_at.is_(None)
        )
    return where


async def _with_links(conn: AsyncConnection, rows: list[Any]) -> list[dict[str, Any]]:
    linked: dict[int, list[str]] = defaultdict(list)
    pks = [row._mapping["pk"] for row in rows]
    if pks:
        result = await conn.execute(
            sa.select(reward_links.c.reward_pk, reward_links.c.span_id)
            .where(reward_links.c.reward_pk.in_(pks))
            .order_by(reward_links.c.reward_pk, reward_links.c.span_pk)
        )
        for reward_pk, span_id in result:
            linked[reward_pk].append(span_id)
    items = []
    for row in rows:
        ids = linked.get(row._mapping["pk"], [])
        items.append(reward_dict(row._mapping, ids[:MAX_LINKED_IDS], len(ids)))
    return items


async def get_reward(conn: AsyncConnection, reward_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(rewards).where(rewards.c.id == reward_id))).first()
    if row is None:
        raise NotFound(f"reward {reward_id!r} not found")
    return (await _with_links(conn, [row]))[0]


async def list_rewards(conn: AsyncConnection, q: RewardQuery) -> Page:
    query = sa.select(rewards).where(*reward_filters(q))
    rows, next_cursor = await keyset_page(
        conn, query, [rewards.c.pk], cursor=q.cursor, limit=q.limit, descending=True
    )
    return Page(await _with_links(conn, rows), next_cursor)
