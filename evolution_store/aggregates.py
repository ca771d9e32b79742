"""Server-side aggregates: reward summaries with confidence intervals, and per-agent stats.

Sums are computed in SQL over DISTINCT (group, reward) pairs, so a reward linked to many
spans of one agent counts once for that agent; the mean, stdev and 95 % interval are derived
from count, sum and sum of squares.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import InvalidInput
from .queries import RewardQuery, reward_filters
from .rows import iso
from .schema import executions, reward_links, reward_span_tags, reward_tags, rewards, spans
from .sql import json_member_text


@functools.cache
def t95(degrees: int) -> float:
    """The two-sided 95 % Student t quantile (`scipy.stats.t`), NaN without degrees of
    freedom. scipy is imported on first use: it takes a second, and most processes that open
    the store never summarise."""
    if degrees <= 0:
        return math.nan
    from scipy import stats

    return float(stats.t.ppf(0.975, degrees))


def describe(count: int, total: float, squares: float) -> dict[str, Any]:
    """count, mean, sample stdev and a t-based 95 % CI from running sums."""
    mean = total / count
    if count < 2:
        return {"count": count, "mean": mean, "stdev": None, "ci95": [mean, mean]}
    variance = max(0.0, (squares - count * mean * mean) / (count - 1))
    stdev = math.sqrt(variance)
    half = t95(count - 1) * stdev / math.sqrt(count)
    return {"count": count, "mean": mean, "stdev": stdev, "ci95": [mean - half, mean + half]}


def _grouped_pairs(
    conn: AsyncConnection, group_by: str, where: list[sa.ColumnElement[bool]]
) -> sa.Select[Any]:
    """(key, pk, value) for every reward passing `where` and each group it belongs to."""
    base = (rewards.c.pk, rewards.c.value)
    linked = sa.join(rewards, reward_links, reward_links.c.reward_pk == rewards.c.pk).join(
        spans, spans.c.pk == reward_links.c.span_pk
    )
    if group_by == "name":
        return sa.select(rewards.c.name.label("key"), *base).where(*where)
    if group_by == "agent":
        return sa.select(spans.c.agent.label("key"), *base).select_from(linked).where(*where)
    if group_by == "tag":
        own = (
            sa.select(reward_tags.c.tag.label("key"), *base)
            .select_from(sa.join(rewards, reward_tags, reward_tags.c.reward_pk == rewards.c.pk))
            .where(*where)
        )
        # The tags of its linked spans, as the writer keeps them per reward (see schema).
        on_spans = (
            sa.select(reward_span_tags.c.tag.label("key"), *base)
            .select_from(
                sa.join(rewards, reward_span_tags, reward_span_tags.c.reward_pk == rewards.c.pk)
            )
            .where(*where)
        )
        return own.union(on_spans)  # type: ignore[return-value]
    if group_by.startswith("config:") and len(group_by) > len("config:"):
        key = group_by.removeprefix("config:")
        value = json_member_text(conn.dialect.name, executions.c.config, key).label("key")
        targeted = (
            sa.select(value, *base)
            .select_from(
                sa.join(rewards, executions, executions.c.id == rewards.c.target_execution_id)
            )
            .where(*where)
        )
        through_spans = (
            sa.select(value, *base)
            .select_from(linked.join(executions, executions.c.id == spans.c.execution_id))
            .where(*where)
        )
        return targeted.union(through_spans)  # type: ignore[return-value]
    raise InvalidInput("group_by must be name, tag, agent or config:<key>", field="group_by")


async def rewards_summary(
    conn: AsyncConnection, group_by: str, q: RewardQuery
) -> list[dict[str, Any]]:
    pairs = _grouped_pairs(conn, group_by, reward_filters(q))
    # UNION already removes repeated (key, reward) pairs; a plain select needs DISTINCT.
    unique = pairs if isinstance(pairs, sa.CompoundSelect) else pairs.distinct()
    sub = unique.subquery()
    # Postgres raises on float underflow, so squares of subnormal values count as 0: they are
    # far below what a double can add to any sum of squares anyway.
    square = sa.case((sa.func.abs(sub.c.value) < 1e-150, 0.0), else_=sub.c.value * sub.c.value)
    rows = await conn.execute(
        sa.select(
            sub.c.key,
            sa.func.count(),
            sa.func.sum(sub.c.value),
            sa.func.sum(square),
        )
        .group_by(sub.c.key)
        .order_by(sub.c.key.is_(None), sub.c.key)
    )
    return [{"key": key, **describe(count, total, squares)} for key, count, total, squares in rows]


def percentile(sorted_values: list[int], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


async def agent_stats(
    conn: AsyncConnection,
    agent: str,
    *,
    start_after: int | None = None,
    start_before: int | None = None,
) -> dict[str, Any]:
    """Success rate and latency over the agent's root spans (all its spans if it has no
    roots, e.g. a sub-agent); tokens and cost over all its spans; mean linked reward."""
    window = [spans.c.agent == agent]
    if start_after is not None:
        window.append(spans.c.start_time >= start_after)
    if start_before is not None:
        window.append(spans.c.start_time < start_before)
    totals = (
        await conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.sum(sa.case((spans.c.parent_span_id.is_(None), 1), else_=0)),
                sa.func.sum(spans.c.input_tokens),
                sa.func.sum(spans.c.output_tokens),
                sa.func.sum(spans.c.cost),
                sa.func.min(spans.c.start_time),
                sa.func.max(sa.func.coalesce(spans.c.end_time, spans.c.start_time)),
            ).where(*window)
        )
    ).one()
    span_count, root_count, input_tokens, output_tokens, cost, first, last = totals
    entry = [*window, spans.c.parent_span_id.is_(None)] if root_count else window
    outcomes = (
        await conn.execute(sa.select(spans.c.status_code, spans.c.duration_ns).where(*entry))
    ).all()
    errors = sum(1 for status, _ in outcomes if status == "error")
    durations = sorted(d for _, d in outcomes if d is not None)
    reward_row = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.avg(rewards.c.value)).where(
                rewards.c.pk.in_(
                    sa.select(reward_links.c.reward_pk)
                    .join(spans, spans.c.pk == reward_links.c.span_pk)
                    .where(*window)
                )
            )
        )
    ).one()

    def ms(fraction: float) -> float | None:
        value = percentile(durations, fraction)
        return None if value is None else value / 1e6

    return {
        "agent": agent,
        "spans": span_count,
        "runs": len(outcomes),
        "errors": errors,
        "success_rate": (len(outcomes) - errors) / len(outcomes) if outcomes else None,
        "latency_ms": {"p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99)},
        "tokens": {"input": int(input_tokens or 0), "output": int(output_tokens or 0)},
        "cost": float(cost or 0.0),
        "reward": {"count": reward_row[0], "mean": reward_row[1]},
        "time_range": {"start": iso(first), "end": iso(last)},
    }
