"""Applying span batches inside the writer's transaction.

One call handles every span of a commit group: duplicates are refused by the unique index
(optimistic groups, `WriteContext.optimistic`) or filtered with one indexed lookup, unknown
tasks and executions are created on the fly (with their span count), per-task sequence
numbers of stored tasks are handed out by advancing their counters in one UPDATE, and the
rows go in with the backend's bulk insert. No per-span statement anywhere (STYLE "Don'ts").
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .attribute_index import indexed_key_set
from .backends import in_param
from .db_errors import is_unique_violation
from .group_commit import StoredSpanMet, WriteContext
from .models import TASK_STATUS_FOR_EXECUTION, new_id
from .reward_writes import NewSpan, resolve_for_spans, write_reward
from .schema import (
    by_span_id,
    executions,
    span_attributes,
    span_bucket,
    span_tags,
    spans,
    tasks,
)
from .span_rows import SPAN_COLUMNS, PreparedBatch, PreparedSpan
from .sql import run_in, select_in
from .task_writes import refresh_task_status


@dataclass(slots=True)
class IngestResult:
    """What one ingest call stored: `accepted` new spans, `duplicates` already present,
    `rewards` new rewards carried with them, `rejected` spans the database refused."""

    accepted: int = 0
    duplicates: int = 0
    rewards: int = 0
    rejected: int = 0


async def apply_span_batches(
    conn: AsyncConnection, ctx: WriteContext, batches: list[PreparedBatch]
) -> list[IngestResult]:
    """The writer's batch operation for spans: all batches of a group in one pass."""
    prepared = [span for batch in batches for span in batch.spans]
    fresh = await _fresh_flags(conn, ctx, prepared)
    new = [span for span, is_new in zip(prepared, fresh, strict=True) if is_new]
    new_spans = await _insert_spans(conn, ctx, new) if new else []
    if new_spans:
        await resolve_for_spans(conn, ctx, new_spans)
    results: list[IngestResult] = []
    offset = 0
    for batch in batches:
        flags = fresh[offset : offset + len(batch.spans)]
        offset += len(batch.spans)
        accepted = sum(flags)
        result = IngestResult(accepted=accepted, duplicates=len(flags) - accepted)
        for reward in batch.rewards:
            _, stored = await write_reward(conn, ctx, reward, first_wins=True)
            result.rewards += stored is not None
        results.append(result)
    return results


async def _fresh_flags(
    conn: AsyncConnection, ctx: WriteContext, records: list[PreparedSpan]
) -> list[bool]:
    """True for each record not yet stored and not repeated earlier in the same group. An
    optimistic group looks nothing up: the spans' insert refuses one stored before."""
    existing: set[tuple[str, str]] = set()
    if not ctx.optimistic:
        span_ids = list({record.span_id for record in records})
        rows = await run_in(conn, ctx, _stored_identities, span_ids)
        existing.update((row[0], row[1]) for row in rows)
    flags = []
    for record in records:
        key = (record.trace_id, record.span_id)
        flags.append(key not in existing)
        existing.add(key)
    return flags


@functools.cache
def _stored_identities(dialect: str) -> sa.Select[Any]:
    return sa.select(spans.c.trace_id, spans.c.span_id).where(
        by_span_id(in_param(spans.c.span_id, "values", dialect))
    )


