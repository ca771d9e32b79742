"""Schema migrations through Alembic, callable from code (`serve`, `EvolutionStore.open`) and
from the CLI (`evolution-store db upgrade`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

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
    """Synchronous entry (the CLI, `serve`'s migration process): migrate the database at `url`
    to `revision` over the store's own writer engine, so a new SQLite file is made as the
    store makes it: its page size and WAL mode are set at its first connection, never after
    (a plain engine left 4 KiB pages, for good)."""

    async def run() -> None:
        backend = backend_for(url)  # checks what can be checked before connecting
        writer, reader = backend.create_engines()
        try:
            await upgrade_engine(writer, revision)
        finally:
            await writer.dispose()
            await reader.dispose()
            backend.close()

    asyncio.run(run())
