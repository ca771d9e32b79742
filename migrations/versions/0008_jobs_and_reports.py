"""the worker: job runs and stored reports

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 09:00:00

Issue 23. `evolution-store worker` records every run of its jobs (the analysis, pattern
mining) in `job_runs`, where `POST /jobs/{name}/run` also leaves its requests for a worker to
claim; what a run found is a row of `reports`, served by `GET /reports`. `prompts.created_by`
has no CHECK constraint (a VARCHAR(16) validated by the model), so "lab" needs no change here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _varchar(length: int) -> sa.String:
    # Byte order on Postgres, as every VARCHAR since revision 0003.
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", _varchar(64), primary_key=True),
        sa.Column("kind", _varchar(32), nullable=False),
        sa.Column("agent", _varchar(200), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=True),
        sa.Column("window_end", sa.BigInteger(), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("markdown", sa.Text(), nullable=True),
        sa.Column("html", sa.Text(), nullable=True),
        sa.Column("job_run_id", _varchar(64), nullable=True),
    )
    op.create_index("ix_reports_created", "reports", ["created_at", "id"])
    op.create_index("ix_reports_kind_agent_created", "reports", ["kind", "agent", "created_at"])
    op.create_table(
        "job_runs",
        sa.Column("id", _varchar(64), primary_key=True),
        sa.Column("job", _varchar(32), nullable=False),
        sa.Column("status", _varchar(16), nullable=False),
        sa.Column("trigger", _varchar(16), nullable=False),
        sa.Column("agent", _varchar(200), nullable=True),
        sa.Column("requested_at", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=True),
        sa.Column("finished_at", sa.BigInteger(), nullable=True),
        sa.Column("worker", _varchar(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report_id", _varchar(64), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
    )
    op.create_index("ix_job_runs_requested", "job_runs", ["requested_at", "id"])
    op.create_index("ix_job_runs_status_requested", "job_runs", ["status", "requested_at"])


def downgrade() -> None:
    op.drop_index("ix_job_runs_status_requested", table_name="job_runs")
    op.drop_index("ix_job_runs_requested", table_name="job_runs")
    op.drop_table("job_runs")
    op.drop_index("ix_reports_kind_agent_created", table_name="reports")
    op.drop_index("ix_reports_created", table_name="reports")
    op.drop_table("reports")