async def _insert_spans(
    conn: AsyncConnection, ctx: WriteContext, prepared: list[PreparedSpan]
) -> list[NewSpan]:
    named = [span.owner_ids for span in prepared]
    owners, settle, new_tasks = await _assign_owners(conn, ctx, prepared, named)
    sequences = await _next_sequences(conn, ctx, prepared, owners, new_tasks)
    pks = await ctx.backend.reserve_pks(conn, spans, len(prepared))
    indexed = await indexed_key_set(conn, ctx)
    for span in prepared:
        span.use_indexed_keys(indexed)
    now = ctx.now_ns
    # Comprehensions, not one loop of appends: this runs for every span of every group.
    span_rows = [
        (pk, task_id, execution_id, sequence, now, *span.values)
        for span, pk, (task_id, execution_id), sequence in zip(
            prepared, pks, owners, sequences, strict=True
        )
    ]
    tag_rows = [(tag, pk) for span, pk in zip(prepared, pks, strict=True) for tag in span.tags]
    attribute_rows = [
        (span_bucket(pk), digest, pk)
        for span, pk in zip(prepared, pks, strict=True)
        for digest in span.index_digests
    ]
    new_spans = [
        NewSpan(
            pk,
            span.trace_id,
            span.span_id,
            span.parent_span_id is None,
            task_id,
            execution_id,
            span.indexed_values,
        )
        for span, pk, (task_id, execution_id) in zip(prepared, pks, owners, strict=True)
    ]
    # Fresh primary keys: none of these rows can conflict with a stored one, but for a span
    # an optimistic group did not look up.
    try:
        await ctx.backend.insert_rows(conn, spans, SPAN_COLUMNS, span_rows, fresh=True)
    except Exception as exc:
        if ctx.optimistic and is_unique_violation(exc):
            raise StoredSpanMet("a span of the group is stored already") from exc
        raise
    await ctx.backend.insert_rows(conn, span_tags, ("tag", "span_pk"), tag_rows, fresh=True)
    await ctx.backend.insert_rows(
        conn, span_attributes, ("bucket", "digest", "span_pk"), attribute_rows, fresh=True
    )
    await _settle_executions(conn, ctx, settle)
    return new_spans


async def _assign_owners(
    conn: AsyncConnection,
    ctx: WriteContext,
    records: list[PreparedSpan],
    named: list[tuple[str | None, str | None]],
) -> tuple[list[tuple[str, str]], Settlement, set[str]]:
    """(task id, execution id) for each record, creating unknown tasks and executions; what
    the records' root spans change in the executions and tasks stored before; the ids of the
    tasks created.

    `named` holds the ids each record names (`promote.ids_from_attributes`). An unknown
    execution id without a task id becomes its own task; a task id alone means its latest
    execution; a span with neither belongs to a task (and single execution) named by its
    trace id. Executions and tasks created here start with their root's outcome.
    """
    wanted = await _inherit_trace_owners(conn, ctx, records, named)
    execution_ids = list({execution for _, execution in wanted if execution})
    known_executions = await _execution_tasks(conn, ctx, execution_ids)
    owners: list[tuple[str | None, str | None]] = [
        (known_executions.get(execution_id) or task_id or execution_id, execution_id)
        if execution_id
        else (task_id, None)
        for task_id, execution_id in wanted
    ]
    tasks_without_execution = list({task for task, execution in owners if not execution})
    latest = await _latest_executions(conn, ctx, tasks_without_execution)
    stored_executions = known_executions | {execution: task for task, execution in latest.items()}
    for task_id in tasks_without_execution:
        latest.setdefault(task_id, new_id())
    resolved: list[tuple[str, str]] = [
        (task, execution or latest[task])  # type: ignore[misc]
        for task, execution in owners
    ]
    outcomes = _root_outcomes(records, resolved)
    new_executions, new_tasks = await _create_missing(
        conn, ctx, records, resolved, stored_executions, outcomes
    )
    # A stored task follows its latest execution again when one of its executions ended or
    # a new one started.
    changed = {task for task, execution in resolved if execution in outcomes}
    settlement = Settlement(
        {key: value for key, value in outcomes.items() if key not in new_executions},
        list((changed | set(new_executions.values())) - new_tasks),
    )
    return resolved, settlement, new_tasks


async def _inherit_trace_owners(
    conn: AsyncConnection,
    ctx: WriteContext,
    records: list[PreparedSpan],
    wanted: list[tuple[str | None, str | None]],
) -> list[tuple[str | None, str | None]]:
    """Spans that name no task join the task of their trace when another span of it does
    (in this group, or stored earlier): apps often set `evolution.task.id` on the root only.
    The others belong to the task and execution their trace id names."""
    by_trace: dict[str, tuple[str | None, str | None]] = {}
    for record, ids in zip(records, wanted, strict=True):
        if any(ids):
            by_trace.setdefault(record.trace_id, ids)
    orphans = {
        record.trace_id
        for record, ids in zip(records, wanted, strict=True)
        if not any(ids) and record.trace_id not in by_trace
    }
    if orphans:
        for trace, task_id, execution_id in await run_in(
            conn, ctx, _named_owners_of_traces, sorted(orphans)
        ):
            by_trace.setdefault(trace, (task_id, execution_id))
    return [
        ids if any(ids) else by_trace.get(record.trace_id, (record.trace_id, record.trace_id))
        for record, ids in zip(records, wanted, strict=True)
    ]


