"""Rewards and their links to spans — written inside the writer's transaction.

A reward names a target; the spans it judges may not exist yet. It is stored at once
(pending) and linked whenever matching spans arrive, with no time limit, so nothing is lost
for arriving early:

- `span`      → that span (and trace, if given);
- `trace`     → the trace's root span;
- `execution` → the execution's root spans; `task` → the root spans of all its executions;
- `links`     → every span whose attributes equal all selectors (`trace_id`/`span_id` keys
                mean the ids).

Selectors match through the attribute index (`attribute_index`), so linking is an index
lookup, never a scan of the spans' JSON.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from .attribute_index import indexed_key_set, register_keys
from .backends import in_param, in_value
from .errors import Conflict
from .group_commit import WriteContext
from .models import RESERVED_LINK_KEYS, RewardIn, link_value_text, new_id
from .rows import MAX_LINKED_IDS, reward_dict
from .schema import (
    digest_matches,
    executions,
    reward_links,
    reward_selectors,
    reward_span_tags,
    reward_tags,
    rewards,
    span_id_equals,
    spans,
)
from .span_rows import attribute_digest, dumps, stored_tags
from .sql import run_in, select_in


@dataclass(slots=True)
class NewSpan:
    """A span inserted in this transaction, as reward resolution needs to see it."""

    pk: int
    trace_id: str
    span_id: str
    is_root: bool
    task_id: str
    execution_id: str
    #: indexed attribute values (see `span_rows.indexed_values`), for selector matching
    indexed_values: dict[str, str]


async def write_reward(
    conn: AsyncConnection, ctx: WriteContext, reward: RewardIn, *, first_wins: bool = False
) -> tuple[str, dict[str, Any] | None]:
    """Store a reward and link it to the spans that already match; later spans link to it as
    they arrive (`resolve_for_spans`). Returns (id, the reward as `queries.get_reward` would
    read it after COMMIT), or (id, None) when the id was taken and nothing was written.

    Idempotent on `id`: the same content again writes nothing. Other content under a taken id
    raises `Conflict` naming both values, unless `first_wins` (rewards carried in spans, whose
    ids derive from the carrier: the first write of a span wins, as for the span itself).

    Statements: the match, one `INSERT … ON CONFLICT (id) DO NOTHING RETURNING pk` (the
    duplicate check, the primary key and `resolved_at` in one), then only the inserts that
    have rows. Selector keys not yet indexed add a lookup and the back-fill, after a check
    that the id is new."""
    reward_id = reward.id or new_id()
    values = _columns(reward, reward_id, ctx.now_ns)
    selectors = {key: link_value_text(value) for key, value in reward.links.items()}
    if selectors:
        known = await indexed_key_set(conn, ctx)
        if not known.issuperset(selectors):
            # Back-filling a new key is costly: never do it for a reward that will not be stored.
            if await ctx.backend.fetch_all(conn, _STORED, {"id": reward_id}):
                return await _taken(conn, ctx, values, first_wins)
            await register_keys(conn, ctx, list(selectors))
    found = await _matching_stored_spans(conn, ctx, reward, selectors)
    matched = {span_pk: span_id for span_pk, span_id, _ in found}
    values["resolved_at"] = ctx.now_ns if matched else None
    inserted = await ctx.backend.fetch_all(conn, _insert_statement(conn.dialect.name), values)
    if not inserted:
        return await _taken(conn, ctx, values, first_wins)
    pk = inserted[0][0]
    if matched:
        await ctx.backend.insert_ignore(
            conn,
            reward_links,
            [
                {"reward_pk": pk, "span_pk": span_pk, "span_id": span_id}
                for span_pk, span_id in matched.items()
            ],
        )
    # The linked spans' tags, found by the match itself.
    if inherited := sorted({tag for _, _, tags in found for tag in tags}):
        await ctx.backend.insert_ignore(
            conn, reward_span_tags, [{"tag": tag, "reward_pk": pk} for tag in inherited]
        )
    if reward.tags:
        await ctx.backend.insert_ignore(
            conn, reward_tags, [{"tag": tag, "reward_pk": pk} for tag in reward.tags]
        )
    if selectors:
        await ctx.backend.insert_ignore(
            conn,
            reward_selectors,
            [{"key": k, "value": v, "reward_pk": pk} for k, v in selectors.items()],
        )
    # What `queries.get_reward` reads: the linked spans' ids in span pk order.
    span_ids = [matched[span_pk] for span_pk in sorted(matched)]
    return reward_id, reward_dict({"pk": pk, **values}, span_ids[:MAX_LINKED_IDS], len(span_ids))


def _columns(reward: RewardIn, reward_id: str, now: int) -> dict[str, Any]:
    """The reward's row, but for `pk` and `resolved_at`."""
    kind = reward.target_kind
    return {
        "id": reward_id,
        "name": reward.name,
        "value": reward.value,
        "dimensions": dumps(reward.dimensions),
        "feedback": reward.feedback,
        "source": reward.source,
        "tags": dumps(reward.tags),
        "metadata": dumps(reward.metadata),
        "created_at": now,
        "target_kind": kind,
        "target_span_id": reward.span_id if kind == "span" else None,
        "target_trace_id": reward.trace_id if kind in ("span", "trace") else None,
        "target_execution_id": reward.execution_id,
        "target_task_id": reward.task_id,
        "selectors": dumps(reward.links) if reward.links else None,
    }


