"""`evolution-store db upgrade`: migrates SQLite and Postgres, is idempotent, and fails in one
line on a bad or unreachable database."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys

from click.testing import CliRunner

from evolution_store import EvolutionStore
from evolution_store.backends.sqlite import PRAGMAS
from evolution_store.cli import cli
from evolution_store.models import TaskIn


async def _usable_without_migrating(url: str) -> str:
    store = await EvolutionStore.open(url, migrate=False)
    try:
        task, created = await store.create_task(TaskIn(id="after-upgrade"))
        assert created
        return task["id"]
    finally:
        await store.close()


def test_upgrade_migrates_a_new_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert "latest schema" in result.output
    assert asyncio.run(_usable_without_migrating(url)) == "after-upgrade"
    again = CliRunner().invoke(cli, ["db", "upgrade", "--db", url])
    assert again.exit_code == 0, again.output


def test_upgrade_makes_a_new_sqlite_file_as_the_store_does(tmp_path):
    # A page size only takes on a file with no tables yet: the first connection must set it.
    path = tmp_path / "fresh.db"
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", f"sqlite:///{path}"])
    assert result.exit_code == 0, result.output
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA page_size").fetchone()[0] == int(PRAGMAS["page_size"])
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_upgrade_reads_the_environment(tmp_path, monkeypatch):
    target = tmp_path / "env.db"
    monkeypatch.setenv("EVOLUTION_STORE_URL", f"sqlite:///{target}")
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert target.exists()


def test_upgrade_on_both_backends(store_url):
    # The session's Postgres database is migrated already: upgrading again must be a no-op.
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", store_url])
    assert result.exit_code == 0, result.output


def test_bad_url_is_one_line():
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", "mysql://x/y"])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "unsupported database URL" in result.output


def test_unreachable_postgres_is_one_line():
    url = "postgresql://someone:hunter2@127.0.0.1:1/nothing"
    result = CliRunner().invoke(cli, ["db", "upgrade", "--db", url])
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot upgrade")
    assert result.output.count("\n") == 1
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_sqlite_in_a_missing_directory_is_one_line(tmp_path):
    # In a subprocess, as users see it: aiosqlite's worker thread can outlive the failed
    # connection and print a traceback ("Event loop is closed") after the loop that opened the
    # connection is closed; the race is lost about one time in seven, hence several runs.
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    for _ in range(5):
        result = subprocess.run(
            [sys.executable, "-m", "evolution_store", "db", "upgrade", "--db", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1
        assert result.stderr.startswith("Error: cannot upgrade"), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