@functools.cache
def _named_owners_of_traces(dialect: str) -> sa.Select[Any]:
    # A span whose task is not its trace id was placed by a named task or execution.
    return sa.select(spans.c.trace_id, spans.c.task_id, spans.c.execution_id).where(
        in_param(spans.c.trace_id, "values", dialect), spans.c.task_id != spans.c.trace_id
    )


async def _execution_tasks(
    conn: AsyncConnection, ctx: WriteContext, execution_ids: list[str]
) -> dict[str, str]:
    columns = (executions.c.id, executions.c.task_id)
    return dict(await select_in(conn, ctx, columns, executions.c.id, execution_ids))


async def _latest_executions(
    conn: AsyncConnection, ctx: WriteContext, task_ids: list[str]
) -> dict[str, str]:
    latest: dict[str, tuple[int, str]] = {}
    columns = (executions.c.task_id, executions.c.attempt, executions.c.id)
    for task_id, attempt, execution_id in await select_in(
        conn, ctx, columns, executions.c.task_id, task_ids
    ):
        if task_id not in latest or attempt > latest[task_id][0]:
            latest[task_id] = (attempt, execution_id)
    return {task_id: execution_id for task_id, (_, execution_id) in latest.items()}


async def _create_missing(
    conn: AsyncConnection,
    ctx: WriteContext,
    records: list[PreparedSpan],
    owners: list[tuple[str, str]],
    stored_executions: dict[str, str],
    outcomes: dict[str, str],
) -> tuple[dict[str, str], set[str]]:
    """Create the tasks and executions `owners` name that are not stored (executions:
    `stored_executions`, id -> task id); returns the executions created (id -> task id) and
    the ids of the tasks created. A new execution whose root is among `records` starts with
    its outcome, a new task with the status its latest execution gives it and the count of
    its spans in `records` (`_next_sequences`)."""
    task_names: dict[str, str] = {}
    new_executions: dict[str, str] = {}
    for record, (task_id, execution_id) in zip(records, owners, strict=True):
        # A task created on the fly takes its root span's name (else its first span's).
        if record.parent_span_id is None or task_id not in task_names:
            task_names[task_id] = record.name
        if execution_id not in stored_executions:
            new_executions[execution_id] = task_id
    rows = await select_in(conn, ctx, (tasks.c.id,), tasks.c.id, list(task_names))
    existing_tasks = {row[0] for row in rows}
    span_counts = Counter(task_id for task_id, _ in owners)
    # Tasks created just now have no executions yet: only older ones need their last attempt.
    attempts = await _max_attempts(
        conn, ctx, list({task for task in new_executions.values() if task in existing_tasks})
    )
    execution_rows = _execution_rows(new_executions, attempts, outcomes, ctx.now_ns)
    # A new task's status follows its latest execution, all of which are new.
    task_status = {
        row["task_id"]: TASK_STATUS_FOR_EXECUTION[row["status"]] for row in execution_rows
    }
    task_rows = [
        {
            "id": task_id,
            "name": name[:500],
            "status": task_status.get(task_id, "running"),
            "span_count": span_counts[task_id],
            "origin": "span",
            "created_at": ctx.now_ns,
            "updated_at": ctx.now_ns,
        }
        for task_id, name in task_names.items()
        if task_id not in existing_tasks
    ]
    await ctx.backend.insert_ignore(conn, tasks, task_rows, fresh=True)
    await ctx.backend.insert_ignore(conn, executions, execution_rows, fresh=True)
    return new_executions, {row["id"] for row in task_rows}


