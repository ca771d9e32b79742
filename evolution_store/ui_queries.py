"""The dashboard's own reads (api/ui): what the API's queries do not already answer, each
bounded so a page costs the same at a thousand spans as at a million.

- `agents`: the agents' names, one index step each (a loose index scan), never a scan of
  every span.
- `agent_recent`: an agent's most recent spans in a window, at most `cap` of them, newest
  first through `ix_spans_agent_start`; the overview's figures and time buckets come from
  this sample (`summarise_recent` says so on the page when it was capped).
- `list_tasks`: tasks newest first by agent, status, tag and creation time, keyset paged.
  A task has no agent of its own; it has one through its spans, checked per task through
  `ix_spans_task_sequence` and stopping at the first match.
- `trace_spans`: one trace's spans without their JSON columns, with the count and mean of
  the rewards linked to each: a waterfall in two statements.
- `prompt_agents`: the agents of the prompt registry (a small table).
- `task_traces`, `task_rewards`, `recent_markers`: a task page's traces and rewards, and the
  markers every agent's marker task holds (`marker_writes.TASK_PREFIX`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .aggregates import percentile
from .marker_writes import MARKER_SPAN, TASK_PREFIX
from .queries import _with_links, check_limit
from .registry_queries import marker_dict
from .rows import SPAN_JSON_COLUMNS, span_dict
from .schema import executions, prompts, reward_links, rewards, spans, tasks

#: spans of one agent the overview reads at most (the newest ones in its window)
RECENT_CAP = 5_000
#: spans of one trace a waterfall shows at most
TRACE_CAP = 5_000

# A waterfall needs every promoted column but none of the JSON ones.
_WATERFALL_COLUMNS = [
    column for column in spans.c if column.name not in (*SPAN_JSON_COLUMNS, "ingested_at")
]


async def agents(conn: AsyncConnection, *, limit: int = 200) -> list[str]:
    """Every agent name on a span, in order: each found by one step down the agent index
    from the previous one, so the cost is the number of agents, not of spans."""
    check_limit(limit)
    names: list[str] = []
    previous: str | None = None
    while len(names) < limit:
        step = sa.select(sa.func.min(spans.c.agent))
        if previous is not None:
            step = step.where(spans.c.agent > previous)
        previous = (await conn.execute(step)).scalar()
        if previous is None:
            break
        names.append(previous)
    return names


async def agent_recent(
    conn: AsyncConnection,
    agent: str,
    *,
    since: int | None = None,
    until: int | None = None,
    cap: int = RECENT_CAP,
) -> dict[str, Any]:
    """The agent's newest spans (at most `cap`) started in [since, until), as rows of
    `start_time, duration_ns, status_code, is_root, input_tokens, output_tokens, cost`,
    with the count and sum of the rewards linked to them; `capped` says whether older spans
    of the window were left out."""
    # Markers carry their agent's name but are no run of it.
    window = [spans.c.agent == agent, spans.c.name != MARKER_SPAN]
    if since is not None:
        window.append(spans.c.start_time >= since)
    if until is not None:
        window.append(spans.c.start_time < until)
    recent = (
        sa.select(
            spans.c.pk,
            spans.c.start_time,
            spans.c.duration_ns,
            spans.c.status_code,
            spans.c.parent_span_id.is_(None).label("is_root"),
            spans.c.input_tokens,
            spans.c.output_tokens,
            spans.c.cost,
        )
        .where(*window)
        .order_by(spans.c.agent.desc(), spans.c.start_time.desc())
        .limit(cap + 1)
    )
    rows = (await conn.execute(recent)).all()
    capped = len(rows) > cap
    rows = rows[:cap]
    pks = sa.select(recent.limit(cap).subquery().c.pk)
    # Each reward once, however many of the sample's spans it judges.
    judged = sa.select(reward_links.c.reward_pk).where(reward_links.c.span_pk.in_(pks)).distinct()
    count, total = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.sum(rewards.c.value)).where(rewards.c.pk.in_(judged))
        )
    ).one()
    return {
        "rows": [tuple(row)[1:] for row in rows],
        "capped": capped,
        "reward_count": int(count or 0),
        "reward_sum": float(total or 0.0),
    }


async def prompt_agents(conn: AsyncConnection) -> list[str]:
    """The agents that have prompts in the registry, in order."""
    rows = await conn.execute(sa.select(prompts.c.agent).distinct().order_by(prompts.c.agent))
    return [agent for (agent,) in rows]


async def trace_spans(
    conn: AsyncConnection, trace_id: str, *, cap: int = TRACE_CAP
) -> dict[str, Any]:
    """The trace's first `cap` spans by start time (no JSON columns), each with `reward_count`
    and `reward_mean` of the rewards linked to it; `capped` when the trace has more."""
    rows = (
        await conn.execute(
            sa.select(*_WATERFALL_COLUMNS)
            .where(spans.c.trace_id == trace_id)
            .order_by(spans.c.start_time, spans.c.pk)
            .limit(cap + 1)
        )
    ).all()
    capped = len(rows) > cap
    rows = rows[:cap]
    judged: dict[int, tuple[int, float]] = {}
    if rows:
        in_trace = sa.select(spans.c.pk).where(spans.c.trace_id == trace_id)
        result = await conn.execute(
            sa.select(reward_links.c.span_pk, sa.func.count(), sa.func.avg(rewards.c.value))
            .join(rewards, rewards.c.pk == reward_links.c.reward_pk)
            .where(reward_links.c.span_pk.in_(in_trace))
            .group_by(reward_links.c.span_pk)
        )
        judged = {pk: (count, mean) for pk, count, mean in result}
    items = []
    for row in rows:
        span = dict(row._mapping)
        count, mean = judged.get(span.pop("pk"), (0, None))
        items.append({**span, "reward_count": count, "reward_mean": mean})
    return {"spans": items, "capped": capped}


async def task_traces(
    conn: AsyncConnection, task_id: str, *, limit: int = 200
) -> list[dict[str, Any]]:
    """The task's traces, by execution: span count, errors, time range and root span name."""
    check_limit(limit)
    errors = sa.func.sum(sa.case((spans.c.status_code == "error", 1), else_=0))
    rows = await conn.execute(
        sa.select(
            spans.c.trace_id,
            spans.c.execution_id,
            sa.func.count().label("spans"),
            errors.label("errors"),
            sa.func.min(spans.c.start_time).label("start_ns"),
            sa.func.max(sa.func.coalesce(spans.c.end_time, spans.c.start_time)).label("end_ns"),
            sa.func.min(spans.c.sequence).label("first_sequence"),
        )
        .where(spans.c.task_id == task_id)
        .group_by(spans.c.trace_id, spans.c.execution_id)
        .order_by(sa.func.min(spans.c.sequence))
        .limit(limit)
    )
    return [dict(row._mapping) for row in rows]