#: what makes two rewards the same: every column the caller chose
_CONTENT = (
    "name",
    "value",
    "dimensions",
    "feedback",
    "source",
    "tags",
    "metadata",
    "target_kind",
    "target_span_id",
    "target_trace_id",
    "target_execution_id",
    "target_task_id",
    "selectors",
)
_JSON_CONTENT = frozenset({"dimensions", "tags", "metadata", "selectors"})
_STORED = sa.select(*(rewards.c[name] for name in _CONTENT)).where(
    rewards.c.id == sa.bindparam("id")
)


async def _taken(
    conn: AsyncConnection, ctx: WriteContext, values: dict[str, Any], first_wins: bool
) -> tuple[str, None]:
    """The answer for a reward whose id is stored already: nothing written, or `Conflict`."""
    reward_id = values["id"]
    if not first_wins:
        rows = await ctx.backend.fetch_all(conn, _STORED, {"id": reward_id})
        if rows and (differences := _differences(rows[0], values)):
            raise Conflict(
                f"reward id {reward_id!r} is taken by a reward with other content: "
                + "; ".join(differences)
            )
    return reward_id, None


def _differences(stored: Any, sent: dict[str, Any]) -> list[str]:
    """`<column>: stored <a>, sent <b>` for each content column that differs."""
    out = []
    for name, old in zip(_CONTENT, stored, strict=True):
        new = sent[name]
        if name in _JSON_CONTENT:  # compare what the JSON means, not its key order
            old = None if old is None else orjson.loads(old)
            new = None if new is None else orjson.loads(new)
        if old != new:
            label = "links" if name == "selectors" else name.removeprefix("target_")
            out.append(f"{label}: stored {old!r}, sent {new!r}")
    return out


#: every column `write_reward` sets (all but `pk`, which the database assigns)
_INSERT_COLUMNS = tuple(column.name for column in rewards.columns if column.name != "pk")


@functools.cache
def _insert_statement(dialect: str) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(rewards)
        .values({name: sa.bindparam(name) for name in _INSERT_COLUMNS})
        .on_conflict_do_nothing(index_elements=[rewards.c.id])
        .returning(rewards.c.pk)
    )


async def _matching_stored_spans(
    conn: AsyncConnection, ctx: WriteContext, reward: RewardIn, selectors: dict[str, str]
) -> list[tuple[int, str, list[str]]]:
    """(pk, span_id, tags) of the stored spans the reward's target names."""
    kind = reward.target_kind
    params: dict[str, Any] = {
        "span_id": reward.span_id,
        "trace_id": reward.trace_id,
        "execution_id": reward.execution_id,
        "task_id": reward.task_id,
    }
    reserved = tuple(key for key in RESERVED_LINK_KEYS if key in selectors)
    others = [(key, value) for key, value in selectors.items() if key not in RESERVED_LINK_KEYS]
    if kind == "links":
        params.update({key: selectors[key] for key in reserved})
        for index, (key, value) in enumerate(others):
            params[f"digest_{index}"] = attribute_digest(key, value)
    by_trace = kind == "span" and reward.trace_id is not None
    statement = _match_statement(kind, by_trace, reserved, len(others))
    rows = await ctx.backend.fetch_all(conn, statement, params)
    return [(row[0], row[1], stored_tags(row[2])) for row in rows]


