"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-22 04:48:45.231980
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("config", sa.Text(), server_default="{}", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("ended_at", sa.BigInteger(), nullable=True),
        sa.Column("origin", sa.String(length=8), server_default="api", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id", "attempt", name="uq_executions_task_attempt"),
    )
    op.create_table(
        "indexed_keys",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "reward_links",
        sa.Column("reward_pk", sa.BigInteger(), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("reward_pk", "span_pk"),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("reward_links", schema=None) as batch_op:
        batch_op.create_index("ix_reward_links_span", ["span_pk"], unique=False)

    op.create_table(
        "reward_selectors",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("reward_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "value", "reward_pk"),
    )
    with op.batch_alter_table("reward_selectors", schema=None) as batch_op:
        batch_op.create_index("ix_reward_selectors_reward", ["reward_pk"], unique=False)

    op.create_table(
        "reward_tags",
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.Column("reward_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tag", "reward_pk"),
    )
    with op.batch_alter_table("reward_tags", schema=None) as batch_op:
        batch_op.create_index("ix_reward_tags_reward", ["reward_pk"], unique=False)

    op.create_table(
        "reward_span_tags",
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.Column("reward_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tag", "reward_pk"),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "rewards",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("dimensions", sa.Text(), nullable=False),
        sa.Column("feedback", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("metadata", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("target_kind", sa.String(length=16), nullable=False),
        sa.Column("target_span_id", sa.String(length=16), nullable=True),
        sa.Column("target_trace_id", sa.String(length=32), nullable=True),
        sa.Column("target_execution_id", sa.String(length=200), nullable=True),
        sa.Column("target_task_id", sa.String(length=200), nullable=True),
        sa.Column("selectors", sa.Text(), nullable=True),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("id"),
    )
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.create_index("ix_rewards_name", ["name", "pk"], unique=False)
        batch_op.create_index("ix_rewards_resolved", ["resolved_at", "pk"], unique=False)
        batch_op.create_index("ix_rewards_target_execution", ["target_execution_id"], unique=False)
        batch_op.create_index("ix_rewards_target_span", ["target_span_id"], unique=False)
        batch_op.create_index("ix_rewards_target_task", ["target_task_id"], unique=False)
        batch_op.create_index("ix_rewards_target_trace", ["target_trace_id"], unique=False)

    op.create_table(
        "span_attributes",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.String(length=500), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "value", "span_pk"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "span_tags",
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.Column("span_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tag", "span_pk"),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("span_tags", schema=None) as batch_op:
        batch_op.create_index("ix_span_tags_span", ["span_pk"], unique=False)

    op.create_table(
        "spans",
        sa.Column(
            "pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.String(length=16), nullable=False),
        sa.Column("parent_span_id", sa.String(length=16), nullable=True),
        sa.Column("name", sa.String(length=1000), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("duration_ns", sa.BigInteger(), nullable=True),
        sa.Column("status_code", sa.String(length=8), nullable=False),
        sa.Column("status_message", sa.Text(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("links", sa.Text(), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.Column("execution_id", sa.String(length=200), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("agent", sa.String(length=500), nullable=True),
        sa.Column("operation", sa.String(length=100), nullable=True),
        sa.Column("model", sa.String(length=500), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=True),
        sa.Column("output_tokens", sa.BigInteger(), nullable=True),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("ingested_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("trace_id", "span_id", name="uq_spans_identity"),
    )
    with op.batch_alter_table("spans", schema=None) as batch_op:
        batch_op.create_index("ix_spans_agent_start", ["agent", "start_time"], unique=False)
        batch_op.create_index("ix_spans_span_id", ["span_id"], unique=False)
        batch_op.create_index("ix_spans_task_sequence", ["task_id", "sequence"], unique=False)

    op.create_table(
        "task_tags",
        sa.Column("tag", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("tag", "task_id"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("input", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("metadata", sa.Text(), server_default="{}", nullable=False),
        sa.Column("tags", sa.Text(), server_default="[]", nullable=False),
        sa.Column("span_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("origin", sa.String(length=8), server_default="api", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_created", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_tasks_status_created", ["status", "created_at"], unique=False)
    # The link keys of OTLP_NOTES are indexed from the start; reward selectors add more.
    op.bulk_insert(
        sa.table(
            "indexed_keys", sa.column("key", sa.String), sa.column("created_at", sa.BigInteger)
        ),
        [
            {"key": key, "created_at": 0}
            for key in ("gen_ai.conversation.id", "session.id", "gen_ai.response.id", "user.id")
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_status_created")
        batch_op.drop_index("ix_tasks_created")

    op.drop_table("tasks")
    op.drop_table("task_tags")
    with op.batch_alter_table("spans", schema=None) as batch_op:
        batch_op.drop_index("ix_spans_task_sequence")
        batch_op.drop_index("ix_spans_span_id")
        batch_op.drop_index("ix_spans_agent_start")

    op.drop_table("spans")
    with op.batch_alter_table("span_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_span_tags_span")

    op.drop_table("span_tags")
    op.drop_table("span_attributes")
    with op.batch_alter_table("rewards", schema=None) as batch_op:
        batch_op.drop_index("ix_rewards_target_trace")
        batch_op.drop_index("ix_rewards_target_task")
        batch_op.drop_index("ix_rewards_target_span")
        batch_op.drop_index("ix_rewards_target_execution")
        batch_op.drop_index("ix_rewards_resolved")
        batch_op.drop_index("ix_rewards_name")

    op.drop_table("rewards")
    with op.batch_alter_table("reward_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_tags_reward")

    op.drop_table("reward_tags")
    op.drop_table("reward_span_tags")
    with op.batch_alter_table("reward_selectors", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_selectors_reward")

    op.drop_table("reward_selectors")
    with op.batch_alter_table("reward_links", schema=None) as batch_op:
        batch_op.drop_index("ix_reward_links_span")

    op.drop_table("reward_links")
    op.drop_table("indexed_keys")
    op.drop_table("executions")
