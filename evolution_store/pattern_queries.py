"""Reads of the pattern learner's rows: one pattern, and lists the way a person reads them —
the strongest evidence first (q ascending), then the largest effect."""

from __future__ import annotations

import math
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import InvalidInput, NotFound
from .pattern_writes import PATTERN_KINDS, PATTERN_STATUSES
from .queries import Page, check_limit, decode_cursor, encode_cursor
from .schema import patterns

#: what `context=` takes, besides "overall"
CONTEXT_PREFIXES = ("agent:", "task:")


def pattern_dict(m: Any) -> dict[str, Any]:
    """A stored row as the Pattern record (DESIGN §7)."""
    return {
        "id": m["id"],
        "kind": m["kind"],
        "context": orjson.loads(m["context"]),
        "condition": m["condition"],
        "feature": orjson.loads(m["feature"]),
        "effect": orjson.loads(m["effect"]),
        "evidence": orjson.loads(m["evidence"]),
        "explanation": m["explanation"],
        "status": m["status"],
        "first_seen": m["first_seen"],
        "last_seen": m["last_seen"],
        "applied": None if m["applied"] is None else orjson.loads(m["applied"]),
    }


async def get_pattern(conn: AsyncConnection, pattern_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(patterns).where(patterns.c.id == pattern_id))).first()
    if row is None:
        raise NotFound(f"pattern {pattern_id!r} not found")
    return pattern_dict(row._mapping)


def context_filter(context: str) -> list[sa.ColumnElement[bool]]:
    """`context=`: "overall" (no agent, no task name), "agent:<name>" (the agent's own
    context: that agent, no task name) or "task:<name>" (that task name, whatever the agent).
    Anything else raises `InvalidInput`."""
    if context == "overall":
        return [patterns.c.agent.is_(None), patterns.c.task_name.is_(None)]
    if context.startswith("agent:") and len(context) > len("agent:"):
        return [patterns.c.agent == context.removeprefix("agent:"), patterns.c.task_name.is_(None)]
    if context.startswith("task:") and len(context) > len("task:"):
        return [patterns.c.task_name == context.removeprefix("task:")]
    raise InvalidInput(
        'context must be "overall", "agent:<name>" or "task:<name>"', field="context"
    )


def _choice(value: str, allowed: tuple[str, ...], field: str) -> str:
    if value not in allowed:
        raise InvalidInput(f"{field} must be one of {', '.join(allowed)}", field=field)
    return value


async def list_patterns(
    conn: AsyncConnection,
    *,
    agent: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    context: str | None = None,
    max_q: float | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Patterns by q-value ascending, then effect size (|difference|) descending, then id.
    `agent`: every context of that agent (its own and its task names'); `context`: see
    `context_filter`; `max_q`: q ≤ max_q. Raises `InvalidInput` for an unknown kind, status
    or context, a limit outside 1–1000, or a cursor this server did not issue."""
    check_limit(limit)
    query = sa.select(patterns)
    if agent is not None:
        query = query.where(patterns.c.agent == agent)
    if kind is not None:
        query = query.where(patterns.c.kind == _choice(kind, PATTERN_KINDS, "kind"))
    if status is not None:
        query = query.where(patterns.c.status == _choice(status, PATTERN_STATUSES, "status"))
    if context is not None:
        query = query.where(*context_filter(context))
    if max_q is not None:
        if isinstance(max_q, bool) or not math.isfinite(max_q):
            raise InvalidInput("max_q must be a finite number", field="max_q")
        query = query.where(patterns.c.q_value <= max_q)
    if cursor:
        query = query.where(_after(*_cursor_values(cursor)))
    rows = (
        await conn.execute(
            query.order_by(patterns.c.q_value, patterns.c.effect_size.desc(), patterns.c.id).limit(
                limit + 1
            )
        )
    ).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]._mapping
        next_cursor = encode_cursor([last["q_value"], last["effect_size"], last["id"]])
    return Page([pattern_dict(row._mapping) for row in rows], next_cursor)


def _cursor_values(cursor: str) -> tuple[float, float, str]:
    """(q, effect size, id) of the last row of the previous page. A forged cursor gets a 422,
    never reaches the database as a type error."""
    q_value, effect_size, pattern_id = decode_cursor(cursor, 3)
    numbers = (q_value, effect_size)
    fits = all(
        isinstance(n, int | float) and not isinstance(n, bool) and math.isfinite(n) for n in numbers
    )
    fits = fits and isinstance(pattern_id, str) and pattern_id.isprintable()
    if not fits:
        raise InvalidInput("cursor is not one this server issued", field="cursor")
    return float(q_value), float(effect_size), pattern_id


def _after(q_value: float, effect_size: float, pattern_id: str) -> sa.ColumnElement[bool]:
    # The sort mixes directions, so the keyset is spelled out rather than a row comparison.
    q, size, key = patterns.c.q_value, patterns.c.effect_size, patterns.c.id
    return sa.or_(
        q > q_value,
        sa.and_(q == q_value, size < effect_size),
        sa.and_(q == q_value, size == effect_size, key > pattern_id),
    )
