"""SQLite: WAL, synchronous=NORMAL, one writer connection, readers on their own connections."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from .base import Backend

#: PRAGMAs applied to every new connection. WAL lets readers run beside the writer;
#: synchronous=NORMAL in WAL mode keeps every commit across a process crash (only an OS
#: crash or power loss can lose the last transactions).
PRAGMAS = {
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": "10000",
    "temp_store": "memory",
    "cache_size": "-65536",
    "mmap_size": str(256 * 1024 * 1024),
    # Checkpoint every ~80 MB of WAL instead of ~4 MB: index pages dirtied by many commits
    # are copied back once, which lifts bulk ingest by ~1.5x (bench/store_bench.py).
    "wal_autocheckpoint": "20000",
    "journal_size_limit": str(128 * 1024 * 1024),
}


def apply_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Set every PRAGMA on a new connection. Idempotent; `journal_mode=wal` persists in the
    file, the others are per connection, hence a connect hook rather than a one-off."""
    cursor = dbapi_connection.cursor()
    try:
        for name, value in PRAGMAS.items():
            cursor.execute(f"PRAGMA {name}={value}")
    finally:
        cursor.close()


class SQLiteBackend(Backend):
    name = "sqlite"
    # SQLite's SQLITE_MAX_VARIABLE_NUMBER is 32766 since 3.32.
    max_params = 32_000

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        writer = create_async_engine(
            self.url, poolclass=AsyncAdaptedQueuePool, pool_size=1, max_overflow=0
        )
        reader = create_async_engine(
            self.url, poolclass=AsyncAdaptedQueuePool, pool_size=4, max_overflow=4
        )
        for engine in (writer, reader):
            event.listen(engine.sync_engine, "connect", apply_pragmas)
        # pysqlite's own transaction handling defers BEGIN; take the write lock at BEGIN so a
        # group never fails half-way on a lock held by another process.
        event.listen(writer.sync_engine, "connect", _autocommit_driver)
        event.listen(writer.sync_engine, "begin", _begin_immediate)
        return writer, reader

    async def reserve_pks(self, conn: AsyncConnection, table: sa.Table, count: int) -> list[int]:
        # Safe because the writer holds SQLite's write lock (BEGIN IMMEDIATE) for the whole group.
        pk = table.c.pk
        top = (await conn.execute(sa.select(sa.func.max(pk)))).scalar() or 0
        return list(range(top + 1, top + 1 + count))

    async def insert_ignore(
        self, conn: AsyncConnection, table: sa.Table, rows: Sequence[dict[str, Any]]
    ) -> None:
        if not rows:
            return
        columns = [column.name for column in table.columns if column.name in rows[0]]
        sql = _insert_or_ignore_sql(table.name, tuple(columns))
        params = [tuple(row[name] for name in columns) for row in rows]
        if self.statement_hook is not None:
            self.statement_hook(sql, params)
        # Straight to the driver: sqlite3's executemany reuses one prepared statement, and
        # skipping SQLAlchemy's per-row parameter processing halves the cost of a span. The
        # raw connection is the one inside the writer's open transaction.
        raw = await conn.get_raw_connection()
        await raw.driver_connection.executemany(sql, params)

    async def advance_counters(
        self, conn: AsyncConnection, counts: dict[str, int]
    ) -> dict[str, int]:
        rows = await conn.execute(
            sa.text(
                "UPDATE tasks SET span_count = tasks.span_count + v.value "
                "FROM json_each(:counts) AS v WHERE tasks.id = v.key "
                "RETURNING tasks.id, tasks.span_count"
            ),
            {"counts": orjson.dumps(counts).decode()},
        )
        return {row[0]: row[1] for row in rows}

    async def version(self, conn: AsyncConnection) -> str:
        return "SQLite " + str((await conn.execute(sa.text("select sqlite_version()"))).scalar())

    async def explain(self, conn: AsyncConnection, statement: sa.Executable) -> str:
        compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        rows = (await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
        return "\n".join(str(row[-1]) for row in rows)


@functools.lru_cache(maxsize=64)
def _insert_or_ignore_sql(table: str, columns: tuple[str, ...]) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    marks = ", ".join("?" for _ in columns)
    return f'INSERT INTO "{table}" ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING'


def _autocommit_driver(dbapi_connection: Any, _record: Any = None) -> None:
    # Hand transaction control to SQLAlchemy's "begin" hook (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
