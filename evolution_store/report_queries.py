"""The static report's reads (`evolution-store report`): what the API's queries do not
answer for a whole selection of tasks at once. Each is set-based — a statement per kind of
row for the whole selection, never one per task, execution or span — and every list of ids
travels as one bound parameter (`backends.in_param`).

- `report_tasks`: the selected tasks, newest first (one task, an agent's, or all; created
  since a time).
- `execution_summaries`: the executions of those tasks with their spans' sums (start, end,
  spans, errors, tokens, cost, agent) and the count and mean of the rewards linked to them.
- `waterfall_spans`: the spans of a few executions, at most `cap` each, with the rewards
  linked to every span: the report's waterfalls in two statements.
- `selection_rewards`: the rewards that judge the selection (linked to its spans, or aimed at
  its tasks and still pending), summarised by name and the newest listed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .aggregates import describe
from .backends import in_param, in_value
from .errors import NotFound
from .marker_writes import TASK_PREFIX
from .rows import execution_dict, reward_dict, span_dict, task_dict
from .schema import executions, reward_links, rewards, spans, tasks

#: rewards the report lists one by one (the summary counts them all)
REWARD_LIST_CAP = 200


def _in(conn: AsyncConnection, column: sa.ColumnElement[Any], name: str) -> Any:
    return in_param(column, name, conn.dialect.name)


def _ids(conn: AsyncConnection, values: Sequence[Any]) -> Any:
    return in_value(values, conn.dialect.name)


async def report_tasks(
    conn: AsyncConnection,
    *,
    task_id: str | None = None,
    agent: str | None = None,
    since: int | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """The tasks a report covers, newest first, at most `limit`: the one named (`NotFound`
    if it does not exist; `since` does not hide it), else those `agent`'s spans ran under,
    else all (but the agents' marker tasks); created at or after `since` (ns)."""
    query = sa.select(tasks)
    if task_id is not None:
        rows = (await conn.execute(query.where(tasks.c.id == task_id))).all()
        if not rows:
            raise NotFound(f"task {task_id!r} not found")
        return [task_dict(rows[0]._mapping)]
    # An agent's markers live in a task of their own; the report draws them as markers.
    query = query.where(tasks.c.id.not_like(TASK_PREFIX + "%"))
    if agent is not None:
        # Newest first, each task probed through its own spans (`ix_spans_task_sequence`)
        # until `limit` match: never a walk over every span the agent ever sent.
        query = query.where(
            sa.exists().where(spans.c.task_id == tasks.c.id, spans.c.agent == agent)
        )
    if since is not None:
        query = query.where(tasks.c.created_at >= since)
    query = query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc()).limit(limit)
    return [task_dict(row._mapping) for row in await conn.execute(query)]


async def execution_summaries(
    conn: AsyncConnection, task_ids: Sequence[str]
) -> list[dict[str, Any]]:
    """Every execution of `task_ids`, oldest first, each with `start_ns`/`end_ns` (its
    spans' range; None without spans), `span_count`, `error_count`, `input_tokens`,
    `output_tokens`, `cost`, `agent` (the first by name of its spans' agents; None without),
    `reward_count` and `reward_mean` (each linked reward once, however many spans it
    judges)."""
    if not task_ids:
        return []
    params = {"tasks": _ids(conn, task_ids)}
    selected = _in(conn, spans.c.task_id, "tasks")
    sums = await conn.execute(
        sa.select(
            spans.c.execution_id,
            sa.func.min(spans.c.start_time),
            sa.func.max(sa.func.coalesce(spans.c.end_time, spans.c.start_time)),
            sa.func.count(),
            sa.func.sum(sa.case((spans.c.status_code == "error", 1), else_=0)),
            sa.func.sum(spans.c.input_tokens),
            sa.func.sum(spans.c.output_tokens),
            sa.func.sum(spans.c.cost),
            sa.func.min(spans.c.agent),
        )
        .where(selected)
        .group_by(spans.c.execution_id),
        params,
    )
    span_sums = {row[0]: row[1:] for row in sums}
    judged = (
        sa.select(spans.c.execution_id, rewards.c.pk, rewards.c.value)
        .select_from(
            sa.join(reward_links, spans, spans.c.pk == reward_links.c.span_pk).join(
                rewards, rewards.c.pk == reward_links.c.reward_pk
            )
        )
        .where(selected)
        .distinct()
        .subquery()
    )
    reward_rows = await conn.execute(
        sa.select(judged.c.execution_id, sa.func.count(), sa.func.avg(judged.c.value)).group_by(
            judged.c.execution_id
        ),
        params,
    )
    reward_stats = {row[0]: (row[1], row[2]) for row in reward_rows}
    result = await conn.execute(
        sa.select(executions)
        .where(_in(conn, executions.c.task_id, "tasks"))
        .order_by(executions.c.created_at, executions.c.id),
        params,
    )
    items = []
    for row in result:
        start, end, count, errors, tokens_in, tokens_out, cost, agent = span_sums.get(
            row.id, (None, None, 0, 0, None, None, None, None)
        )
        reward_count, reward_mean = reward_stats.get(row.id, (0, None))
        items.append(
            {
                **execution_dict(row._mapping),
                "created_ns": row.created_at,
                "ended_ns": row.ended_at,
                "start_ns": start,
                "end_ns": end,
                "span_count": count,
                "error_count": int(errors or 0),
                "input_tokens": int(tokens_in or 0),
                "output_tokens": int(tokens_out or 0),
                "cost": float(cost or 0.0),
                "agent": agent,
                "reward_count": reward_count,
                "reward_mean": reward_mean,
            }
        )
    return items


