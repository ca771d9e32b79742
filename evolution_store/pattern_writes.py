"""Writes of the pattern learner — each an operation the group-commit writer runs in its
transaction: a mining run's patterns are stored, and what it no longer finds marked stale, in
one commit, so a reader never sees half a run.

A pattern's row is keyed by its condition and context (`pattern_id`): mining again updates
the same row, never adds a second.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import Conflict, InvalidInput, NotFound
from .group_commit import WriteContext
from .schema import patterns
from .span_rows import dumps
from .sql import in_chunks

PATTERN_KINDS = ("success", "failure", "optimization")
PATTERN_STATUSES = ("active", "stale", "applied")
#: the parts of a Pattern record a mining run supplies (status, times and `applied` are the
#: store's)
_REQUIRED = ("kind", "context", "condition", "feature", "effect", "evidence", "explanation")


def pattern_id(context: dict[str, Any], condition: str) -> str:
    """The id of a condition in a context: the first 16 hex digits of the SHA-256 of the
    canonical JSON (sorted keys, no spaces) of `[context, condition]`. Stable across runs."""
    data = orjson.dumps([context, condition], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()[:16]


async def save_patterns(
    conn: AsyncConnection,
    ctx: WriteContext,
    found: list[dict[str, Any]],
    *,
    scope: dict[str, Any],
) -> dict[str, int]:
    """Store one mining run's patterns and retire what it no longer finds.

    A new id is inserted (`first_seen` = `last_seen` = now, status `active`); a stored one
    gets the run's kind, effect, evidence, explanation, q-value and `last_seen` = now, and is
    `active` again unless it was `applied`. Then every `active` row of the mined `scope` —
    `{"agent": A}`: the rows whose context's agent is A; `{"agent": None}`: every row — that
    this run did not find becomes `stale`. An id given twice keeps the pattern with the lower
    q-value. Returns the counts `{"new", "updated", "stale"}`.

    Raises `InvalidInput` for a pattern missing a part, of an unknown kind, with a q-value
    outside [0, 1], or — in an agent's scope — of another context's agent (its row would not
    be the agent's to retire)."""
    scope_agent = _scope_agent(scope)
    rows = _unique_rows(found, scope_agent, ctx.now_ns, secrets.token_hex(8))
    stored: dict[str, str] = {}
    for chunk in in_chunks(list(rows), 1000):
        result = await conn.execute(
            sa.select(patterns.c.id, patterns.c.status).where(patterns.c.id.in_(chunk))
        )
        stored.update({row[0]: row[1] for row in result})
    new = [row for pattern_id_, row in rows.items() if pattern_id_ not in stored]
    if new:
        await conn.execute(sa.insert(patterns), new)
    updated = [row for pattern_id_, row in rows.items() if pattern_id_ in stored]
    if updated:
        await conn.execute(_UPDATE, [_update_params(row, stored[row["id"]]) for row in updated])
    stale = await _retire(conn, scope_agent, list(rows))
    return {"new": len(new), "updated": len(updated), "stale": stale}


def _scope_agent(scope: dict[str, Any]) -> str | None:
    if not isinstance(scope, dict) or set(scope) - {"agent"}:
        raise InvalidInput('scope must be {"agent": name or None}', field="scope")
    agent = scope.get("agent")
    if agent is not None and not isinstance(agent, str):
        raise InvalidInput("scope agent must be a name or None", field="scope")
    return agent


def _unique_rows(
    found: list[dict[str, Any]], scope_agent: str | None, now: int, run_id: str
) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for pattern in found:
        row = _row(pattern, now, run_id)
        if scope_agent is not None and row["agent"] != scope_agent:
            raise InvalidInput(
                f"pattern {row['id']} (context agent {row['agent']!r}) was mined for agent "
                f"{scope_agent!r}: its context must name that agent",
                field="context",
            )
        kept = rows.get(row["id"])
        if kept is None or row["q_value"] < kept["q_value"]:
            rows[row["id"]] = row
    return rows


def _row(pattern: dict[str, Any], now: int, run_id: str) -> dict[str, Any]:
    missing = [key for key in _REQUIRED if key not in pattern]
    if missing:
        raise InvalidInput(f"pattern lacks {', '.join(missing)}", field=missing[0])
    context, effect, evidence = pattern["context"], pattern["effect"], pattern["evidence"]
    if pattern["kind"] not in PATTERN_KINDS:
        raise InvalidInput(f"pattern kind must be one of {', '.join(PATTERN_KINDS)}", field="kind")
    if not all(isinstance(part, dict) for part in (context, effect, evidence)):
        raise InvalidInput("pattern context, effect and evidence must be objects")
    q_value = _number(evidence.get("q_value"), "evidence.q_value")
    if not 0.0 <= q_value <= 1.0:
        raise InvalidInput("evidence.q_value must be within [0, 1]", field="evidence.q_value")
    difference = effect.get("difference")
    effect_size = abs(_number(difference, "effect.difference")) if difference is not None else 0.0
    condition = str(pattern["condition"])
    return {
        "id": str(pattern.get("id") or pattern_id(context, condition)),
        "agent": _text_or_none(context.get("agent")),
        "task_name": _text_or_none(context.get("task_name")),
        "kind": pattern["kind"],
        "context": dumps(context),
        "condition": condition,
        "feature": dumps(pattern["feature"]),
        "effect": dumps(effect),
        "evidence": dumps(evidence),
        "explanation": str(pattern["explanation"]),
        "status": "active",
        "q_value": q_value,
        "effect_size": effect_size,
        "first_seen": now,
        "last_seen": now,
        "applied": None,
        "run_id": run_id,
    }


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{field} must be a finite number", field=field)
    return float(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


_UPDATED_COLUMNS = (
    "kind",
    "feature",
    "effect",
    "evidence",
    "explanation",
    "q_value",
    "effect_size",
    "last_seen",
    "run_id",
    "status",
)
_UPDATE = (
    sa.update(patterns)
    .where(patterns.c.id == sa.bindparam("pattern_id"))
    .values({name: sa.bindparam(f"new_{name}") for name in _UPDATED_COLUMNS})
)


def _update_params(row: dict[str, Any], status: str) -> dict[str, Any]:
    # An applied pattern stays applied: what was done about it is not undone by mining.
    params = {f"new_{name}": row[name] for name in _UPDATED_COLUMNS}
    params["new_status"] = "applied" if status == "applied" else "active"
    params["pattern_id"] = row["id"]
    return params


async def _retire(conn: AsyncConnection, scope_agent: str | None, kept: list[str]) -> int:
    """Mark stale the active rows of the scope that are not in `kept`; how many were."""
    where = [patterns.c.status == "active"]
    if scope_agent is not None:
        where.append(patterns.c.agent == scope_agent)
    # The scope's active rows are few (patterns that passed the FDR): read them, then update
    # by id, rather than a NOT IN over every id the run kept.
    active = [row[0] for row in await conn.execute(sa.select(patterns.c.id).where(*where))]
    kept_ids = set(kept)
    retired = [pattern_id_ for pattern_id_ in active if pattern_id_ not in kept_ids]
    for chunk in in_chunks(retired, 1000):
        await conn.execute(
            sa.update(patterns).where(patterns.c.id.in_(chunk)).values(status="stale")
        )
    return len(retired)


async def mark_applied(
    conn: AsyncConnection, ctx: WriteContext, pattern_id_: str, applied: dict[str, Any]
) -> None:
    """Set a pattern `applied` with what was done about it (`applied`, stored as given, plus
    `applied_at` in ns unless it says when). Raises `NotFound`, and `Conflict` when it was
    applied already (two concurrent applies: the second is refused, inside the transaction)."""
    if not isinstance(applied, dict):
        raise InvalidInput("applied must be an object", field="applied")
    row = (
        await conn.execute(
            sa.select(patterns.c.status, patterns.c.applied).where(patterns.c.id == pattern_id_)
        )
    ).first()
    if row is None:
        raise NotFound(f"pattern {pattern_id_!r} not found")
    if row[0] == "applied":
        raise Conflict(f"pattern {pattern_id_!r} was applied already ({row[1]})")
    record = {**applied}
    record.setdefault("applied_at", ctx.now_ns)
    await conn.execute(
        sa.update(patterns)
        .where(patterns.c.id == pattern_id_)
        .values(status="applied", applied=dumps(record))
    )