async def task_rewards(
    conn: AsyncConnection, task_id: str, *, limit: int = 500
) -> list[dict[str, Any]]:
    """Rewards on the task, one of its executions, or linked to its spans, newest first,
    each with `execution_id`: the execution it judges (the target's, else its spans'; None
    for a reward on the task itself)."""
    check_limit(limit)
    own_executions = sa.select(executions.c.id).where(executions.c.task_id == task_id)
    on_spans = (
        sa.select(reward_links.c.reward_pk, spans.c.execution_id)
        .join(spans, spans.c.pk == reward_links.c.span_pk)
        .where(spans.c.task_id == task_id)
    )
    query = (
        sa.select(rewards)
        .where(
            sa.or_(
                rewards.c.target_task_id == task_id,
                rewards.c.target_execution_id.in_(own_executions),
                rewards.c.pk.in_(sa.select(on_spans.subquery().c.reward_pk)),
            )
        )
        .order_by(rewards.c.pk.desc())
        .limit(limit)
    )
    rows = (await conn.execute(query)).all()
    span_executions: dict[int, str] = {}
    pks = [row._mapping["pk"] for row in rows]
    if pks:
        for reward_pk, execution_id in await conn.execute(
            on_spans.where(reward_links.c.reward_pk.in_(pks))
        ):
            span_executions.setdefault(reward_pk, execution_id)
    items = await _with_links(conn, rows)
    for row, item in zip(rows, items, strict=True):
        m = row._mapping
        # A reward on the whole task judges no one execution, whichever spans it links to.
        on_task = m["target_task_id"] is not None and m["target_execution_id"] is None
        item["execution_id"] = (
            None if on_task else m["target_execution_id"] or span_executions.get(m["pk"])
        )
    return items


