"""SQLite connection settings: every PRAGMA set on connect is read back."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlalchemy as sa

from evolution_store import EvolutionStore
from evolution_store.backends import normalize_url
from evolution_store.backends.sqlite import PRAGMAS


async def test_pragmas_are_applied_to_reader_and_writer(tmp_path: Path) -> None:
    store = await EvolutionStore.open(f"sqlite:///{tmp_path / 'p.db'}")
    try:
        for engine in (store._writer_engine, store._reader_engine):  # noqa: SLF001
            async with engine.connect() as conn:
                for name, expected in PRAGMAS.items():
                    value = (await conn.execute(sa.text(f"PRAGMA {name}"))).scalar()
                    assert _same(name, value, expected), (name, value, expected)
    finally:
        await store.close()
    assert (tmp_path / "p.db").exists()


def _same(name: str, value: object, expected: str) -> bool:
    named = {"synchronous": {"normal": 1}, "temp_store": {"memory": 2}}
    if name in named:
        return value == named[name][expected]
    return str(value).lower() == expected


async def test_wal_file_appears_after_a_write(tmp_path: Path) -> None:
    from factories import span_record

    path = tmp_path / "w.db"
    store = await EvolutionStore.open(f"sqlite:///{path}")
    try:
        await store.ingest([span_record()])
        assert Path(str(path) + "-wal").exists()
        mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    finally:
        await store.close()


def test_plain_urls_are_normalised() -> None:
    assert normalize_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalize_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalize_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
