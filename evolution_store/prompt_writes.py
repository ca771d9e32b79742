"""Writes of the prompt registry — each an operation the group-commit writer runs in its
transaction, so concurrent approvals take turns and a change is stored with its marker.

A prompt row never changes content: a new version is a new row. What moves is its status
(draft → experimental → candidate → production → archived) and the labels naming it.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import Conflict, InvalidInput, NotFound
from .group_commit import WriteContext
from .marker_writes import write_marker
from .registry_models import APPROVABLE, RESERVED_LABELS, STATUS_MOVES, PromptIn
from .schema import prompt_labels, prompts
from .span_rows import dumps


def prompt_digest(agent: str, content: str, parent_ids: list[str]) -> str:
    """What makes two posts the same prompt: agent, content and parents (in any order)."""
    data = orjson.dumps([agent, content, sorted(parent_ids)])
    return hashlib.sha256(data).hexdigest()


async def create_prompt(
    conn: AsyncConnection, ctx: WriteContext, prompt: PromptIn
) -> tuple[str, bool]:
    """Insert the next version of `prompt.agent`'s prompt, or find the same one posted before.
    Returns (id, created). The new version takes the label `latest` and those asked for."""
    digest = prompt_digest(prompt.agent, prompt.content, prompt.parent_ids)
    found = (
        await conn.execute(
            sa.select(prompts.c.id).where(
                prompts.c.agent == prompt.agent, prompts.c.digest == digest
            )
        )
    ).first()
    if found is not None:
        return found[0], False
    await _check_parents(conn, prompt.parent_ids)
    version = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(prompts.c.version), 0)).where(
                prompts.c.agent == prompt.agent
            )
        )
    ).scalar_one() + 1
    prompt_id = secrets.token_hex(8)
    await conn.execute(
        sa.insert(prompts).values(
            id=prompt_id,
            agent=prompt.agent,
            version=version,
            content=prompt.content,
            digest=digest,
            parent_ids=dumps(prompt.parent_ids),
            status=prompt.status,
            fitness=None if prompt.fitness is None else dumps(prompt.fitness),
            created_by=prompt.created_by,
            note=prompt.note,
            created_at=ctx.now_ns,
            updated_at=ctx.now_ns,
        )
    )
    for label in ("latest", *prompt.labels):
        await _point_label(conn, ctx, prompt.agent, label, prompt_id)
    return prompt_id, True


async def _check_parents(conn: AsyncConnection, parent_ids: list[str]) -> None:
    if not parent_ids:
        return
    rows = await conn.execute(sa.select(prompts.c.id).where(prompts.c.id.in_(parent_ids)))
    missing = sorted(set(parent_ids) - {row[0] for row in rows})
    if missing:
        raise InvalidInput(f"unknown parent prompt(s): {', '.join(missing)}", field="parent_ids")


async def _stored(conn: AsyncConnection, prompt_id: str) -> Any:
    row = (await conn.execute(sa.select(prompts).where(prompts.c.id == prompt_id))).first()
    if row is None:
        raise NotFound(f"prompt {prompt_id!r} not found")
    return row._mapping


async def set_prompt_status(
    conn: AsyncConnection,
    ctx: WriteContext,
    prompt_id: str,
    status: str,
    note: str | None,
    fitness: dict[str, Any] | None = None,
) -> None:
    """Move a prompt along draft → experimental → candidate, or to archived from anywhere.
    Production is reached only by approval (`approve_prompt`). Other moves raise `Conflict`
    naming the allowed ones. `fitness` records the measurement that earned the move (the
    content never changes; what is known about it does)."""
    stored = await _stored(conn, prompt_id)
    current = stored["status"]
    if status == current and fitness is None:
        return
    allowed = STATUS_MOVES[current]
    if status != current and status not in allowed:
        hint = "approve a candidate to make it production; " if status == "production" else ""
        moves = ", ".join(allowed) if allowed else "none (approve it to roll back to it)"
        raise Conflict(
            f"prompt {prompt_id!r} is {current}: it cannot become {status}; {hint}"
            f"allowed moves: {moves}"
        )
    values: dict[str, Any] = {"status": status, "updated_at": ctx.now_ns}
    if note is not None:
        values["note"] = note
    if fitness is not None:
        values["fitness"] = dumps(fitness)
    await conn.execute(sa.update(prompts).where(prompts.c.id == prompt_id).values(**values))
    # Archiving the production prompt leaves the agent without one.
    if current == "production" and status != current:
        await conn.execute(
            sa.delete(prompt_labels).where(
                prompt_labels.c.agent == stored["agent"], prompt_labels.c.label == "production"
            )
        )


async def approve_prompt(
    conn: AsyncConnection,
    ctx: WriteContext,
    prompt_id: str,
    *,
    note: str | None,
    approved_by: str,
) -> None:
    """Make a candidate (or an archived version: a rollback) the agent's production prompt.
    The previous production prompt is archived, the `production` label moves, who approved
    and when are recorded, and a marker (`prompt.promoted` or `prompt.rolled_back`) says so."""
    stored = await _stored(conn, prompt_id)
    status, agent = stored["status"], stored["agent"]
    if status == "production":
        return
    if status not in APPROVABLE:
        raise Conflict(
            f"prompt {prompt_id!r} is {status}: only a candidate, or an archived version (a "
            f"rollback), can be approved; move it to candidate first"
        )
    previous = (
        await conn.execute(
            sa.select(prompts.c.id, prompts.c.version).where(
                prompts.c.agent == agent, prompts.c.status == "production"
            )
        )
    ).all()
    await conn.execute(
        sa.update(prompts)
        .where(prompts.c.agent == agent, prompts.c.status == "production")
        .values(status="archived", updated_at=ctx.now_ns)
    )
    values: dict[str, Any] = {
        "status": "production",
        "approved_by": approved_by,
        "approved_at": ctx.now_ns,
        "updated_at": ctx.now_ns,
    }
    if note is not None:
        values["note"] = note
    await conn.execute(sa.update(prompts).where(prompts.c.id == prompt_id).values(**values))
    await _point_label(conn, ctx, agent, "production", prompt_id)
    before = {"prompt_id": previous[0][0], "version": previous[0][1]} if previous else None
    rollback = status == "archived"
    await write_marker(
        conn,
        ctx,
        agent=agent,
        kind="prompt.rolled_back" if rollback else "prompt.promoted",
        before=before,
        after={"prompt_id": prompt_id, "version": stored["version"], "approved_by": approved_by},
        attributes={
            "evolution.prompt.id": prompt_id,
            "evolution.prompt.version": stored["version"],
        },
    )


async def set_label(
    conn: AsyncConnection, ctx: WriteContext, agent: str, label: str, prompt_id: str
) -> None:
    """Point `agent`'s `label` at one of its prompts, with a `prompt.label_moved` marker. The
    registry's own labels (`production`, `latest`) are not moved by hand."""
    if label in RESERVED_LABELS:
        how = "approve a prompt to move it" if label == "production" else "it follows new versions"
        raise Conflict(f"the label {label!r} is moved by the registry: {how}")
    stored = await _stored(conn, prompt_id)
    if stored["agent"] != agent:
        raise InvalidInput(
            f"prompt {prompt_id!r} belongs to agent {stored['agent']!r}, not {agent!r}",
            field="prompt_id",
        )
    before = (
        await conn.execute(
            sa.select(prompt_labels.c.prompt_id).where(
                prompt_labels.c.agent == agent, prompt_labels.c.label == label
            )
        )
    ).first()
    if before is not None and before[0] == prompt_id:
        return
    await _point_label(conn, ctx, agent, label, prompt_id)
    await write_marker(
        conn,
        ctx,
        agent=agent,
        kind="prompt.label_moved",
        before=None if before is None else {"label": label, "prompt_id": before[0]},
        after={"label": label, "prompt_id": prompt_id, "version": stored["version"]},
        attributes={"evolution.prompt.id": prompt_id, "evolution.marker.label": label},
    )


async def _point_label(
    conn: AsyncConnection, ctx: WriteContext, agent: str, label: str, prompt_id: str
) -> None:
    updated = await conn.execute(
        sa.update(prompt_labels)
        .where(prompt_labels.c.agent == agent, prompt_labels.c.label == label)
        .values(prompt_id=prompt_id, updated_at=ctx.now_ns)
    )
    if updated.rowcount == 0:
        await conn.execute(
            sa.insert(prompt_labels).values(
                agent=agent, label=label, prompt_id=prompt_id, updated_at=ctx.now_ns
            )
        )
