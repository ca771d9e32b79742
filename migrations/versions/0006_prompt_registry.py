"""the prompt registry: prompts, their labels, experiments and regression results

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 04:40:00

DESIGN §7. Prompts are immutable rows, a version per agent; labels are movable names per
agent; experiments keep their variants and what they were created with as JSON text, and a
regression run's measurements in `experiment_results`. Markers are spans: no table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _varchar(length: int) -> sa.String:
    # Byte order on Postgres, as every VARCHAR since revision 0003.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", _varchar(64), primary_key=True),
        sa.Column("agent", _varchar(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("digest", _varchar(64), nullable=False),
        sa.Column("parent_ids", sa.Text(), nullable=False),
        sa.Column("status", _varchar(16), nullable=False),
        sa.Column("fitness", sa.Text(), nullable=True),
        sa.Column("created_by", _varchar(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("approved_by", _varchar(64), nullable=True),
        sa.Column("approved_at", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("agent", "version", name="uq_prompts_agent_version"),
        sa.UniqueConstraint("agent", "digest", name="uq_prompts_agent_digest"),
    )
    op.create_index("ix_prompts_agent_status", "prompts", ["agent", "status"])
    op.create_table(
        "prompt_labels",
        sa.Column("agent", _varchar(200), primary_key=True),
        sa.Column("label", _varchar(100), primary_key=True),
        sa.Column("prompt_id", _varchar(64), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_prompt_labels_prompt", "prompt_labels", ["prompt_id"])
    op.create_table(
        "experiments",
        sa.Column("id", _varchar(64), primary_key=True),
        sa.Column("agent", _varchar(200), nullable=False),
        sa.Column("kind", _varchar(16), nullable=False),
        sa.Column("status", _varchar(16), nullable=False),
        sa.Column("variants", sa.Text(), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("winner", _varchar(64), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("stopped_at", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_experiments_agent_status", "experiments", ["agent", "status"])
    op.create_table(
        "experiment_results",
        sa.Column("experiment_id", _varchar(64), primary_key=True),
        sa.Column("prompt_id", _varchar(64), primary_key=True),
        sa.Column("example_id", _varchar(200), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("experiment_results")
    op.drop_index("ix_experiments_agent_status", table_name="experiments")
    op.drop_table("experiments")
    op.drop_index("ix_prompt_labels_prompt", table_name="prompt_labels")
    op.drop_table("prompt_labels")
    op.drop_index("ix_prompts_agent_status", table_name="prompts")
    op.drop_table("prompts")