@functools.lru_cache(maxsize=64)
def _match_statement(
    kind: str, by_trace: bool, reserved: tuple[str, ...], others: int
) -> sa.Select[Any]:
    """The stored spans a target names, with their tags (JSON), with bind parameters `span_id`,
    `trace_id`, `execution_id`, `task_id` and, for selectors, `digest_<i>`: one
    statement per shape, so SQLAlchemy (and `Backend.fetch_all`) compile each shape once."""
    query = sa.select(spans.c.pk, spans.c.span_id, spans.c.tags)
    is_root = spans.c.parent_span_id.is_(None)
    if kind == "span":
        query = query.where(span_id_equals(sa.bindparam("span_id")))
        if by_trace:
            query = query.where(spans.c.trace_id == sa.bindparam("trace_id"))
    elif kind == "trace":
        query = query.where(spans.c.trace_id == sa.bindparam("trace_id"), is_root)
    elif kind == "execution":
        owner = sa.select(executions.c.task_id).where(
            executions.c.id == sa.bindparam("execution_id")
        )
        query = query.where(
            spans.c.task_id == owner.scalar_subquery(),
            spans.c.execution_id == sa.bindparam("execution_id"),
            is_root,
        )
    elif kind == "task":
        query = query.where(spans.c.task_id == sa.bindparam("task_id"), is_root)
    else:
        for key in reserved:
            query = query.where(getattr(spans.c, key) == sa.bindparam(key))
        for index in range(others):
            query = query.where(spans.c.pk.in_(digest_matches(sa.bindparam(f"digest_{index}"))))
    return query


async def resolve_for_spans(
    conn: AsyncConnection, ctx: WriteContext, new_spans: list[NewSpan]
) -> None:
    """Link every stored reward whose target matches one of the spans just inserted.

    One lookup finds the rewards that target any of the new spans' ids, any new root's trace,
    execution or task, or any of their indexed attribute values (`_pending_rewards`): the
    writer runs this for every group, and nearly always it finds nothing."""
    # Only keys some selector has used (or the default link keys) are looked up; the ids
    # `trace_id`/`span_id` count once a selector has named them.
    selector_keys = await indexed_key_set(conn, ctx)
    id_keys = [key for key in RESERVED_LINK_KEYS if key in selector_keys]
    span_values = [_selector_values(span, id_keys) for span in new_spans]
    pairs: dict[str, set[str]] = defaultdict(set)
    for values in span_values:
        for key, value in values.items():
            pairs[key].add(value)
    roots = [span for span in new_spans if span.is_root]
    dialect = conn.dialect.name
    params = _pending_params(new_spans, roots, pairs, dialect)
    found = await ctx.backend.fetch_all(conn, _pending_rewards(len(pairs), dialect), params)
    if not found:
        return
    links, candidates = _target_links(found, new_spans, roots)
    if candidates:
        await _match_selectors(conn, ctx, new_spans, span_values, candidates, links)
    if links:
        await _link(conn, ctx, links, {span.pk: span.span_id for span in new_spans})


def _pending_params(
    new_spans: list[NewSpan], roots: list[NewSpan], pairs: dict[str, set[str]], dialect: str
) -> dict[str, Any]:
    """The parameters of `_pending_rewards` for these spans, their roots and the values of
    their indexed keys (`pairs`)."""
    params: dict[str, Any] = {
        "span_ids": in_value(list({span.span_id for span in new_spans}), dialect)
    }
    for kind in ROOT_TARGETS:
        ids = {getattr(span, f"{kind}_id") for span in roots}
        params[f"{kind}_ids"] = in_value(list(ids), dialect)
    for index, (key, values) in enumerate(pairs.items()):
        params[f"key_{index}"] = key
        params[f"values_{index}"] = in_value(sorted(values), dialect)
    return params


def _target_links(
    found: list[Any], new_spans: list[NewSpan], roots: list[NewSpan]
) -> tuple[dict[int, list[int]], set[int]]:
    """From the rows of `_pending_rewards`: the links of rewards that target a span, trace,
    execution or task (reward pk -> span pks), and the rewards with a matching selector,
    whose other selectors are still to check."""
    by_id = {"span": _by_value(new_spans, "span_id")}
    for kind in ROOT_TARGETS:
        by_id[kind] = _by_value(roots, f"{kind}_id")
    links: dict[int, list[int]] = defaultdict(list)
    candidates: set[int] = set()
    for reward_pk, kind, value, trace_id in found:
        if kind == "links":
            candidates.add(reward_pk)
            continue
        # `trace_id` is set only for a span target that names its trace too
        links[reward_pk].extend(
            span.pk for span in by_id[kind].get(value, ()) if trace_id in (None, span.trace_id)
        )
    return links, candidates


#: target kinds that link to root spans only, by the root's `<kind>_id`
ROOT_TARGETS = ("trace", "execution", "task")


