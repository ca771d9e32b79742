"""Reads of experiments, with their results computed live (the statistics: `experiment_stats`).

A/B results come from the database as it is now: the rewards of the executions whose
`config.prompt_id` is a variant, created while the experiment ran (from its `created_at`, up
to its `stopped_at`). A reward counts once per variant, however many of the variant's spans it
is linked to; rewards on an execution count before any of its spans arrive, as in
`rewards/summary?group_by=config:prompt_id`. Regression results are the rows the optimiser
posted (`experiment_writes.add_results`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import NotFound
from .experiment_stats import ab_results, regression_results
from .queries import Page, keyset_page
from .rows import iso
from .schema import executions, experiment_results, experiments, reward_links, rewards, spans
from .sql import json_member_text

#: the execution config key that names the prompt an execution ran with
PROMPT_CONFIG_KEY = "prompt_id"


async def get_experiment(conn: AsyncConnection, experiment_id: str) -> dict[str, Any]:
    """The experiment and its results per variant (`NotFound` if unknown)."""
    row = (
        await conn.execute(sa.select(experiments).where(experiments.c.id == experiment_id))
    ).first()
    if row is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    experiment = experiment_dict(row._mapping)
    experiment["results"] = await experiment_results_of(conn, row._mapping)
    return experiment


async def list_experiments(
    conn: AsyncConnection,
    *,
    agent: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Experiments, newest first, filtered by agent and status. Items carry no `results`:
    computing them reads every variant's rewards, so only `get_experiment` does."""
    query = sa.select(experiments)
    if agent is not None:
        query = query.where(experiments.c.agent == agent)
    if status is not None:
        query = query.where(experiments.c.status == status)
    order = [experiments.c.created_at, experiments.c.id]
    rows, next_cursor = await keyset_page(
        conn, query, order, cursor=cursor, limit=limit, descending=True
    )
    return Page([experiment_dict(row._mapping) for row in rows], next_cursor)


def experiment_dict(m: Any) -> dict[str, Any]:
    """A stored experiment as the API returns it (without results)."""
    spec = orjson.loads(m["spec"])
    return {
        "id": m["id"],
        "agent": m["agent"],
        "kind": m["kind"],
        "status": m["status"],
        "variants": orjson.loads(m["variants"]),
        "metric": spec.get("metric"),
        "baseline": spec.get("baseline"),
        "target": spec.get("target", []),
        "control": spec.get("control", []),
        "winner": m["winner"],
        "created_at": iso(m["created_at"]),
        "stopped_at": iso(m["stopped_at"]),
    }


async def experiment_results_of(conn: AsyncConnection, m: Any) -> list[dict[str, Any]]:
    """The results of the stored experiment `m`, per variant in its order."""
    variants = orjson.loads(m["variants"])
    spec = orjson.loads(m["spec"])
    if m["kind"] == "regression":
        rows = await conn.execute(
            sa.select(
                experiment_results.c.prompt_id,
                experiment_results.c.example_id,
                experiment_results.c.score,
                experiment_results.c.tokens,
                experiment_results.c.latency_ms,
            ).where(experiment_results.c.experiment_id == m["id"])
        )
        return regression_results(
            variants,
            [row._mapping for row in rows],
            spec.get("target", []),
            spec.get("control", []),
        )
    prompt_ids = [v["prompt_id"] for v in variants]
    window = _window(conn, prompt_ids, m["created_at"], m["stopped_at"])
    values = await _reward_values(conn, window, spec.get("metric"))
    usage = await _usage(conn, window)
    return ab_results(variants, values, usage)


def _prompt_of(conn: AsyncConnection) -> Any:
    return json_member_text(conn.dialect.name, executions.c.config, PROMPT_CONFIG_KEY)


def _window(
    conn: AsyncConnection, prompt_ids: list[str], start: int, end: int | None
) -> list[sa.ColumnElement[bool]]:
    """The executions of the variants created while the experiment ran."""
    window = [_prompt_of(conn).in_(prompt_ids), executions.c.created_at >= start]
    if end is not None:
        window.append(executions.c.created_at < end)
    return window


def _spans_of_executions() -> sa.ColumnElement[bool]:
    # The task id too: spans are indexed by (task_id, sequence), not by execution.
    return sa.and_(spans.c.task_id == executions.c.task_id, spans.c.execution_id == executions.c.id)


async def _reward_values(
    conn: AsyncConnection, window: list[sa.ColumnElement[bool]], metric: str | None
) -> dict[str, list[float]]:
    """prompt id -> the values of its rewards, in the order they were stored (one query).
    A reward is found on its target execution or through the spans it is linked to; UNION
    keeps each (prompt, reward) once."""
    where = [*window, rewards.c.name == metric] if metric is not None else window
    prompt = _prompt_of(conn).label("prompt_id")
    targeted = (
        sa.select(prompt, rewards.c.pk, rewards.c.value)
        .select_from(sa.join(rewards, executions, executions.c.id == rewards.c.target_execution_id))
        .where(*where)
    )
    linked = (
        sa.select(prompt, rewards.c.pk, rewards.c.value)
        .select_from(
            sa.join(executions, spans, _spans_of_executions())
            .join(reward_links, reward_links.c.span_pk == spans.c.pk)
            .join(rewards, rewards.c.pk == reward_links.c.reward_pk)
        )
        .where(*where)
    )
    found = (await conn.execute(targeted.union(linked))).all()
    values: dict[str, list[float]] = defaultdict(list)
    # By reward, so the same rewards give the same sums (and p-values) to the last bit.
    for prompt_id, _, value in sorted(found, key=lambda row: (row[0], row[1])):
        values[prompt_id].append(float(value))
    return values


async def _usage(
    conn: AsyncConnection, window: list[sa.ColumnElement[bool]]
) -> dict[str, dict[str, Any]]:
    """prompt id -> {executions, tokens, latency_ms}: how many of its executions have spans,
    their mean tokens (input + output over all their spans) and mean latency (from the first
    root span's start to the last one's end; executions without a finished root are left
    out of the latency)."""
    root = spans.c.parent_span_id.is_(None)
    per_execution = (
        sa.select(
            sa.func.min(_prompt_of(conn)).label("prompt_id"),
            sa.func.sum(
                sa.func.coalesce(spans.c.input_tokens, 0)
                + sa.func.coalesce(spans.c.output_tokens, 0)
            ).label("tokens"),
            (
                sa.func.max(sa.case((root, spans.c.end_time)))
                - sa.func.min(sa.case((root, spans.c.start_time)))
            ).label("latency_ns"),
        )
        .select_from(sa.join(executions, spans, _spans_of_executions()))
        .where(*window)
        .group_by(executions.c.id)
        .subquery()
    )
    rows = await conn.execute(
        sa.select(
            per_execution.c.prompt_id,
            sa.func.count(),
            sa.func.avg(per_execution.c.tokens),
            sa.func.avg(per_execution.c.latency_ns),
        ).group_by(per_execution.c.prompt_id)
    )
    return {
        prompt_id: {
            "executions": count,
            "tokens": None if tokens is None else float(tokens),
            "latency_ms": None if latency is None else float(latency) / 1e6,
        }
        for prompt_id, count, tokens, latency in rows
    }
