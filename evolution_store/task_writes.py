"""Writes of tasks, executions, their statuses, and span tags: each an operation the
group-commit writer runs in its transaction (`GroupCommitWriter.submit`)."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .backends import in_param
from .errors import InvalidInput, NotFound
from .group_commit import WriteContext
from .models import (
    EXECUTION_STATUSES,
    TASK_STATUS_FOR_EXECUTION,
    TASK_STATUSES,
    ExecutionIn,
    TaskIn,
    new_id,
)
from .promote import unique_tags
from .queries import find_span
from .schema import (
    executions,
    reward_links,
    reward_span_tags,
    span_tags,
    spans,
    task_tags,
    tasks,
)
from .span_rows import dumps, stored_tags
from .sql import run_in


async def create_task(conn: AsyncConnection, ctx: WriteContext, task: TaskIn) -> tuple[str, bool]:
    """Insert a task; idempotent on id. A task first created on the fly by a span takes the
    name, input, metadata and tags given now. Returns (id, created)."""
    task_id = task.id or new_id()
    existing = (await conn.execute(sa.select(tasks.c.origin).where(tasks.c.id == task_id))).first()
    values = {
        "name": task.name,
        "input": None if task.input is None else dumps(task.input),
        "metadata": dumps(task.metadata),
        "tags": dumps(task.tags),
        "updated_at": ctx.now_ns,
    }
    if existing is None:
        await conn.execute(
            sa.insert(tasks).values(
                id=task_id, status="queued", origin="api", created_at=ctx.now_ns, **values
            )
        )
    elif existing[0] == "span":
        await conn.execute(
            sa.update(tasks).where(tasks.c.id == task_id).values(origin="api", **values)
        )
    else:
        return task_id, False
    await ctx.backend.insert_ignore(
        conn, task_tags, [{"tag": tag, "task_id": task_id} for tag in task.tags]
    )
    return task_id, True


async def start_execution(
    conn: AsyncConnection, ctx: WriteContext, task_id: str, execution: ExecutionIn
) -> str:
    """A new attempt of `task_id` (attempt = previous + 1); the task becomes running.

    An execution id that a span already created on the fly is adopted (its config is set)
    rather than duplicated; an id belonging to another task is refused."""
    if (await conn.execute(sa.select(tasks.c.id).where(tasks.c.id == task_id))).first() is None:
        raise NotFound(f"task {task_id!r} not found")
    execution_id = execution.id or new_id()
    existing = (
        await conn.execute(
            sa.select(executions.c.task_id, executions.c.origin).where(
                executions.c.id == execution_id
            )
        )
    ).first()
    if existing is not None:
        if existing[0] != task_id:
            raise InvalidInput(f"execution {execution_id!r} belongs to another task", field="id")
        if existing[1] == "span":
            await conn.execute(
                sa.update(executions)
                .where(executions.c.id == execution_id)
                .values(config=dumps(execution.config), origin="api", updated_at=ctx.now_ns)
            )
        return execution_id
    attempt = (
        await conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(executions.c.attempt), 0)).where(
                executions.c.task_id == task_id
            )
        )
    ).scalar_one() + 1
    await conn.execute(
        sa.insert(executions).values(
            id=execution_id,
            task_id=task_id,
            attempt=attempt,
            status="running",
            config=dumps(execution.config),
            origin="api",
            created_at=ctx.now_ns,
            updated_at=ctx.now_ns,
        )
    )
    await refresh_task_status(conn, ctx, [task_id])
    return execution_id


async def set_task_status(
    conn: AsyncConnection, ctx: WriteContext, task_id: str, status: str
) -> None:
    if status not in TASK_STATUSES:
        raise InvalidInput(f"task status must be one of {', '.join(TASK_STATUSES)}", field="status")
    result = await conn.execute(
        sa.update(tasks).where(tasks.c.id == task_id).values(status=status, updated_at=ctx.now_ns)
    )
    if result.rowcount == 0:
        raise NotFound(f"task {task_id!r} not found")


async def set_execution_status(
    conn: AsyncConnection, ctx: WriteContext, execution_id: str, status: str
) -> None:
    if status not in EXECUTION_STATUSES:
        raise InvalidInput(
            f"execution status must be one of {', '.join(EXECUTION_STATUSES)}", field="status"
        )
    ended = None if status == "running" else ctx.now_ns
    row = (
        await conn.execute(
            sa.update(executions)
            .where(executions.c.id == execution_id)
            .values(status=status, updated_at=ctx.now_ns, ended_at=ended)
            .returning(executions.c.task_id)
        )
    ).first()
    if row is None:
        raise NotFound(f"execution {execution_id!r} not found")
    await refresh_task_status(conn, ctx, [row[0]])


async def refresh_task_status(
    conn: AsyncConnection, ctx: WriteContext, task_ids: list[str]
) -> None:
    """Each task's status follows its latest execution (a cancelled task stays cancelled)."""
    if task_ids:
        await run_in(conn, ctx, _follow_latest_execution, task_ids, now=ctx.now_ns)


@functools.cache
def _follow_latest_execution(dialect: str) -> sa.Update:
    latest = (
        sa.select(executions.c.status)
        .where(executions.c.task_id == tasks.c.id)
        .order_by(executions.c.attempt.desc())
        .limit(1)
        .scalar_subquery()
    )
    mapped = sa.case(TASK_STATUS_FOR_EXECUTION, value=latest, else_=tasks.c.status)
    return (
        sa.update(tasks)
        .where(in_param(tasks.c.id, "values", dialect), tasks.c.status != "cancelled")
        .values(status=mapped, updated_at=sa.bindparam("now"))
    )


async def add_span_tags(
    conn: AsyncConnection,
    ctx: WriteContext,
    span_id: str,
    tags: list[str],
    trace_id: str | None = None,
) -> tuple[str, str]:
    """Add tags to a stored span (its `tags` list and the tag index). Returns its identity."""
    tags = unique_tags(tags)  # cleaned and cut as ingest does: callers may skip `TagsIn`
    found = (await find_span(conn, span_id, trace_id))._mapping
    pk, found_trace, current = found["pk"], found["trace_id"], found["tags"]
    merged = list(dict.fromkeys([*stored_tags(current), *tags]))
    await conn.execute(sa.update(spans).where(spans.c.pk == pk).values(tags=dumps(merged)))
    await ctx.backend.insert_ignore(conn, span_tags, [{"tag": tag, "span_pk": pk} for tag in tags])
    # Rewards already linked to the span inherit its new tags (schema: reward_span_tags).
    linked = await conn.execute(
        sa.select(reward_links.c.reward_pk).where(reward_links.c.span_pk == pk)
    )
    inherited = [(tag, reward_pk) for (reward_pk,) in linked for tag in tags]
    await ctx.backend.insert_rows(
        conn, reward_span_tags, ("tag", "reward_pk"), inherited, fresh=False
    )
    return found_trace, found["span_id"]
