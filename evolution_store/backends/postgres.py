"""Postgres: fresh rows COPied straight into their table; rows that may conflict COPied into a
per-connection staging table, then INSERT … ON CONFLICT DO NOTHING (executemany when few)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .base import Backend, execute_each

#: Writes that may conflict with stored rows go through a staging table and COPY from this
#: many rows on, smaller ones through executemany. Fresh rows (`fresh=True`) always go
#: straight in with COPY: executemany plans every row on its own (`force_custom_plan`), which
#: costs even a group's few dozen new tasks and executions several times what COPY does
#: (bench/README.md, "COPY on Postgres").
COPY_MIN_ROWS = 64

#: pg_advisory_xact_lock key held by a writer for each group (any constant unique to us)
WRITER_LOCK = 0x65766F6C  # "evol"

#: Settings of the writer's connection. Every statement the writer runs finds rows by key (IN
#: lists of ids), so an index lookup is always the right plan; Postgres must be kept from
#: choosing otherwise on a fresh database, where tables autovacuum has not analysed yet look
#: empty to the planner (bench/README.md, "Postgres writer settings"):
#: - asyncpg prepares each statement once, and Postgres would keep a generic plan made from
#:   the statistics of that moment: a scan, or the wrong index, whose cost grows with the
#:   table. Custom plans are made at each execution for the table's current size.
#: - Even then the cost model may prefer one sequential pass over `spans` to a group's
#:   thousands of index probes of cached pages, so sequential scans are priced out. JIT is off
#:   because that price would make any query with no index to take (a rare key back-fill)
#:   look costly enough to compile.
WRITER_SETTINGS = {"plan_cache_mode": "force_custom_plan", "enable_seqscan": "off", "jit": "off"}


def _apply_writer_settings(dbapi_connection: Any, _record: Any) -> None:
    # SET after connecting rather than startup parameters: PgBouncer refuses unknown ones.
    execute_each(
        dbapi_connection, (f"SET {name} = {value}" for name, value in WRITER_SETTINGS.items())
    )


class PostgresBackend(Backend):
    name = "postgres"

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        writer = create_async_engine(self.url, pool_size=1, max_overflow=0, pool_pre_ping=True)
        event.listen(writer.sync_engine, "connect", _apply_writer_settings)
        reader = create_async_engine(self.url, pool_size=5, max_overflow=5, pool_pre_ping=True)
        return writer, reader

    async def reserve_pks(self, conn: AsyncConnection, table: sa.Table, count: int) -> list[int]:
        rows = await self.fetch_all(conn, _next_values(table.name), {"n": count})
        return [row[0] for row in rows]

    async def begin_group(self, conn: AsyncConnection) -> None:
        # Serialise the writers of every server process on this database for the length of a
        # group's transaction: duplicate checks made under the lock stay true until COMMIT, so
        # fresh rows can be COPied straight into their tables.
        await conn.execute(_WRITER_LOCK, {"key": WRITER_LOCK})

    async def fetch_all(
        self, conn: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> list[Any]:
        # Straight to asyncpg, on the connection of the open transaction: SQLAlchemy's
        # execution path adds its own work to every statement, and a group runs about twenty
        # (the statement is compiled once here; asyncpg keeps it prepared).
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if not driver.is_in_transaction():
            # SQLAlchemy's adapter opens the transaction lazily, with its first statement;
            # sent straight to asyncpg, this one would run (and commit) on its own.
            return await super().fetch_all(conn, statement, params)
        sql, args = self.positional(conn, statement, params)
        return await driver.fetch(sql, *args)

    async def read_rows(
        self, conn: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> list[Any]:
        # A lone read needs no transaction: asyncpg runs it as its own, prepared once.
        sql, args = self.positional(conn, statement, params)
        raw = await conn.get_raw_connection()
        return await raw.driver_connection.fetch(sql, *args)

    async def insert_rows(
        self,
        conn: AsyncConnection,
        table: sa.Table,
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        *,
        fresh: bool,
    ) -> None:
        if not rows:
            return
        if not fresh and len(rows) < COPY_MIN_ROWS:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            params = [dict(zip(columns, row, strict=True)) for row in rows]
            await conn.execute(pg_insert(table).on_conflict_do_nothing(), params)
            return
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        if fresh:
            await self._copy(driver, table.name, columns, rows)
            return
        stage = await self._staging_table(conn, raw, table)
        await self._copy(driver, stage, columns, rows)
        column_list = ", ".join(f'"{name}"' for name in columns)
        await conn.execute(
            sa.text(
                f"INSERT INTO {table.name} ({column_list}) SELECT {column_list} FROM {stage} "
                "ON CONFLICT DO NOTHING"
            )
        )
        await conn.execute(sa.text(f"TRUNCATE {stage}"))

    async def _copy(
        self, driver: Any, table: str, columns: tuple[str, ...], rows: Sequence[tuple[Any, ...]]
    ) -> None:
        if self.statement_hook is not None:
            self.statement_hook(f"COPY {table} ({', '.join(columns)}) FROM STDIN", rows)
        await driver.copy_records_to_table(table, records=rows, columns=list(columns))

    async def _staging_table(self, conn: AsyncConnection, raw: Any, table: sa.Table) -> str:
        stage = f"_stage_{table.name}"
        staged: set[str] = raw.info.setdefault("staging_tables", set())
        if stage not in staged:
            # A temp table lives as long as the connection; ON COMMIT DELETE ROWS empties it.
            await conn.execute(
                sa.text(
                    f"CREATE TEMP TABLE IF NOT EXISTS {stage} "
                    f"(LIKE {table.name} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
            )
            staged.add(stage)
        return stage

    async def advance_counters(
        self, conn: AsyncConnection, counts: dict[str, int]
    ) -> dict[str, int]:
        # Row locks on the tasks serialise concurrent writers (several server processes), so
        # sequence numbers never collide.
        rows = await self.fetch_all(
            conn, _ADVANCE_COUNTERS, {"ids": list(counts), "ns": list(counts.values())}
        )
        return {row[0]: row[1] for row in rows}

    async def version(self, conn: AsyncConnection) -> str:
        return "PostgreSQL " + str((await conn.execute(sa.text("SHOW server_version"))).scalar())

    async def explain(self, conn: AsyncConnection, statement: sa.Executable) -> str:
        compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        rows = (await conn.execute(sa.text(f"EXPLAIN {compiled}"))).all()
        return "\n".join(str(row[0]) for row in rows)


_WRITER_LOCK = sa.text("SELECT pg_advisory_xact_lock(:key)")

_ADVANCE_COUNTERS = sa.text(
    "UPDATE tasks SET span_count = tasks.span_count + v.n "
    "FROM unnest(CAST(:ids AS text[]), CAST(:ns AS bigint[])) AS v(id, n) "
    "WHERE tasks.id = v.id RETURNING tasks.id, tasks.span_count"
)


@functools.cache
def _next_values(table: str) -> sa.TextClause:
    return sa.text(f"SELECT nextval('{table}_pk_seq') FROM generate_series(1, :n)")
