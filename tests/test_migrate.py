"""Migrations are the only way the schema is made; they are idempotent and match schema.py."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from evolution_store import EvolutionStore
from evolution_store.schema import metadata


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
