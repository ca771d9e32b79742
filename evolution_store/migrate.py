"""Schema migrations through Alembic, callable from code (`serve`, `EvolutionStore.open`) and
from the CLI (`evolution-store db upgrade`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import migrations

from .backends import backend_for, normalize_url


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged `migrations/` folder (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if url:
        cfg.set_main_option("sqlalchemy.url", normalize_url(url))
    return cfg


def _upgrade_on(connection: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


async def upgrade_engine(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database behind `engine` to `revision`. Idempotent."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_on, revision)


def upgrade(url: str, revision: str = "head") -> None:
    """Synchronous entry for the CLI: migrate the database at `url` to `revision`."""

    async def run() -> None:
        backend_for(url)  # checks what can be checked before connecting
        engine = create_async_engine(normalize_url(url))
        try:
            await upgrade_engine(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(run())
