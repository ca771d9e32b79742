"""SQLite: WAL, synchronous=NORMAL, one writer connection, readers on their own connections."""

from __future__ import annotations

import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool

from ..errors import StorageError
from .base import Backend, execute_each

log = logging.getLogger(__name__)

#: Seconds between background checkpoints while commits keep coming: a page that several
#: commits rewrite (index pages of random keys) is then copied once per interval, not once
#: per commit. Figures: bench/README.md, "SQLite settings".
CHECKPOINT_INTERVAL = 1.0

#: PRAGMAs applied to every new connection. WAL lets readers run beside the writer;
#: synchronous=NORMAL in WAL mode keeps every commit across a process crash (only an OS
#: crash or power loss can lose the last transactions). Why each size below was chosen, with
#: its measurements: bench/README.md, "SQLite settings".
PRAGMAS = {
    # Must come before `journal_mode=wal`: it only takes effect on a database with no tables
    # yet (an existing file keeps its size). Spans are 1-2 KB rows: 16 KiB pages mean fewer
    # WAL frames for each commit to write than the default 4 KiB; larger pages were slower.
    "page_size": "16384",
    "journal_mode": "wal",
    "synchronous": "normal",
    "busy_timeout": "10000",
    "temp_store": "memory",
    # Per connection: holds the pages the writer changes in a group and the pages read past
    # the memory map below. A larger cache was no faster and raised the server's peak RSS.
    "cache_size": "-32768",
    # The start of the file is read through a memory map, the rest through the cache. Mapped
    # pages count in the server's RSS, so a grown store's RSS rises with the map's size; a
    # larger map was no faster.
    "mmap_size": str(64 * 1024 * 1024),
    # The background checkpoints (`Checkpointer`) never find the log fully copied under
    # steady writes, and only a fully copied log starts again from its beginning: alone they
    # would let the WAL file grow, each new page allocated and zeroed by the kernel. The
    # writer's own checkpoint, between two commits, completes: every 6,000 pages it lets the
    # log restart, so the file stays small and its pages are reused.
    "wal_autocheckpoint": "6000",
    "journal_size_limit": str(128 * 1024 * 1024),
}


def apply_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """Set every PRAGMA on a new connection. Idempotent; `journal_mode=wal` persists in the
    file, the others are per connection, hence a connect hook rather than a one-off."""
    execute_each(dbapi_connection, (f"PRAGMA {name}={value}" for name, value in PRAGMAS.items()))


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        database = sa.engine.make_url(url).database
        self.in_memory = (
            not database or database == ":memory:" or database.startswith("file::memory:")
        )
        if not self.in_memory:
            _check_directory(database)
        self._checkpointer = None if self.in_memory else Checkpointer(database)

    def group_committed(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.notify()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()

    def create_engines(self) -> tuple[AsyncEngine, AsyncEngine]:
        # The writer's every use is `engine.begin()`, which commits or rolls back itself, so
        # the pool's rollback on return would be one more wasted trip to the driver thread.
        writer = create_async_engine(
            self.url,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=1,
            max_overflow=0,
            pool_reset_on_return=None,
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
        top = (await self.fetch_all(conn, _highest_pk(table), {}))[0][0] or 0
        return list(range(top + 1, top + 1 + count))

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
        sql = _insert_sql(table.name, columns, ignore=not fresh)
        if self.statement_hook is not None:
            self.statement_hook(sql, rows)
        # Straight to the driver: sqlite3's executemany reuses one prepared statement and
        # skips SQLAlchemy's per-row parameter processing, a large part of a span's cost. The
        # raw connection is the one inside the writer's open transaction.
        raw = await conn.get_raw_connection()
        await raw.driver_connection.executemany(sql, rows)

    async def fetch_all(
        self, conn: AsyncConnection, statement: sa.Executable, params: dict[str, Any]
    ) -> list[Any]:
        # Straight to the driver, on the connection of the open transaction: aiosqlite's
        # `execute_fetchall` is one round trip to its thread, where SQLAlchemy's cursor takes
        # four (cursor, execute, fetch, close). A reward's write is then a few hops, not a dozen.
        sql, args = self.positional(conn, statement, params)
        raw = await conn.get_raw_connection()
        return list(await raw.driver_connection.execute_fetchall(sql, args))

    async def advance_counters(
        self, conn: AsyncConnection, counts: dict[str, int]
    ) -> dict[str, int]:
        rows = await self.fetch_all(
            conn, _ADVANCE_COUNTERS, {"counts": orjson.dumps(counts).decode()}
        )
        return {row[0]: row[1] for row in rows}

    async def version(self, conn: AsyncConnection) -> str:
        return "SQLite " + str((await conn.execute(sa.text("select sqlite_version()"))).scalar())

    async def explain(self, conn: AsyncConnection, statement: sa.Executable) -> str:
        compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        rows = (await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))).all()
        return "\n".join(str(row[-1]) for row in rows)


class Checkpointer:
    """Copies committed WAL frames back into the database file on a thread and connection of
    its own (PASSIVE checkpoints never block the writer or readers). The writer only signals
    after each commit, so its commits do not wait for the copying that SQLite's in-line
    auto-checkpoint would do after them (bench/README.md, "SQLite settings")."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def notify(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="evolution-store-checkpointer", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopping.set()
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            apply_pragmas(conn)
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                self._checkpoint(conn)
                # Coalesce: one checkpoint per interval however many commits signal; a stop
                # cuts the wait short.
                self._stopping.wait(CHECKPOINT_INTERVAL)
            self._checkpoint(conn)
        except sqlite3.Error:
            log.warning("background checkpoints stopped", exc_info=True)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.OperationalError:  # busy/locked: the next signal tries again
            log.debug("checkpoint skipped", exc_info=True)


def _check_directory(database: str) -> None:
    # Said up front: failing inside aiosqlite's connect leaves its worker thread to post the
    # error to an event loop that may be closed by then, which prints a stray traceback.
    if database.startswith("file:"):
        return  # a URI filename; SQLite parses it
    directory = os.path.dirname(os.path.abspath(database))
    if not os.path.isdir(directory):
        raise StorageError(f"unable to open database file: no directory {directory}")


_ADVANCE_COUNTERS = sa.text(
    "UPDATE tasks SET span_count = tasks.span_count + v.value "
    "FROM json_each(:counts) AS v WHERE tasks.id = v.key "
    "RETURNING tasks.id, tasks.span_count"
)


@functools.cache
def _highest_pk(table: sa.Table) -> sa.Select[Any]:
    return sa.select(sa.func.max(table.c.pk))


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, columns: tuple[str, ...], *, ignore: bool) -> str:
    names = ", ".join(f'"{name}"' for name in columns)
    marks = ", ".join("?" for _ in columns)
    conflicts = " ON CONFLICT DO NOTHING" if ignore else ""
    return f'INSERT INTO "{table}" ({names}) VALUES ({marks}){conflicts}'


def _autocommit_driver(dbapi_connection: Any, _record: Any = None) -> None:
    # Hand transaction control to SQLAlchemy's "begin" hook (SQLAlchemy's documented recipe).
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Any) -> None:
    # Straight to aiosqlite: one trip to its thread, where `exec_driver_sql` takes three
    # (cursor, execute, close); each is a wait for the GIL when the server is busy, and the
    # writer begins a transaction for every group.
    conn.connection.dbapi_connection.run_async(lambda driver: driver.execute("BEGIN IMMEDIATE"))
