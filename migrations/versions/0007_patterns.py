"""the pattern learner: patterns, and executions by creation time

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-13 09:00:00

DESIGN §7. A pattern is one row per condition and context, its record's parts as JSON text,
with its q-value and effect size beside them as the sort keys of a list. The learner reads
executions newest first and from a time on: `ix_executions_created` serves both.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def _varchar(length: int) -> sa.String:
    # Byte order on Postgres, as every VARCHAR since revision 0003.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_index("ix_executions_created", "executions", ["created_at", "id"])
    op.create_table(
        "patterns",
        sa.Column("id", _varchar(64), primary_key=True),
        sa.Column("agent", _varchar(500), nullable=True),
        sa.Column("task_name", _varchar(500), nullable=True),
        sa.Column("kind", _varchar(16), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("feature", sa.Text(), nullable=False),
        sa.Column("effect", sa.Text(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("explanation", sa.Text(), nullable=False),
        sa.Column("status", _varchar(16), nullable=False),
        sa.Column("q_value", sa.Float(), nullable=False),
        sa.Column("effect_size", sa.Float(), nullable=False),
        sa.Column("first_seen", sa.BigInteger(), nullable=False),
        sa.Column("last_seen", sa.BigInteger(), nullable=False),
        sa.Column("applied", sa.Text(), nullable=True),
        sa.Column("run_id", _varchar(64), nullable=False),
    )
    op.create_index("ix_patterns_agent_status", "patterns", ["agent", "status"])


def downgrade() -> None:
    op.drop_index("ix_patterns_agent_status", table_name="patterns")
    op.drop_table("patterns")
    op.drop_index("ix_executions_created", table_name="executions")