async def waterfall_spans(
    conn: AsyncConnection, execution_ids: Sequence[str], *, cap: int = 500
) -> dict[str, dict[str, Any]]:
    """{execution id: {"spans": [...], "capped": bool}} for `execution_ids`: each
    execution's first `cap` spans by start time, each span with `rewards` (those linked to
    it, oldest first). Two statements, whatever the number of executions and spans."""
    if not execution_ids:
        return {}
    place = (
        sa.func.row_number()
        .over(partition_by=spans.c.execution_id, order_by=(spans.c.start_time, spans.c.pk))
        .label("place")
    )
    # Naming the executions' tasks lets the lookup use the spans' (task_id, sequence) index.
    of_tasks = sa.select(executions.c.task_id).where(_in(conn, executions.c.id, "executions"))
    ranked = (
        sa.select(spans, place)
        .where(spans.c.task_id.in_(of_tasks), _in(conn, spans.c.execution_id, "executions"))
        .subquery()
    )
    rows = (
        await conn.execute(
            sa.select(ranked)
            .where(ranked.c.place <= cap + 1)
            .order_by(ranked.c.execution_id, ranked.c.place),
            {"executions": _ids(conn, execution_ids)},
        )
    ).all()
    kept = [row for row in rows if row.place <= cap]
    linked: dict[int, list[dict[str, Any]]] = defaultdict(list)
    if kept:
        result = await conn.execute(
            sa.select(reward_links.c.span_pk, rewards)
            .join(rewards, rewards.c.pk == reward_links.c.reward_pk)
            .where(_in(conn, reward_links.c.span_pk, "spans"))
            .order_by(rewards.c.created_at, rewards.c.pk),
            {"spans": _ids(conn, [row.pk for row in kept])},
        )
        for row in result:
            linked[row.span_pk].append(_reward_brief(row._mapping))
    traces: dict[str, dict[str, Any]] = {
        execution_id: {"spans": [], "capped": False} for execution_id in execution_ids
    }
    for row in rows:
        trace = traces[row.execution_id]
        if row.place > cap:
            trace["capped"] = True
            continue
        fields = {key: value for key, value in row._mapping.items() if key != "place"}
        trace["spans"].append({**span_dict(fields), "rewards": linked.get(row.pk, [])})
    return traces


def _reward_brief(m: Any) -> dict[str, Any]:
    """A reward as a span shows it: what it says, who said it and when it arrived."""
    full = reward_dict(m, [], 0)
    keep = ("id", "name", "value", "dimensions", "feedback", "source", "tags", "created_at")
    return {key: full[key] for key in keep} | {"resolved_at": full["resolved_at"]}


async def selection_rewards(
    conn: AsyncConnection, task_ids: Sequence[str], *, limit: int = REWARD_LIST_CAP
) -> dict[str, Any]:
    """The rewards that judge `task_ids`: linked to one of their spans, or aimed at one of
    the tasks (or their executions) and not linked yet. `summary`: by name, count, mean,
    stdev and 95 % interval (as `rewards/summary`); `items`: the newest `limit`, with
    `pending`; `total`: how many there are."""
    if not task_ids:
        return {"summary": [], "items": [], "total": 0}
    # Three index lookups (links by span, targets by task, by execution), unioned.
    judged = sa.union(
        sa.select(reward_links.c.reward_pk.label("pk"))
        .join(spans, spans.c.pk == reward_links.c.span_pk)
        .where(_in(conn, spans.c.task_id, "tasks")),
        sa.select(rewards.c.pk).where(_in(conn, rewards.c.target_task_id, "tasks")),
        sa.select(rewards.c.pk).where(
            rewards.c.target_execution_id.in_(
                sa.select(executions.c.id).where(_in(conn, executions.c.task_id, "tasks"))
            )
        ),
    ).subquery()
    judging = rewards.c.pk.in_(sa.select(judged.c.pk))
    params = {"tasks": _ids(conn, task_ids)}
    square = sa.case(
        (sa.func.abs(rewards.c.value) < 1e-150, 0.0), else_=rewards.c.value * rewards.c.value
    )
    grouped = await conn.execute(
        sa.select(
            rewards.c.name, sa.func.count(), sa.func.sum(rewards.c.value), sa.func.sum(square)
        )
        .where(judging)
        .group_by(rewards.c.name)
        .order_by(rewards.c.name),
        params,
    )
    summary = [
        {"key": name, **describe(count, total, squares)} for name, count, total, squares in grouped
    ]
    newest = await conn.execute(
        sa.select(rewards)
        .where(judging)
        .order_by(rewards.c.created_at.desc(), rewards.c.pk.desc())
        .limit(limit),
        params,
    )
    items = [{**_reward_brief(row._mapping), "pending": row.resolved_at is None} for row in newest]
    return {"summary": summary, "items": items, "total": sum(g["count"] for g in summary)}
