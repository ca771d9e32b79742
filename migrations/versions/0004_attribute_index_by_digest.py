"""the attribute index keeps a 64-bit digest of key and value instead of their text

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 11:30:00

`span_attributes` held (key, value, span_pk): wide entries in a b-tree of random keys, whose
pages nearly every commit rewrote. It now holds (digest, span_pk), the digest being
`span_rows.attribute_digest(key, value)`: a smaller index, so span ingest writes fewer WAL
bytes on SQLite and costs the Postgres backend less CPU (bench/README.md, "Digests").
Existing rows are converted in batches; going down rebuilds the text rows from the spans'
attributes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from alembic import op

from evolution_store.models import RESERVED_LINK_KEYS, link_value_text
from evolution_store.span_rows import attribute_digest

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BATCH = 10_000


def upgrade() -> None:
    op.rename_table("span_attributes", "span_attributes_text")
    if op.get_bind().dialect.name == "postgresql":  # the new table's key takes this name
        op.execute("ALTER INDEX span_attributes_pkey RENAME TO span_attributes_text_pkey")
    table = _create(
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest", "span_pk"),
    )
    rows = op.get_bind().execute(sa.text("SELECT key, value, span_pk FROM span_attributes_text"))
    for batch in _batches(rows):
        digests = {(attribute_digest(key, value), span_pk) for key, value, span_pk in batch}
        _insert(table, [{"digest": digest, "span_pk": pk} for digest, pk in digests])
    op.drop_table("span_attributes_text")


def downgrade() -> None:
    op.drop_table("span_attributes")
    table = _create(
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "value", "span_pk"),
    )
    bind = op.get_bind()
    keys = [row[0] for row in bind.execute(sa.text("SELECT key FROM indexed_keys"))]
    keys = [key for key in keys if key not in RESERVED_LINK_KEYS]
    spans = bind.execute(sa.text("SELECT pk, attributes FROM spans"))
    for batch in _batches(spans):
        _insert(table, [row for pk, text in batch for row in _text_rows(pk, text, keys)])


def _create(*columns: Any) -> sa.Table:
    return op.create_table("span_attributes", *columns, sqlite_with_rowid=False)


def _insert(table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        op.bulk_insert(table, rows)


def _batches(result: Any) -> Iterator[list[Any]]:
    while batch := result.fetchmany(BATCH):
        yield batch


def _text_rows(pk: int, text: str, keys: list[str]) -> Iterator[dict[str, Any]]:
    # As revision 0003 stored them: the canonical text of scalar values up to 500 characters.
    attributes = json.loads(text)
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str | int | float | bool):
            value_text = link_value_text(value)
            if len(value_text) <= 500:
                yield {"key": key, "value": value_text, "span_pk": pk}
