"""span ids and attribute digests are indexed by bucket of arrival first

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 21:00:00

`ix_spans_span_id` (span id) and `span_attributes` (digest, span_pk) had keys random for
every span, so every commit touched nearly every page of both, and SQLite writes each page a
commit touched: the cost of a span grew with the store. Both now lead with the span's bucket,
`pk >> 16` (`schema.span_bucket`): `ix_spans_bucket_span_id` on (pk >> 16, span_id), and
`span_attributes` keyed (bucket, digest, span_pk). Rows are copied in SQL; going down copies
them back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

#: `schema.SPAN_BUCKET_BITS` as of this revision (a later change of it is a new revision).
BUCKET_OF_PK = "(pk >> 16)"


def upgrade() -> None:
    with op.batch_alter_table("spans", schema=None) as batch_op:
        batch_op.drop_index("ix_spans_span_id")
    op.create_index("ix_spans_bucket_span_id", "spans", [sa.text(BUCKET_OF_PK), "span_id"])
    _replace_attribute_index(
        sa.Column("bucket", sa.Integer(), nullable=False),
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bucket", "digest", "span_pk"),
        copy="SELECT span_pk >> 16, digest, span_pk FROM span_attributes_old",
    )


def downgrade() -> None:
    op.drop_index("ix_spans_bucket_span_id", table_name="spans")
    with op.batch_alter_table("spans", schema=None) as batch_op:
        batch_op.create_index("ix_spans_span_id", ["span_id"], unique=False)
    _replace_attribute_index(
        sa.Column("digest", sa.BigInteger(), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("digest", "span_pk"),
        copy="SELECT digest, span_pk FROM span_attributes_old",
    )


def _replace_attribute_index(*columns: sa.SchemaItem, copy: str) -> None:
    """`span_attributes` made anew with `columns`, its rows copied over by `copy` (a SELECT
    from `span_attributes_old`)."""
    op.rename_table("span_attributes", "span_attributes_old")
    if op.get_bind().dialect.name == "postgresql":  # the new table's key takes this name
        op.execute("ALTER INDEX span_attributes_pkey RENAME TO span_attributes_old_pkey")
    table = op.create_table("span_attributes", *columns, sqlite_with_rowid=False)
    names = ", ".join(column.name for column in table.columns)
    op.execute(f"INSERT INTO span_attributes ({names}) {copy}")
    op.drop_table("span_attributes_old")
