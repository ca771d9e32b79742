"""The group-commit writer: batch-first statements, group commit, bounded queue, drain."""

from __future__ import annotations

import asyncio
import re

import pytest
import sqlalchemy as sa
from factories import span_record, trace_id

from evolution_store import EvolutionStore, Overloaded, group_commit
from evolution_store.models import SpanRecord
from evolution_store.queries import SpanQuery
from evolution_store.schema import indexed_keys


def agent_traces(traces: int, spans_per_trace: int = 10) -> list[SpanRecord]:
    records = []
    for _ in range(traces):
        trace = trace_id()
        root = span_record(trace_id=trace, name="agent", attributes={"session.id": "s"})
        records.append(root)
        records.extend(
            span_record(trace_id=trace, parent_span_id=root.span_id, attributes={"session.id": "s"})
            for _ in range(spans_per_trace - 1)
        )
    return records


class Recorder:
    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, sql: str, params: object) -> None:
        self.statements.append(" ".join(sql.split()))

    def count(self, pattern: str) -> int:
        return sum(1 for sql in self.statements if re.match(pattern, sql, re.IGNORECASE))


async def test_a_thousand_spans_take_a_handful_of_statements(store_url: str) -> None:
    recorder = Recorder()
    store = await EvolutionStore.open(store_url, statement_hook=recorder)
    try:
        recorder.statements.clear()
        result = await store.ingest(agent_traces(100))
    finally:
        await store.close()
    assert result.accepted == 1000
    # Per group, not per span: at most one bulk write per table (COPY + INSERT…SELECT on
    # Postgres, with its staging housekeeping), a handful of lookups, one counter UPDATE —
    # the same count for 10 spans or 10,000.
    assert recorder.count(r'(INSERT INTO "?spans"?|COPY _stage_spans)') <= 2
    assert len(recorder.statements) <= 40, recorder.statements


async def test_concurrent_ingests_share_one_commit(store: EvolutionStore) -> None:
    before = store.writer.groups_committed
    batches = [agent_traces(2) for _ in range(30)]
    results = await asyncio.gather(*(store.ingest(batch) for batch in batches))
    assert sum(result.accepted for result in results) == 600
    # The first request may commit alone; the other 29 wait and go in together.
    assert store.writer.groups_committed - before <= 3


async def test_a_small_group_waits_for_writes_on_their_way(
    store: EvolutionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "GATHER_SECONDS", 30.0)
    before = store.writer.groups_committed
    # Two bodies being decoded, as the OTLP decoder announces them.
    with store.writer.expect():
        with store.writer.expect():
            first = asyncio.create_task(store.ingest(agent_traces(1)))
            await asyncio.sleep(0.05)
            assert not first.done(), "a 10-span group must wait for announced writes"
        # Submitted right after its announcement ends, like the decoder does. One write is
        # still announced: the group leaves it to the next one and commits now.
        second = await store.ingest(agent_traces(1))
        assert (await first).accepted == second.accepted == 10
        assert store.writer.groups_committed - before == 1