async def recent_markers(
    conn: AsyncConnection, *, agent: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """The newest markers of every agent (or of `agent`), from their marker tasks."""
    check_limit(limit)
    if agent is not None:
        in_marker_tasks = spans.c.task_id == TASK_PREFIX + agent
    else:
        # The marker tasks' ids form one range of the primary key.
        marker_tasks = sa.select(tasks.c.id).where(
            tasks.c.id >= TASK_PREFIX, tasks.c.id < TASK_PREFIX[:-1] + chr(ord(":") + 1)
        )
        in_marker_tasks = spans.c.task_id.in_(marker_tasks)
    rows = await conn.execute(
        sa.select(spans)
        .where(in_marker_tasks, spans.c.name == MARKER_SPAN)
        .order_by(spans.c.start_time.desc(), spans.c.pk.desc())
        .limit(limit)
    )
    return [marker_dict(span_dict(row._mapping)) for row in rows]


def summarise_recent(recent: dict[str, Any], *, agent: str, buckets: int = 24) -> dict[str, Any]:
    """An `agent_recent` sample as the overview shows it: runs (root spans, or every span of
    an agent that has none), success rate, latency p50/p95, tokens, cost, mean reward, and
    per time bucket the runs, success rate and p50 latency (for the sparklines)."""
    rows = recent["rows"]
    runs = [row for row in rows if row[3]] or rows
    durations = sorted(row[1] for row in runs if row[1] is not None)
    errors = sum(1 for row in runs if row[2] == "error")
    reward_count = recent["reward_count"]
    series: list[dict[str, Any]] = []
    if runs:
        first, last = min(row[0] for row in runs), max(row[0] for row in runs)
        width = max(1, (last - first) // buckets + 1)
        grouped: dict[int, list[Any]] = defaultdict(list)
        for row in runs:
            grouped[(row[0] - first) // width].append(row)
        for index in sorted(grouped):
            members = grouped[index]
            latencies = sorted(row[1] for row in members if row[1] is not None)
            failed = sum(1 for row in members if row[2] == "error")
            series.append(
                {
                    "t": first + index * width + width // 2,
                    "runs": len(members),
                    "success_rate": (len(members) - failed) / len(members),
                    "p50_ms": _ms(percentile(latencies, 0.5)),
                }
            )
    return {
        "agent": agent,
        "spans": len(rows),
        "capped": recent["capped"],
        "runs": len(runs),
        "errors": errors,
        "success_rate": (len(runs) - errors) / len(runs) if runs else None,
        "latency_ms": {
            "p50": _ms(percentile(durations, 0.5)),
            "p95": _ms(percentile(durations, 0.95)),
        },
        "tokens": sum((row[4] or 0) + (row[5] or 0) for row in rows),
        "cost": sum(row[6] or 0.0 for row in rows),
        "reward": {
            "count": reward_count,
            "mean": recent["reward_sum"] / reward_count if reward_count else None,
        },
        "series": series,
    }


def _ms(ns: float | None) -> float | None:
    return None if ns is None else ns / 1e6