def _execution_rows(
    missing: dict[str, str], attempts: dict[str, int], outcomes: dict[str, str], now: int
) -> list[dict[str, Any]]:
    """Rows of the executions to create (id -> task id), numbered after each task's last
    attempt (`attempts`, updated), in order: a task's latest comes last."""
    rows = []
    for execution_id, task_id in missing.items():
        attempts[task_id] = attempts.get(task_id, 0) + 1
        status = outcomes.get(execution_id, "running")
        rows.append(
            {
                "id": execution_id,
                "task_id": task_id,
                "attempt": attempts[task_id],
                "status": status,
                "origin": "span",
                "created_at": now,
                "updated_at": now,
                "ended_at": None if status == "running" else now,
            }
        )
    return rows


async def _max_attempts(
    conn: AsyncConnection, ctx: WriteContext, task_ids: list[str]
) -> dict[str, int]:
    return dict(await run_in(conn, ctx, _last_attempts, task_ids))


@functools.cache
def _last_attempts(dialect: str) -> sa.Select[Any]:
    return (
        sa.select(executions.c.task_id, sa.func.max(executions.c.attempt))
        .where(in_param(executions.c.task_id, "values", dialect))
        .group_by(executions.c.task_id)
    )


async def _next_sequences(
    conn: AsyncConnection,
    ctx: WriteContext,
    records: list[PreparedSpan],
    owners: list[tuple[str, str]],
    new_tasks: set[str],
) -> list[int]:
    """Advance each stored task's span counter once and number its new spans by start time.
    Tasks created in this group (`new_tasks`) were created with their count of spans."""
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, (task_id, _) in enumerate(owners):
        by_task[task_id].append(index)
    stored = {task: len(indexes) for task, indexes in by_task.items() if task not in new_tasks}
    counters = await ctx.backend.advance_counters(conn, stored) if stored else {}
    counters.update((task, len(by_task[task])) for task in new_tasks)
    sequences = [0] * len(records)
    for task_id, indexes in by_task.items():
        first = counters[task_id] - len(indexes) + 1
        ordered = sorted(indexes, key=lambda i: (records[i].start_time, i))
        for offset, index in enumerate(ordered):
            sequences[index] = first + offset
    return sequences


@functools.cache
def _end_executions(dialect: str) -> sa.Update:
    return (
        sa.update(executions)
        .where(in_param(executions.c.id, "values", dialect), executions.c.status == "running")
        .values(
            status=sa.bindparam("outcome"),
            updated_at=sa.bindparam("now"),
            ended_at=sa.bindparam("now"),
        )
    )


def _root_outcomes(records: list[PreparedSpan], owners: list[tuple[str, str]]) -> dict[str, str]:
    """execution id -> "succeeded" or "failed", for each execution whose ended root span is
    among `records` (any failed root fails it)."""
    outcome: dict[str, str] = {}
    for record, (_, execution_id) in zip(records, owners, strict=True):
        if record.parent_span_id is None and record.end_time is not None:
            failed = record.status_code == "error" or outcome.get(execution_id) == "failed"
            outcome[execution_id] = "failed" if failed else "succeeded"
    return outcome


@dataclass(slots=True)
class Settlement:
    """What a group's root spans change in executions and tasks stored before it (those
    created in the group start with their outcome: `_create_missing`)."""

    #: execution id -> outcome (`_root_outcomes`)
    outcomes: dict[str, str]
    #: tasks whose status must follow their latest execution again
    tasks: list[str]


async def _settle_executions(
    conn: AsyncConnection, ctx: WriteContext, settlement: Settlement
) -> None:
    """An execution still `running` when its root span arrives takes the root's outcome; the
    task follows its latest execution. Explicit status updates (PATCH) win over this."""
    outcomes = settlement.outcomes
    for status in ("succeeded", "failed"):
        ids = [execution_id for execution_id, value in outcomes.items() if value == status]
        if ids:
            await run_in(conn, ctx, _end_executions, ids, outcome=status, now=ctx.now_ns)
    await refresh_task_status(conn, ctx, settlement.tasks)
