"""Migrations are the only way the schema is made; they are idempotent and match schema.py."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from factories import pattern, span_record
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from evolution_store import EvolutionStore
from evolution_store.migrate import alembic_config, upgrade_engine
from evolution_store.models import TaskIn
from evolution_store.queries import SpanQuery
from evolution_store.schema import metadata


# SQLite's reflection cannot read an index on an expression (`ix_spans_bucket_span_id`), so
# the comparison leaves that one index out, and says so.
@pytest.mark.filterwarnings("ignore:.*expression-based index")
async def test_upgrade_twice_and_schema_matches_models(store_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from evolution_store.backends import normalize_url

    for _ in range(2):
        store = await EvolutionStore.open(store_url)
        await store.close()
    engine = create_async_engine(normalize_url(store_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
            version = (
                await conn.execute(sa.text("SELECT version_num FROM alembic_version"))
            ).scalar()
    finally:
        await engine.dispose()
    assert diff == [], diff
    assert version


def test_cli_upgrade_function_runs_outside_a_loop(tmp_path) -> None:
    from evolution_store.migrate import upgrade

    upgrade(f"sqlite:///{tmp_path / 'm.db'}")
    assert asyncio.run(_tables(f"sqlite:///{tmp_path / 'm.db'}")) >= {"spans", "rewards", "tasks"}


async def _tables(url: str) -> set[str]:
    store = await EvolutionStore.open(url, migrate=False)
    try:
        async with store._reader_engine.connect() as conn:  # noqa: SLF001
            return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))
    finally:
        await store.close()


def _varchar_columns() -> set[tuple[str, str]]:
    return {
        (table.name, column.name)
        for table in metadata.tables.values()
        for column in table.columns
        if isinstance(column.type, sa.String) and not isinstance(column.type, sa.Text)
    }


async def _postgres_collations(conn: AsyncConnection) -> dict[tuple[str, str], str | None]:
    rows = await conn.execute(
        sa.text(
            "SELECT table_name, column_name, collation_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND data_type = 'character varying'"
            " AND table_name <> 'alembic_version'"
        )
    )
    return {(table, column): collation for table, column, collation in rows}


async def test_varchar_columns_compare_bytes_on_both_backends(store: EvolutionStore) -> None:
    # Ids, tags and keys: byte order, whatever the Postgres database's locale (migration 0003).
    for task_id in ("é-task", "a-task", "B-task", "Z-task"):
        await store.create_task(TaskIn(id=task_id, name=task_id))
    async with store._reader_engine.connect() as conn:  # noqa: SLF001 - catalog probe
        ordered = [
            row[0] for row in await conn.execute(sa.text("SELECT id FROM tasks ORDER BY id"))
        ]
        if store.backend_name == "postgres":
            collations = await _postgres_collations(conn)
            assert set(collations) == _varchar_columns()
            assert set(collations.values()) == {"C"}, collations
    assert ordered == sorted(ordered, key=lambda text: text.encode())


def _downgrade_on(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.downgrade(cfg, revision)


async def test_migrations_go_down_and_up_with_the_data(store: EvolutionStore) -> None:
    # Down to 0002 and back: the collations (0003) and the attribute index, text rows rebuilt
    # from the spans' attributes, then digests of them (0004).
    record = span_record(attributes={"session.id": "s-1", "user.id": 7, "input.value": "q"})
    await store.ingest([record])
    await store.flush()
    engine = store._writer_engine  # noqa: SLF001 - migrations run on the writer's engine
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_on, "0002")
        if store.backend_name == "postgres":
            assert set((await _postgres_collations(conn)).values()) == {None}
        rows = await conn.execute(sa.text("SELECT key, value FROM span_attributes"))
        assert sorted(tuple(row) for row in rows) == [("session.id", "s-1"), ("user.id", "7")]
    await upgrade_engine(engine)
    async with engine.connect() as conn:
        if store.backend_name == "postgres":
            assert set((await _postgres_collations(conn)).values()) == {"C"}
    for attributes in ({"session.id": "s-1"}, {"user.id": "7"}):
        found = await store.list_spans(SpanQuery(attributes=attributes))
        assert [span["span_id"] for span in found.items] == [record.span_id], attributes
    assert (await store.list_spans(SpanQuery(attributes={"session.id": "s-2"}))).items == []


async def _names(conn: AsyncConnection) -> tuple[set[str], set[str]]:
    """(table names, index names of `executions`)."""

    def read(sync: Connection) -> tuple[set[str], set[str]]:
        inspector = sa.inspect(sync)
        indexes = {index["name"] for index in inspector.get_indexes("executions")}
        return set(inspector.get_table_names()), indexes

    return await conn.run_sync(read)


async def test_patterns_migration_goes_down_and_up(store: EvolutionStore) -> None:
    # 0007: the patterns table and executions by creation time, gone at 0006 and back after.
    made = pattern()
    await store.save_patterns([made], scope={"agent": None})
    engine = store._writer_engine  # noqa: SLF001 - migrations run on the writer's engine
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_on, "0006")
        tables, indexes = await _names(conn)
        assert "patterns" not in tables and "ix_executions_created" not in indexes
    await upgrade_engine(engine)
    async with engine.connect() as conn:
        tables, indexes = await _names(conn)
        assert "patterns" in tables and "ix_executions_created" in indexes
    assert (await store.list_patterns()).items == []  # a pattern is mined again, not kept
    assert (await store.save_patterns([made], scope={"agent": None}))["new"] == 1