async def test_the_last_announced_write_is_not_waited_for(
    store: EvolutionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(group_commit, "GATHER_SECONDS", 30.0)
    # With one body being decoded, the commit overlaps with it instead of waiting for it.
    with store.writer.expect():
        done = await asyncio.wait_for(store.ingest(agent_traces(1)), 10)
        assert done.accepted == 10


async def test_announced_writes_hold_a_group_back_only_so_long(
    store: EvolutionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with store.writer.expect(), store.writer.expect():  # never submitted: the deadline
        result = await asyncio.wait_for(store.ingest(agent_traces(1)), 10)
        assert result.accepted == 10
    monkeypatch.setattr(group_commit, "GATHER_SECONDS", 30.0)
    with store.writer.expect():
        with store.writer.expect():  # never submitted either: its end lets the group go
            waiting = asyncio.create_task(store.ingest(agent_traces(1)))
            await asyncio.sleep(0.05)
        assert (await asyncio.wait_for(waiting, 10)).accepted == 10


async def test_full_queue_answers_overloaded_and_loses_nothing(store_url: str) -> None:
    store = await EvolutionStore.open(store_url, queue_max_spans=50)
    try:
        batches = [agent_traces(3) for _ in range(10)]
        outcomes = await asyncio.gather(
            *(store.ingest(batch) for batch in batches), return_exceptions=True
        )
        refused = [o for o in outcomes if isinstance(o, Overloaded)]
        stored = [o for o in outcomes if not isinstance(o, BaseException)]
        assert refused, "a queue bounded at 50 spans must refuse some of 300"
        assert refused[0].retry_after > 0
        assert len(stored) + len(refused) == 10
        # Retrying the refused batches (as OTLP clients do) stores everything exactly once.
        for batch, outcome in zip(batches, outcomes, strict=True):
            if isinstance(outcome, Overloaded):
                assert (await store.ingest(batch)).accepted == 30
    finally:
        await store.close()


async def test_writes_after_close_are_refused(store_url: str) -> None:
    store = await EvolutionStore.open(store_url)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(Overloaded):
        await store.ingest(agent_traces(1))


async def test_one_bad_job_does_not_sink_its_group(store: EvolutionStore) -> None:
    from evolution_store.models import ExecutionIn

    good = [agent_traces(1) for _ in range(5)]
    outcomes = await asyncio.gather(
        *(store.ingest(batch) for batch in good[:3]),
        store.start_execution("no-such-task", ExecutionIn()),
        *(store.ingest(batch) for batch in good[3:]),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes].count("NotFound") == 1
    assert sum(o.accepted for o in outcomes if hasattr(o, "accepted")) == 50


async def test_two_writers_on_one_database_store_each_span_once(store_url: str) -> None:
    # Two stores stand for two server processes on one database. Every batch of 100+ spans
    # goes to both at once, so on Postgres each races the other's COPY of new rows. The
    # writer's per-group lock must turn that race into "first wins, second sees duplicates".
    first, second = await EvolutionStore.open(store_url), await EvolutionStore.open(store_url)
    try:
        batches = [agent_traces(10) for _ in range(6)]
        results = []
        for batch in batches:  # one job per writer per round: a failed group is not retried
            results.extend(await asyncio.gather(first.ingest(batch), second.ingest(batch)))
        total = sum(len(batch) for batch in batches)
        assert sum(result.accepted for result in results) == total
        assert sum(result.duplicates for result in results) == total
        for batch in batches:
            page = await first.list_spans(SpanQuery(trace_id=batch[0].trace_id, limit=100))
            assert len(page.items) == 10
            assert sorted(span["sequence"] for span in page.items) == list(range(1, 11))
    finally:
        await first.close()
        await second.close()


async def test_a_statement_sent_straight_to_the_driver_is_part_of_the_transaction(
    store: EvolutionStore,
) -> None:
    # The writer's lookups skip SQLAlchemy (`Backend.fetch_all`); even as a transaction's
    # first statement, one must commit or roll back with the rest.
    engine, backend = store._writer_engine, store._backend
    insert = sa.insert(indexed_keys).values(key=sa.bindparam("key"), created_at=0)
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await backend.fetch_all(conn, insert, {"key": "rolled.back"})
            raise RuntimeError("roll back")
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(indexed_keys.c.key).where(indexed_keys.c.key == "rolled.back")
        )
        assert rows.all() == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_lost_database_connection_costs_a_retry_not_the_write(
    store: EvolutionStore, store_url: str
) -> None:
    # Postgres restarted, or an idle connection cut by the network: the next group finds the
    # writer's connection dead and runs again on a new one.
    await store.ingest(agent_traces(1))
    import asyncpg

    admin = await asyncpg.connect(store_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        killed = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert killed
    result = await store.ingest(agent_traces(2))
    assert result.accepted == 20
    page = await store.list_spans(SpanQuery(limit=100))
    assert len(page.items) == 30
