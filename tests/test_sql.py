"""`sql`: lookups and updates by a list of keys, one statement per chunk, on both backends."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import sqlalchemy as sa
from factories import span_record, trace_id

from evolution_store import EvolutionStore, TaskIn
from evolution_store import sql as sql_module
from evolution_store.backends import in_param
from evolution_store.schema import spans, tasks
from evolution_store.sql import in_chunks, run_in, select_in


@pytest.mark.parametrize(
    ("values", "size", "expected"),
    [
        ([], 3, []),
        ([1, 2], 3, [[1, 2]]),
        ([1, 2, 3], 3, [[1, 2, 3]]),
        ([1, 2, 3, 4, 5, 6, 7], 3, [[1, 2, 3], [4, 5, 6], [7]]),
        (list(range(5)), 1, [[0], [1], [2], [3], [4]]),
    ],
)
def test_in_chunks(values: list[int], size: int, expected: list[list[int]]) -> None:
    assert in_chunks(values, size) == expected


def test_in_chunks_keeps_every_value_in_order() -> None:
    values = list(range(100_001))
    chunks = in_chunks(values)
    assert [value for chunk in chunks for value in chunk] == values
    assert all(len(chunk) <= sql_module.IN_CHUNK for chunk in chunks)


async def _open_counting(store_url: str) -> tuple[EvolutionStore, list[str]]:
    seen: list[str] = []
    store = await EvolutionStore.open(store_url, statement_hook=lambda sql, _: seen.append(sql))
    return store, seen


async def test_select_in_runs_one_statement_per_chunk(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_module, "IN_CHUNK", 3)
    store, seen = await _open_counting(store_url)
    try:
        trace = trace_id()
        records = [span_record(trace_id=trace, start_time=1_000 + i) for i in range(7)]
        await store.ingest(records)
        wanted = [record.span_id for record in records] + ["f" * 16]  # one not stored
        seen.clear()
        rows = await store.writer.submit(
            lambda conn, ctx: select_in(
                conn, ctx, (spans.c.span_id, spans.c.trace_id), spans.c.span_id, wanted
            )
        )
        assert sorted(row[0] for row in rows) == sorted(record.span_id for record in records)
        assert {row[1] for row in rows} == {trace}
        lookups = [sql for sql in seen if "FROM spans" in sql]
        assert len(lookups) == 3  # 8 keys in chunks of 3
    finally:
        await store.close()


@functools.cache
def _rename(dialect: str) -> sa.Update:
    return (
        sa.update(tasks)
        .where(in_param(tasks.c.id, "values", dialect))
        .values(name=sa.bindparam("new_name"))
    )


@functools.cache
def _names(dialect: str) -> sa.Select[Any]:
    return sa.select(tasks.c.id, tasks.c.name).where(in_param(tasks.c.id, "values", dialect))


async def test_run_in_updates_every_chunk_with_named_parameters(
    store: EvolutionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_module, "IN_CHUNK", 2)
    ids = [f"t-{i}" for i in range(5)]
    for task_id in ids:
        await store.create_task(TaskIn(id=task_id, name="before"))
    updated = await store.writer.submit(
        lambda conn, ctx: run_in(conn, ctx, _rename, ids[:4], new_name="after")
    )
    assert updated == []  # an UPDATE yields no rows
    rows = await store.writer.submit(lambda conn, ctx: run_in(conn, ctx, _names, ids))
    assert dict(rows) == {"t-0": "after", "t-1": "after", "t-2": "after", "t-3": "after"} | {
        "t-4": "before"
    }


async def test_run_in_with_no_values_runs_nothing(store_url: str) -> None:
    store, seen = await _open_counting(store_url)
    try:
        seen.clear()
        rows = await store.writer.submit(lambda conn, ctx: run_in(conn, ctx, _names, []))
        assert rows == []
        assert not any("tasks" in sql and "SELECT" in sql.upper() for sql in seen)
    finally:
        await store.close()
