"""`db_errors`: what real driver errors mean, raised by real databases (aiosqlite, asyncpg),
wrapped by SQLAlchemy or straight from the driver as the bulk inserts see them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from evolution_store.backends import normalize_url
from evolution_store.db_errors import (
    first_line,
    is_bad_value,
    is_database_error,
    is_unique_violation,
    translate_write_error,
)
from evolution_store.errors import InvalidInput, NotFound, StorageError


@pytest.fixture
async def conn(store_url: str) -> AsyncIterator[AsyncConnection]:
    """A connection with a scratch table `t` of its own (temporary: nothing else sees it)."""
    engine = create_async_engine(normalize_url(store_url))
    try:
        async with engine.connect() as connection:
            await connection.execute(
                sa.text(
                    "CREATE TEMPORARY TABLE t"
                    " (id INTEGER PRIMARY KEY, u TEXT UNIQUE, n SMALLINT, b BIGINT)"
                )
            )
            await connection.execute(sa.text("INSERT INTO t (id, u) VALUES (1, 'one')"))
            yield connection
    finally:
        await engine.dispose()


async def raised(conn: AsyncConnection, statement: str, **params: Any) -> Exception:
    """The exception a statement raises (inside a savepoint, so the connection stays usable)."""
    try:
        async with conn.begin_nested():
            await conn.execute(sa.text(statement), params)
    except Exception as exc:
        return exc
    raise AssertionError(f"{statement!r} did not fail")


async def raised_by_driver(conn: AsyncConnection, rows: list[tuple[Any, ...]]) -> Exception:
    """The exception the driver itself raises for a bulk insert into `t` (id, u)."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    sql = "INSERT INTO t (id, u) VALUES ($1, $2)"
    if conn.dialect.name == "sqlite":
        sql = "INSERT INTO t (id, u) VALUES (?, ?)"
    try:
        await driver.executemany(sql, rows)
    except Exception as exc:
        return exc
    raise AssertionError("the bulk insert did not fail")


async def test_a_primary_key_violation_is_a_unique_violation(conn: AsyncConnection) -> None:
    error = await raised(conn, "INSERT INTO t (id) VALUES (1)")
    assert is_unique_violation(error)
    assert not is_bad_value(error)
    assert is_database_error(error)


async def test_a_unique_index_violation_is_a_unique_violation(conn: AsyncConnection) -> None:
    error = await raised(conn, "INSERT INTO t (id, u) VALUES (2, 'one')")
    assert is_unique_violation(error)
    assert not is_bad_value(error)


async def test_a_unique_violation_raised_by_the_driver_itself(conn: AsyncConnection) -> None:
    # Bulk inserts go straight to the driver: no SQLAlchemy wrapper around its error.
    error = await raised_by_driver(conn, [(2, "two"), (1, "again")])
    assert not isinstance(error, sa.exc.SQLAlchemyError)
    assert is_unique_violation(error)
    assert not is_bad_value(error)


async def test_other_failures_are_not_unique_violations(conn: AsyncConnection) -> None:
    error = await raised(conn, "INSERT INTO no_such_table (id) VALUES (1)")
    assert not is_unique_violation(error)
    assert not is_bad_value(error)  # the database failing (or our bug), not the caller's value
    assert is_database_error(error)
    assert isinstance(translate_write_error(error), StorageError)


@pytest.mark.parametrize("backend", [pytest.param("postgres", marks=pytest.mark.postgres)])
@pytest.mark.parametrize(
    ("statement", "params"),
    [
        ("SELECT CAST('abc' AS INTEGER)", {}),  # 22P02 invalid_text_representation
        ("INSERT INTO t (id, n) VALUES (5, 100000)", {}),  # 22003 numeric_value_out_of_range
        ("INSERT INTO t (id, u) VALUES (6, :u)", {"u": "a\x00b"}),  # 22021 NUL in text
    ],
    ids=["cast", "out-of-range", "nul"],
)
async def test_a_postgres_data_exception_is_a_bad_value(
    conn: AsyncConnection, statement: str, params: dict[str, Any]
) -> None:
    # SQLite stores all three (it has no SMALLINT range and keeps NUL in text).
    error = await raised(conn, statement, **params)
    assert is_bad_value(error)
    assert not is_unique_violation(error)
    translated = translate_write_error(error)
    assert isinstance(translated, InvalidInput)
    assert translated.__cause__ is error
    assert str(translated).startswith("the database cannot store this value: ")
    assert "\n" not in str(translated)


@pytest.mark.parametrize(
    "value", [2**64, "lone \ud800 surrogate"], ids=["int-beyond-64-bits", "lone-surrogate"]
)
async def test_a_value_no_driver_can_send_is_a_bad_value(conn: AsyncConnection, value: Any) -> None:
    column = "b" if isinstance(value, int) else "u"
    error = await raised(conn, f"INSERT INTO t (id, {column}) VALUES (9, :value)", value=value)
    assert is_bad_value(error)
    assert isinstance(translate_write_error(error), InvalidInput)


@pytest.mark.parametrize(
    "error",
    [ValueError("nope"), KeyError("k"), RuntimeError("bug"), TypeError("t")],
    ids=lambda error: type(error).__name__,
)
def test_errors_of_our_own_are_neither(error: Exception) -> None:
    assert not is_bad_value(error)
    assert not is_unique_violation(error)
    assert not is_database_error(error)
    translated = translate_write_error(error)
    assert isinstance(translated, StorageError)
    assert translated.__cause__ is error
    assert type(error).__name__ in str(translated)


def test_a_lost_connection_is_a_database_error() -> None:
    error = ConnectionResetError("connection reset by peer")
    assert is_database_error(error) and not is_bad_value(error)
    assert isinstance(translate_write_error(error), StorageError)


def test_the_store_s_own_errors_pass_through() -> None:
    error = NotFound("task 'x' not found")
    assert translate_write_error(error) is error


def test_first_line() -> None:
    assert first_line(ValueError("one\ntwo")) == "one"
    assert first_line(ValueError("  padded  \n")) == "padded"
    assert first_line(ValueError()) == "ValueError"
    wrapped = sa.exc.DBAPIError("SELECT 1", {}, RuntimeError("driver says\ndetail"))
    assert first_line(wrapped) == "driver says"