@functools.lru_cache(maxsize=16)
def _pending_rewards(selector_keys: int, dialect: str) -> sa.CompoundSelect[Any]:
    """(reward pk, kind, value, trace id) of the rewards that may link to new spans: by span
    id (`span_ids`; the trace id then narrows it), by a root's trace, execution or task id
    (`<kind>_ids`), and by a selector on one of `selector_keys` indexed keys (`key_<i>`,
    `values_<i>`; kind "links", whose other selectors `_match_selectors` checks). One
    statement of index lookups, one branch each, compiled once per number of keys."""
    branches = [
        sa.select(
            rewards.c.pk, sa.literal("span"), rewards.c.target_span_id, rewards.c.target_trace_id
        ).where(in_param(rewards.c.target_span_id, "span_ids", dialect))
    ]
    for kind in ROOT_TARGETS:
        column = rewards.c[f"target_{kind}_id"]
        branches.append(
            sa.select(rewards.c.pk, sa.literal(kind), column, sa.null()).where(
                in_param(column, f"{kind}_ids", dialect), rewards.c.target_kind == kind
            )
        )
    for index in range(selector_keys):
        branches.append(
            sa.select(
                reward_selectors.c.reward_pk, sa.literal("links"), sa.null(), sa.null()
            ).where(
                reward_selectors.c.key == sa.bindparam(f"key_{index}"),
                in_param(reward_selectors.c.value, f"values_{index}", dialect),
            )
        )
    return sa.union_all(*branches)


def _by_value(spans: list[NewSpan], attribute: str) -> dict[str, list[NewSpan]]:
    grouped: dict[str, list[NewSpan]] = defaultdict(list)
    for span in spans:
        grouped[getattr(span, attribute)].append(span)
    return grouped


async def _match_selectors(
    conn: AsyncConnection,
    ctx: WriteContext,
    new_spans: list[NewSpan],
    span_values: list[dict[str, str]],
    candidates: set[int],
    links: dict[int, list[int]],
) -> None:
    """Link the candidate rewards (one selector matched) whose selectors all equal some new
    span's values (`span_values`, in `new_spans` order)."""
    wanted: dict[int, dict[str, str]] = defaultdict(dict)
    columns = (reward_selectors.c.reward_pk, reward_selectors.c.key, reward_selectors.c.value)
    for reward_pk, key, value in await select_in(
        conn, ctx, columns, reward_selectors.c.reward_pk, sorted(candidates)
    ):
        wanted[reward_pk][key] = value
    for reward_pk, selectors in wanted.items():
        for span, values in zip(new_spans, span_values, strict=True):
            if all(values.get(key) == value for key, value in selectors.items()):
                links[reward_pk].append(span.pk)


def _selector_values(span: NewSpan, id_keys: list[str]) -> dict[str, str]:
    # The span's indexed attribute values were computed for this very key set (ingest makes
    # sure); the reserved keys a selector has named are its ids. Copied only when those are
    # added: nearly always there are none, and this runs for every span of every group.
    if not id_keys:
        return span.indexed_values
    values = dict(span.indexed_values)
    for key in id_keys:
        values[key] = getattr(span, key)
    return values


async def _link(
    conn: AsyncConnection,
    ctx: WriteContext,
    links: dict[int, list[int]],
    span_ids: dict[int, str],
) -> None:
    """Link rewards to spans (`links`: reward pk -> span pks; `span_ids`: span pk -> id)."""
    rows = [
        {"reward_pk": reward_pk, "span_pk": span_pk, "span_id": span_ids[span_pk]}
        for reward_pk, span_pks in links.items()
        for span_pk in dict.fromkeys(span_pks)
    ]
    if not rows:
        return
    await ctx.backend.insert_ignore(conn, reward_links, rows)
    await _inherit_span_tags(conn, ctx, rows)
    await run_in(conn, ctx, _mark_resolved, sorted(links), now=ctx.now_ns)


@functools.cache
def _mark_resolved(dialect: str) -> sa.Update:
    return (
        sa.update(rewards)
        .where(in_param(rewards.c.pk, "values", dialect), rewards.c.resolved_at.is_(None))
        .values(resolved_at=sa.bindparam("now"))
    )


async def _inherit_span_tags(
    conn: AsyncConnection, ctx: WriteContext, link_rows: list[dict[str, int]]
) -> None:
    """Copy the tags of newly linked spans to `reward_span_tags` (see schema)."""
    span_pks = sorted({row["span_pk"] for row in link_rows})
    columns = (spans.c.pk, spans.c.tags)
    tags_of = {
        span_pk: stored_tags(tags)
        for span_pk, tags in await select_in(conn, ctx, columns, spans.c.pk, span_pks)
    }
    pairs = {
        (tag, row["reward_pk"]) for row in link_rows for tag in tags_of.get(row["span_pk"], ())
    }
    await ctx.backend.insert_rows(
        conn, reward_span_tags, ("tag", "reward_pk"), sorted(pairs), fresh=False
    )
