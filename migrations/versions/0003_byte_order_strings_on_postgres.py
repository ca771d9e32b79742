"""compare every VARCHAR column byte by byte on Postgres (collation "C")

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 10:40:00

Postgres compared ids, tags and keys in the database's locale: each b-tree comparison went
through `strcoll` (with C.UTF-8 too; only "C" and "POSIX" take the plain `memcmp`). With
"C", span ingest costs the Postgres backend less CPU (bench/README.md, 'Collation "C"'),
and these columns sort as SQLite sorts them. SQLite compares bytes already: nothing to do
there.

One ALTER TABLE per table, so each index over the changed columns is rebuilt once; the
tables themselves are not rewritten (same type, only the collation changes).
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: table -> (column, length) of its VARCHAR columns, as of this revision
VARCHAR_COLUMNS = {
    "executions": (("id", 200), ("task_id", 200), ("status", 16), ("origin", 8)),
    "indexed_keys": (("key", 200),),
    "reward_links": (("span_id", 16),),
    "reward_selectors": (("key", 200), ("value", 500)),
    "reward_span_tags": (("tag", 200),),
    "reward_tags": (("tag", 200),),
    "rewards": (
        ("id", 200),
        ("name", 200),
        ("source", 16),
        ("target_kind", 16),
        ("target_span_id", 16),
        ("target_trace_id", 32),
        ("target_execution_id", 200),
        ("target_task_id", 200),
    ),
    "span_attributes": (("key", 200), ("value", 500)),
    "span_tags": (("tag", 200),),
    "spans": (
        ("trace_id", 32),
        ("span_id", 16),
        ("parent_span_id", 16),
        ("name", 1000),
        ("kind", 16),
        ("status_code", 8),
        ("task_id", 200),
        ("execution_id", 200),
        ("agent", 500),
        ("operation", 100),
        ("model", 500),
    ),
    "task_tags": (("tag", 200), ("task_id", 200)),
    "tasks": (("id", 200), ("name", 500), ("status", 16), ("origin", 8)),
}


def upgrade() -> None:
    _set_collation('COLLATE "C"')


def downgrade() -> None:
    _set_collation("")  # back to the database's default


def _set_collation(clause: str) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, columns in VARCHAR_COLUMNS.items():
        changes = ", ".join(
            f'ALTER COLUMN "{name}" TYPE VARCHAR({length}) {clause}'.rstrip()
            for name, length in columns
        )
        op.execute(f'ALTER TABLE "{table}" {changes}')
