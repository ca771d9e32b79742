"""Rewards and their links to spans — written inside the writer's transaction.

A reward names a target; the spans it judges may not exist yet. It is stored at once
(pending) and linked whenever matching spans arrive, with no time limit, so nothing is lost
for arriving early:

- `span`      → that span (and trace, if given);
- `trace`     → the trace's root span;
- `execution` → the execution's root spans; `task` → the root spans of all its executions;
- `links`     → every span whose attributes equal all selectors (`trace_id`/`span_id` keys
                mean the ids).

Selector keys are registered in `indexed_keys`; from then on the writer copies those
attributes of every new span into `span_attributes`, so matching is an index lookup. A key
seen for the first time is back-filled from the spans already stored.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .models import RESERVED_LINK_KEYS, RewardIn, link_value_text, new_id
from .schema import (
    executions,
    indexed_keys,
    reward_links,
    reward_selectors,
    reward_tags,
    rewards,
    span_attributes,
    spans,
)
from .writer import WriteContext

if TYPE_CHECKING:
    from .ingest import NewSpan


async def insert_reward(
    conn: AsyncConnection, ctx: WriteContext, reward: RewardIn
) -> tuple[str, bool]:
    """Store a reward and link it to the spans that already match. Idempotent on `id`: a
    reused id returns the stored reward unchanged (first write wins). Returns (id, created)."""
    from .ingest import dumps

    reward_id = reward.id or new_id()
    if (await conn.execute(sa.select(rewards.c.pk).where(rewards.c.id == reward_id))).first():
        return reward_id, False
    selectors = {key: link_value_text(value) for key, value in reward.links.items()}
    pk = (await ctx.backend.reserve_pks(conn, rewards, 1))[0]
    await conn.execute(
        sa.insert(rewards).values(
            pk=pk,
            id=reward_id,
            name=reward.name,
            value=reward.value,
            dimensions=dumps(reward.dimensions),
            feedback=reward.feedback,
            source=reward.source,
            tags=dumps(reward.tags),
            metadata=dumps(reward.metadata),
            created_at=ctx.now_ns,
            target_kind=reward.target_kind,
            target_span_id=reward.span_id if reward.target_kind == "span" else None,
            target_trace_id=reward.trace_id if reward.target_kind in ("span", "trace") else None,
            target_execution_id=reward.execution_id,
            target_task_id=reward.task_id,
            selectors=dumps(reward.links) if reward.links else None,
        )
    )
    await ctx.backend.insert_ignore(
        conn, reward_tags, [{"tag": tag, "reward_pk": pk} for tag in reward.tags]
    )
    if selectors:
        await ctx.backend.insert_ignore(
            conn,
            reward_selectors,
            [{"key": k, "value": v, "reward_pk": pk} for k, v in selectors.items()],
        )
        await _register_keys(conn, ctx, list(selectors))
    span_pks = await _matching_stored_spans(conn, reward, selectors)
    await _link(conn, ctx, {pk: span_pks})
    return reward_id, True


async def _matching_stored_spans(
    conn: AsyncConnection, reward: RewardIn, selectors: dict[str, str]
) -> list[int]:
    kind = reward.target_kind
    query = sa.select(spans.c.pk)
    if kind == "span":
        query = query.where(spans.c.span_id == reward.span_id)
        if reward.trace_id:
            query = query.where(spans.c.trace_id == reward.trace_id)
    elif kind == "trace":
        query = query.where(spans.c.trace_id == reward.trace_id, spans.c.parent_span_id.is_(None))
    elif kind == "execution":
        owner = sa.select(executions.c.task_id).where(executions.c.id == reward.execution_id)
        query = query.where(
            spans.c.task_id == owner.scalar_subquery(),
            spans.c.execution_id == reward.execution_id,
            spans.c.parent_span_id.is_(None),
        )
    elif kind == "task":
        query = query.where(spans.c.task_id == reward.task_id, spans.c.parent_span_id.is_(None))
    else:
        for key in RESERVED_LINK_KEYS:
            if key in selectors:
                query = query.where(getattr(spans.c, key) == selectors[key])
        for key, value in selectors.items():
            if key not in RESERVED_LINK_KEYS:
                query = query.where(
                    spans.c.pk.in_(
                        sa.select(span_attributes.c.span_pk).where(
                            span_attributes.c.key == key, span_attributes.c.value == value
                        )
                    )
                )
    return [row[0] for row in await conn.execute(query)]


async def resolve_for_spans(
    conn: AsyncConnection, ctx: WriteContext, new_spans: list[NewSpan]
) -> None:
    """Link every stored reward whose target matches one of the spans just inserted."""
    from .ingest import in_chunks, isin

    links: dict[int, list[int]] = defaultdict(list)
    by_span_id: dict[str, list[NewSpan]] = defaultdict(list)
    for span in new_spans:
        by_span_id[span.span_id].append(span)
    for chunk in in_chunks(list(by_span_id)):
        rows = await conn.execute(
            sa.select(rewards.c.pk, rewards.c.target_span_id, rewards.c.target_trace_id).where(
                isin(conn, rewards.c.target_span_id, chunk)
            )
        )
        for reward_pk, span_id, trace_id in rows:
            for span in by_span_id[span_id]:
                if trace_id is None or trace_id == span.trace_id:
                    links[reward_pk].append(span.pk)
    roots = [span for span in new_spans if span.is_root]
    for column, attribute, kind in (
        (rewards.c.target_trace_id, "trace_id", "trace"),
        (rewards.c.target_execution_id, "execution_id", "execution"),
        (rewards.c.target_task_id, "task_id", "task"),
    ):
        await _link_roots(conn, roots, column, attribute, kind, links)
    await _match_selectors(conn, ctx, new_spans, links)
    await _link(conn, ctx, links)


async def _link_roots(
    conn: AsyncConnection,
    roots: list[NewSpan],
    column: sa.Column[Any],
    attribute: str,
    kind: str,
    links: dict[int, list[int]],
) -> None:
    from .ingest import in_chunks, isin

    by_value: dict[str, list[int]] = defaultdict(list)
    for span in roots:
        by_value[getattr(span, attribute)].append(span.pk)
    for chunk in in_chunks(list(by_value)):
        rows = await conn.execute(
            sa.select(rewards.c.pk, column).where(
                isin(conn, column, chunk), rewards.c.target_kind == kind
            )
        )
        for reward_pk, value in rows:
            links[reward_pk].extend(by_value[value])


async def _match_selectors(
    conn: AsyncConnection,
    ctx: WriteContext,
    new_spans: list[NewSpan],
    links: dict[int, list[int]],
) -> None:
    """Find rewards whose selectors all equal some new span's attributes."""
    from .ingest import in_chunks, indexed_key_set, isin

    # Only keys some selector has used (or the default link keys) are looked up; the ids
    # `trace_id`/`span_id` count once a selector has named them.
    selector_keys = await indexed_key_set(conn, ctx)
    span_values: list[dict[str, str]] = []
    pairs: dict[str, set[str]] = defaultdict(set)
    for span in new_spans:
        values = _selector_values(span, selector_keys)
        span_values.append(values)
        for key, value in values.items():
            pairs[key].add(value)
    candidates: set[int] = set()
    for key, values in pairs.items():
        for chunk in in_chunks(sorted(values)):
            rows = await conn.execute(
                sa.select(reward_selectors.c.reward_pk).where(
                    reward_selectors.c.key == key, isin(conn, reward_selectors.c.value, chunk)
                )
            )
            candidates.update(row[0] for row in rows)
    if not candidates:
        return
    wanted: dict[int, dict[str, str]] = defaultdict(dict)
    for chunk in in_chunks(sorted(candidates)):
        rows = await conn.execute(
            sa.select(
                reward_selectors.c.reward_pk, reward_selectors.c.key, reward_selectors.c.value
            ).where(isin(conn, reward_selectors.c.reward_pk, chunk))
        )
        for reward_pk, key, value in rows:
            wanted[reward_pk][key] = value
    for reward_pk, selectors in wanted.items():
        for span, values in zip(new_spans, span_values, strict=True):
            if all(values.get(key) == value for key, value in selectors.items()):
                links[reward_pk].append(span.pk)


