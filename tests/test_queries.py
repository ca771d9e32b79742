"""Reads: filters, keyset pagination, agent stats, and query plans that use the indexes."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from factories import span_record, trace_id
from sqlalchemy.ext.asyncio import AsyncConnection

from evolution_store import EvolutionStore, InvalidInput
from evolution_store.models import RewardIn, TaskIn
from evolution_store.queries import RewardQuery, SpanQuery
from evolution_store.schema import (
    SPAN_BUCKET_BITS,
    digest_matches,
    reward_tags,
    rewards,
    span_bucket,
    span_id_equals,
    span_tags,
    spans,
)
from evolution_store.span_rows import attribute_digest


async def test_span_filters(store: EvolutionStore) -> None:
    trace = trace_id()
    ok = span_record(trace_id=trace, name="chat", attributes={"session.id": "s-9", "n": 3})
    bad = span_record(
        trace_id=trace, name="tool", status_code="error", start_time=ok.start_time + 5
    )
    await store.ingest([ok, bad])

    async def names(**filters: object) -> list[str]:
        return [span["name"] for span in (await store.list_spans(SpanQuery(**filters))).items]

    assert await names(trace_id=trace) == ["chat", "tool"]
    assert await names(name="tool") == ["tool"]
    assert await names(status="error") == ["tool"]
    assert await names(attributes={"session.id": "s-9"}) == ["chat"]  # indexed key
    assert await names(attributes={"n": "3"}) == ["chat"]  # JSON fallback, canonical text
    assert await names(start_after=ok.start_time + 1) == ["tool"]
    assert await names(start_before=ok.start_time + 1) == ["chat"]
    assert await names(task_id=trace, execution_id=trace) == ["chat", "tool"]


async def test_an_indexed_attribute_of_any_length_is_found(store: EvolutionStore) -> None:
    # The index keeps digests, so long values are indexed too (the text index stopped at 500
    # characters, and a filter on a longer value of an indexed key found nothing).
    long_value = "s" * 2000
    await store.ingest([span_record(name="long", attributes={"session.id": long_value})])
    page = await store.list_spans(SpanQuery(attributes={"session.id": long_value}))
    assert [span["name"] for span in page.items] == ["long"]


def test_the_attribute_digest_never_changes() -> None:
    # Stored digests are computed by this function: changing it needs a migration that
    # recomputes `span_attributes`.
    assert attribute_digest("session.id", "s-1") == 5333365678482514698
    assert attribute_digest("a", "b\x00c") != attribute_digest("a\x00b", "c")


async def test_keyset_pagination_visits_every_span_once(store: EvolutionStore) -> None:
    records = [span_record() for _ in range(25)]
    await store.ingest(records)
    seen, cursor = [], None
    while True:
        page = await store.list_spans(SpanQuery(limit=10, cursor=cursor))
        seen.extend(span["span_id"] for span in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(record.span_id for record in records)


async def test_bad_cursor_and_limit_are_invalid_input(store: EvolutionStore) -> None:
    with pytest.raises(InvalidInput):
        await store.list_spans(SpanQuery(cursor="not-a-cursor"))
    with pytest.raises(InvalidInput):
        await store.list_rewards(RewardQuery(limit=0))
    with pytest.raises(InvalidInput):
        await store.rewards_summary("colour")


async def test_agent_stats(store: EvolutionStore) -> None:
    trace = trace_id()
    root = span_record(trace_id=trace, name="run", attributes={"gen_ai.agent.name": "bot"})
    failed = span_record(name="run", status_code="error", attributes={"gen_ai.agent.name": "bot"})
    llm = span_record(
        trace_id=trace,
        parent_span_id=root.span_id,
        attributes={
            "gen_ai.agent.name": "bot",
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": 10,
            "gen_ai.usage.output_tokens": 4,
        },
    )
    await store.ingest([root, failed, llm])
    await store.add_reward(RewardIn(value=0.5, span_id=root.span_id))
    stats = await store.agent_stats("bot")
    assert (stats["spans"], stats["runs"], stats["errors"]) == (3, 2, 1)
    assert stats["success_rate"] == 0.5
    assert stats["tokens"] == {"input": 10, "output": 4}
    assert stats["latency_ms"]["p50"] == pytest.approx(1.0)
    assert stats["reward"] == {"count": 1, "mean": 0.5}


@pytest.mark.parametrize(
    ("statement", "index"),
    [
        (sa.select(spans).where(spans.c.trace_id == "a" * 32), "uq_spans_identity"),
        (sa.select(spans).where(span_id_equals("b" * 16)), "ix_spans_bucket_span_id"),
        (
            sa.select(spans).where(spans.c.task_id == "t").order_by(spans.c.sequence).limit(10),
            "ix_spans_task_sequence",
        ),
        (sa.select(span_tags.c.span_pk).where(span_tags.c.tag == "x"), "span_tags"),
        (digest_matches(42), "span_attributes"),
        (sa.select(reward_tags.c.reward_pk).where(reward_tags.c.tag == "x"), "reward_tags"),
        (sa.select(rewards).where(rewards.c.target_span_id == "b" * 16), "ix_rewards_target_span"),
    ],
    ids=["trace", "span", "task", "span-tag", "attribute", "reward-tag", "reward-target"],
)
async def test_hot_queries_use_an_index(
    store: EvolutionStore, statement: sa.Select, index: str
) -> None:
    # Postgres prefers sequential scans on tiny tables; forbid them to see which index it
    # would use. SQLite's planner reports the index it picked either way.
    plan = await store.explain(statement)
    if store.backend_name == "postgres":
        assert "Index" in plan or "Bitmap" in plan or "Seq Scan" in plan
        plan = await _explain_without_seqscan(store, statement)
        assert "Seq Scan" not in plan, plan
    else:
        # Scans of a constant row and of the bucket numbers (`schema.in_span_buckets`) read
        # no table.
        scanned = plan.replace("SCAN CONSTANT ROW", "").replace("SCAN span_buckets", "")
        assert "SCAN" not in scanned, plan
        # Unique constraints show up under SQLite's own name (sqlite_autoindex_<table>_N).
        named = index in plan or "PRIMARY KEY" in plan or "sqlite_autoindex" in plan
        assert "SEARCH" in plan and "USING" in plan and named, plan


async def test_spans_are_found_by_id_and_attribute_in_every_bucket(store: EvolutionStore) -> None:
    # Span ids and attribute digests are indexed by bucket of arrival (`schema.span_bucket`,
    # 65,536 spans each): every lookup of a grown store must probe every bucket in use.
    session = {"session.id": "s-buckets"}
    first = span_record(attributes=session)
    await store.ingest([first])
    await store.writer.submit(_skip_to_bucket(2, store.backend_name))
    later = span_record(attributes=session)
    await store.ingest([later])
    buckets = await store.writer.submit(_buckets_of(first.span_id, later.span_id))
    assert buckets == [0, 2]

    for record in (first, later):
        assert (await store.get_span(record.span_id))["trace_id"] == record.trace_id
    found = await store.list_spans(SpanQuery(attributes=session))
    assert {span["span_id"] for span in found.items} == {first.span_id, later.span_id}
    by_selector, _ = await store.add_reward(RewardIn(value=1.0, links=session))
    assert sorted(by_selector["span_ids"]) == sorted([first.span_id, later.span_id])
    by_id, _ = await store.add_reward(RewardIn(value=0.5, span_id=later.span_id))
    assert by_id["span_ids"] == [later.span_id]
    # Sent again: the writer meets them stored, looks them up, and counts them as duplicates.
    result = await store.ingest([first, later])
    assert (result.accepted, result.duplicates) == (0, 2)


def _skip_to_bucket(bucket: int, backend: str) -> Any:
    """A writer operation: a filler span (a copy of the first, under another id) takes the key
    just below `bucket`, so the next span stored opens it, as in a store that grew that far."""
    top = (bucket << SPAN_BUCKET_BITS) - 1

    async def skip(conn: AsyncConnection, ctx: object) -> None:
        columns = list(spans.c)
        values = [
            sa.literal(top)
            if column.name == "pk"
            else sa.literal("f" * 16)
            if column.name == "span_id"
            else column
            for column in columns
        ]
        await conn.execute(
            sa.insert(spans).from_select(columns, sa.select(*values).where(spans.c.pk == 1))
        )
        if backend == "postgres":
            await conn.execute(sa.text(f"SELECT setval('spans_pk_seq', {top})"))

    return skip


def _buckets_of(*span_ids: str) -> Any:
    async def buckets(conn: AsyncConnection, ctx: object) -> list[int]:
        query = sa.select(spans.c.pk).where(spans.c.span_id.in_(span_ids)).order_by(spans.c.pk)
        return [span_bucket(pk) for pk in (await conn.execute(query)).scalars()]

    return buckets


async def test_the_writer_finds_ids_by_index_in_a_table_that_grew_after_planning(
    store: EvolutionStore,
) -> None:
    # The writer's lookups are IN lists of ids, each a statement prepared once (asyncpg). On a
    # fresh database Postgres plans them while the tables are near empty; the tables then grow
    # faster than autovacuum analyses them. The lookup must stay an index probe of the primary
    # key, never a pass over every row (a sequential scan, or the wrong index read in full).
    await store.ingest([span_record() for _ in range(3)])

    async def plan(conn: AsyncConnection, ctx: object) -> str:
        if store.backend_name == "sqlite":  # no statistics (never analysed): tables look big
            query = "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE id IN ('a', 'b')"
            return "\n".join(str(row[-1]) for row in await conn.execute(sa.text(query)))
        await conn.execute(sa.text("ANALYZE tasks"))  # statistics of a 3-row table
        await conn.execute(
            sa.text("PREPARE lookup(text[]) AS SELECT id FROM tasks WHERE id = ANY($1)")
        )
        for _ in range(6):  # past the 5 runs after which Postgres may keep a generic plan
            await conn.execute(sa.text("EXECUTE lookup('{a,b}')"))
        await conn.execute(
            sa.text(
                "INSERT INTO tasks (id, name, status, created_at, updated_at) "
                "SELECT 'grown-' || g, 'n', 'running', g, g FROM generate_series(1, 5000) AS g"
            )
        )
        rows = await conn.execute(sa.text("EXPLAIN EXECUTE lookup('{a,b}')"))
        await conn.execute(sa.text("DEALLOCATE lookup"))
        return "\n".join(str(row[0]) for row in rows)

    found = await store.writer.submit(plan)
    assert "Seq Scan" not in found and "SCAN tasks" not in found, found
    assert "tasks_pkey" in found or "sqlite_autoindex_tasks_1" in found, found


async def _explain_without_seqscan(store: EvolutionStore, statement: sa.Select) -> str:
    from sqlalchemy.dialects import postgresql

    compiled = statement.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    async with store._reader_engine.connect() as conn:  # noqa: SLF001 - test-only plan probe
        await conn.execute(sa.text("SET enable_seqscan = off"))
        rows = (await conn.execute(sa.text(f"EXPLAIN {compiled}"))).all()
        await conn.rollback()
    return "\n".join(row[0] for row in rows)


async def test_agent_tasks_are_the_agents_inputs_failed_first(store: EvolutionStore) -> None:
    # What `train apo --dataset store:agent=NAME` reads: tasks that the agent's spans ran
    # under, with an input, failures before successes, newest first within each.
    async def run(task_id: str, agent: str, status: str, task_input: Any = None) -> None:
        await store.create_task(TaskIn(id=task_id, name="answer", input=task_input))
        attributes = {"evolution.task.id": task_id, "gen_ai.agent.name": agent}
        await store.ingest([span_record(attributes=attributes)])
        await store.set_task_status(task_id, status)

    await run("old-ok", "bot", "succeeded", {"q": "old"})
    await run("old-bad", "bot", "failed", {"q": "bad"})
    await run("new-ok", "bot", "succeeded", "plain text")
    await run("no-input", "bot", "failed")
    await run("other", "helper", "failed", {"q": "other"})

    tasks = await store.agent_tasks("bot")
    assert [task["id"] for task in tasks] == ["old-bad", "new-ok", "old-ok"]
    assert [task["input"] for task in tasks] == [{"q": "bad"}, "plain text", {"q": "old"}]
    assert [task["id"] for task in await store.agent_tasks("bot", limit=1)] == ["old-bad"]
    assert await store.agent_tasks("nobody") == []
    with pytest.raises(InvalidInput, match="limit"):
        await store.agent_tasks("bot", limit=0)
