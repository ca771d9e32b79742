"""SQL helpers shared by writes and reads: lookups by a list of keys, in chunks, one round
trip each; the text of a JSON member on either backend.

A leaf: it knows statements and the backend's `fetch_all`, nothing of spans or rewards.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from .backends import in_param, in_value
from .group_commit import WriteContext

#: keys per IN list: well inside both drivers' limits, and a group rarely has more
IN_CHUNK = 50_000


def in_chunks(values: list[Any], size: int | None = None) -> list[list[Any]]:
    size = size or IN_CHUNK
    return [values[i : i + size] for i in range(0, len(values), size)]


def json_member_text(dialect: str, column: sa.ColumnElement[Any], key: str) -> Any:
    """The text of a top-level member of a JSON text column, the same on both backends:
    strings as they are, numbers as written, booleans `true`/`false` (SQLite's `json_extract`
    alone gives 1/0 for booleans), NULL when missing."""
    if dialect == "postgresql":
        return sa.cast(column, postgresql.JSONB).op("->>")(key)
    path = '$."' + key.replace('"', '\\"') + '"'
    kind = sa.func.json_type(column, path)
    return sa.case(
        (kind == "true", "true"),
        (kind == "false", "false"),
        else_=sa.cast(sa.func.json_extract(column, path), sa.Text),
    )


async def run_in(
    conn: AsyncConnection,
    ctx: WriteContext,
    query: Callable[[str], sa.Executable],
    values: list[Any],
    **params: Any,
) -> list[Any]:
    """Run `query(dialect)` for every chunk of `values` and return the rows it yields (none for
    an UPDATE). `query` builds its statement once per dialect (`functools.cache`), with the IN
    list as the parameter `values` (`backends.in_param`) and `params` by name.

    Through `Backend.fetch_all` rather than `conn.execute`: a statement compiled once and run
    by the driver directly costs a fraction of SQLAlchemy's per-call work (bench/README.md)."""
    dialect = conn.dialect.name
    statement = query(dialect)
    rows: list[Any] = []
    for chunk in in_chunks(values):
        parameters = {"values": in_value(chunk, dialect), **params}
        rows.extend(await ctx.backend.fetch_all(conn, statement, parameters))
    return rows


async def select_in(
    conn: AsyncConnection,
    ctx: WriteContext,
    columns: tuple[sa.Column[Any], ...],
    key: sa.Column[Any],
    values: list[Any],
) -> list[Any]:
    """`SELECT columns WHERE key IN values` through `run_in`."""
    return await run_in(conn, ctx, functools.partial(_select_in, columns, key), values)


@functools.cache
def _select_in(
    columns: tuple[sa.Column[Any], ...], key: sa.Column[Any], dialect: str
) -> sa.Select[Any]:
    return sa.select(*columns).where(in_param(key, "values", dialect))