def _selector_values(span: NewSpan, keys: set[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key in keys:
        if key in RESERVED_LINK_KEYS:
            values[key] = getattr(span, key)
            continue
        value = span.attributes.get(key)
        if isinstance(value, str | int | float | bool):
            values[key] = link_value_text(value)
    return values


async def _link(conn: AsyncConnection, ctx: WriteContext, links: dict[int, list[int]]) -> None:
    from .ingest import in_chunks, isin

    rows = [
        {"reward_pk": reward_pk, "span_pk": span_pk}
        for reward_pk, span_pks in links.items()
        for span_pk in dict.fromkeys(span_pks)
    ]
    if not rows:
        return
    await ctx.backend.insert_ignore(conn, reward_links, rows)
    for chunk in in_chunks(sorted(links)):
        await conn.execute(
            sa.update(rewards)
            .where(isin(conn, rewards.c.pk, chunk), rewards.c.resolved_at.is_(None))
            .values(resolved_at=ctx.now_ns)
        )


async def _register_keys(conn: AsyncConnection, ctx: WriteContext, keys: Iterable[str]) -> None:
    """Start indexing new selector keys, back-filling the spans already stored."""
    from .ingest import indexed_key_set

    known = await indexed_key_set(conn, ctx)
    for key in [key for key in keys if key not in known]:
        await ctx.backend.insert_ignore(
            conn, indexed_keys, [{"key": key, "created_at": ctx.now_ns}]
        )
        if key not in RESERVED_LINK_KEYS:  # ids are columns already: nothing to copy
            await _backfill_key(conn, ctx, key)
        known.add(key)


async def _backfill_key(conn: AsyncConnection, ctx: WriteContext, key: str) -> None:
    # A substring test narrows the scan in SQL; the JSON is parsed only for candidates.
    needle = orjson.dumps(key).decode()
    result = await conn.stream(
        sa.select(spans.c.pk, spans.c.attributes).where(
            spans.c.attributes.contains(needle, autoescape=True)
        )
    )
    batch: list[dict[str, Any]] = []
    async for pk, text in result:
        value = orjson.loads(text).get(key)
        if isinstance(value, str | int | float | bool):
            value_text = link_value_text(value)
            if len(value_text) <= 500:
                batch.append({"key": key, "value": value_text, "span_pk": pk})
    await ctx.backend.insert_ignore(conn, span_attributes, batch)
