"""Database dialects: one `Backend` per database (`sqlite`, `postgres`), chosen from the URL.

A backend creates the engines (SQLite PRAGMAs, the Postgres writer's settings), inserts rows
in bulk (`executemany`, COPY), reserves primary keys and runs the writer's lookups straight on
the driver. This module holds what picks and addresses one (`normalize_url`, `redact_url`,
`backend_for`) and the one-parameter `IN` both dialects share (`in_param`, `in_value`).
Everything above this package speaks SQLAlchemy Core. Driver errors are classified in
`evolution_store.db_errors`, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from ..errors import InvalidInput

if TYPE_CHECKING:
    from .base import Backend


def normalize_url(url: str) -> str:
    """Accept plain `sqlite:///` and `postgresql://` URLs and pick the async drivers."""
    url = url.strip()
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return url
    raise InvalidInput(
        f"unsupported database URL {url.split('://')[0]!r}: use sqlite:///path or postgresql://…",
        field="url",
    )


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not sep or not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{location}"


def backend_for(url: str) -> Backend:
    """The backend of a database URL (see `normalize_url`); raises `InvalidInput` for others."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        from .sqlite import SQLiteBackend

        return SQLiteBackend(url)
    from .postgres import PostgresBackend

    return PostgresBackend(url)


def in_param(column: Any, name: str, dialect: str) -> Any:
    """`column IN (values)` with ONE bound parameter, `name`, whatever the number of values;
    give it `in_value(values, dialect)`. Built once, a statement runs for any list.

    A plain `IN` renders a parameter per value: thousands of them, a fresh compile for each
    batch size, and the backend's parameter limit to chunk around. SQLite takes the values
    as a JSON array through `json_each`; Postgres as an array through `= ANY(…)`.
    """
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        element = sa.BigInteger() if isinstance(column.type, sa.Integer) else sa.Text()
        return column == sa.any_(sa.bindparam(name, type_=ARRAY(element)))
    table = sa.func.json_each(sa.bindparam(name, type_=sa.Text())).table_valued("value")
    return column.in_(sa.select(table.c.value))


def in_value(values: Sequence[Any], dialect: str) -> Any:
    """The parameter of `in_param` for these values."""
    return list(values) if dialect == "postgresql" else orjson.dumps(list(values)).decode()
