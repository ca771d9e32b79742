"""The interface the writer and queries use to reach a database."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

StatementHook = Callable[[str, Any], None]


def execute_each(dbapi_connection: Any, statements: Iterable[str]) -> None:
    """Run session-setup statements (PRAGMA, SET) on a new DB-API connection, in a connect
    hook: they hold for the connection's life, whatever the pool does between checkouts."""
    cursor = dbapi_connection.cursor()
    try:
        for statement in statements:
            cursor.execute(statement)
    finally:
        cursor.close()


class Backend:
    """One database dialect. Subclasses own engine creation and bulk writes."""

    name = "base"
    #: the database lives in this process's memory: another process cannot reach it
    in_memory = False

    def __init__(self, url: str) -> None:
        self.url = url
        #: called with ("COPY …", rows) for writes that bypass SQLAlchemy's cursor events
        self.statement_hook: StatementHook | None = None

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        """(writer engine with exactly one connection, reader engine)."""
        raise NotImplementedError

    async def reserve_pks(self, conn: AsyncConnection, table: sa.Table, count: int) -> list[int]:
        """Hand out `count` surrogate keys for rows the writer is about to insert, so child rows
        (tags, links, attribute index) can refer to them without reading the rows back."""
        raise NotImplementedError

    async def begin_group(self, conn: AsyncConnection) -> None:
        """First statement of every writer transaction: whatever makes this writer the only one
        until COMMIT, across processes (SQLite's BEGIN IMMEDIATE already does)."""

    def group_committed(self) -> None:
        """Called by the writer after each committed group (SQLite schedules a checkpoint)."""

    def close(self) -> None:
        """Release whatever the backend runs beside the engines. Blocking; idempotent."""

    async def fetch_all(
        self, conn: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> list[Any]:
        """All rows of a statement built once with bind parameters, on the writer's hot path
        (a backend may skip SQLAlchemy's per-execution work); [] for one that returns none."""
        result = await conn.execute(statement, params)
        return list(result) if result.returns_rows else []

    async def read_rows(
        self, conn: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> list[Any]:
        """`fetch_all` for a read on a reader connection, outside any transaction: for reads
        on a hot path (the prompt an agent asks for on every run)."""
        return await self.fetch_all(conn, statement, params)

    def positional(
        self, conn: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> tuple[str, list[Any]]:
        """The SQL text of a statement and its arguments in the order the driver takes them,
        for `fetch_all` overrides that go straight to the driver (and the statement hook)."""
        sql, names, defaults = _compiled(statement, conn.dialect)
        args = [params[name] if name in params else defaults[name] for name in names]
        if self.statement_hook is not None:
            self.statement_hook(sql, args)
        return sql, args

    async def insert_ignore(
        self,
        conn: AsyncConnection,
        table: sa.Table,
        rows: Sequence[dict[str, Any]],
        *,
        fresh: bool = False,
    ) -> None:
        """Insert rows; rows whose unique keys already exist are skipped silently. `fresh` as
        in `insert_rows`."""
        if not rows:
            return
        columns = tuple(column.name for column in table.columns if column.name in rows[0])
        tuples = [tuple(row[name] for name in columns) for row in rows]
        await self.insert_rows(conn, table, columns, tuples, fresh=fresh)

    async def insert_rows(
        self,
        conn: AsyncConnection,
        table: sa.Table,
        columns: tuple[str, ...],
        rows: Sequence[tuple[Any, ...]],
        *,
        fresh: bool,
    ) -> None:
        """Bulk insert tuples in `columns` order, skipping rows whose unique keys exist.

        `fresh=True` promises that no row conflicts with a stored one (new primary keys, duplicates
        filtered under the writer's lock), which lets a backend take a faster path; a row that
        conflicts after all fails the insert (`db_errors.is_unique_violation`)."""
        raise NotImplementedError

    async def advance_counters(
        self, conn: AsyncConnection, counts: dict[str, int]
    ) -> dict[str, int]:
        """Add `counts[id]` to each task's `span_count` in one statement; return new values."""
        raise NotImplementedError

    async def version(self, conn: AsyncConnection) -> str:
        raise NotImplementedError

    async def explain(self, conn: AsyncConnection, statement: sa.Executable) -> str:
        """The query plan as text, for tests that check indexes are used."""
        raise NotImplementedError


@functools.lru_cache(maxsize=256)
def _compiled(
    statement: sa.Executable, dialect: Any
) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """SQL text, parameter names in order, and the values of parameters bound in the
    statement itself (literals such as `column == "trace"`)."""
    compiled = statement.compile(dialect=dialect)
    return compiled.string, tuple(compiled.positiontup or ()), dict(compiled.params)
