"""drop the span_tags index by span

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:50:00

Nothing reads a span's tags through `span_tags` any more: the writer and reward linking read
`spans.tags` (the same tags, as JSON, on the row they already look up), and summaries by tag
read `reward_span_tags`. The index cost every tagged span one b-tree insert per tag.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("span_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_span_tags_span")


def downgrade() -> None:
    with op.batch_alter_table("span_tags", schema=None) as batch_op:
        batch_op.create_index("ix_span_tags_span", ["span_pk"], unique=False)
