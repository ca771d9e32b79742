"""Fixtures for the whole suite.

Backends (DESIGN §6): every storage and API test runs on SQLite and on Postgres.

- `backend`: "sqlite" or "postgres" (parametrised; Postgres cases carry the `postgres` mark,
  so `pytest -m "not postgres"` runs SQLite only).
- `store_url`: a fresh database URL for the test. SQLite: a new file in `tmp_path`. Postgres:
  one database per test run, `evolution_test_<random>`, created (and migrated) once per session
  from `EVOLUTION_TEST_POSTGRES_URL` (default `postgresql://postgres@127.0.0.1:5432/postgres`),
  every table emptied before each test (the rows the migrations seed are put back), dropped at
  the end. If Postgres is unreachable its cases skip, saying why; with `CI=true` they fail.
- `store`: an open `EvolutionStore` on `store_url`, closed (drained) after the test.
- `api_client`: an `httpx.AsyncClient` over `httpx.ASGITransport` to `create_app(...)` on that
  store, with the app's lifespan run; base URL `http://test`. No socket.
- `make_client`: `async with make_client(api_keys="rw,ro:ro") as client:` — the same, with
  `Settings` overrides (auth, body cap...).
- `live_server`: a factory that runs `evolution-store serve` as a real subprocess on free
  loopback ports, for end-to-end tests (signals, crashes, OTLP exporters)::

      def test_x(live_server, store_url):
          server = live_server(store_url)                     # waits for /healthz
          httpx.post(server.url + "/api/v1/spans", json=...)  # REST (and /v1/traces)
          server.otlp_http_url  # http://127.0.0.1:<port>/v1/traces (OTLP/HTTP port)
          server.grpc_target    # "127.0.0.1:<port>" when started with grpc=True, else None
          server.kill()          # SIGKILL, no cleanup
          code = server.stop()   # SIGTERM and wait; returns the exit code
          server.log()           # everything the server printed

  Keyword arguments: `grpc=False`, `otlp_http=True`, `api_keys=None`, `env={}` (added to the
  environment, after EVOLUTION_API_KEYS and EVOLUTION_STORE_URL are cleared), `db_flag=True`
  (False: no `--db`, so env or the default ./evolution.db in `tmp_path` is used),
  `ready_timeout=60`. The working directory is `tmp_path`. Servers still running at teardown
  get SIGTERM, then SIGKILL.

`pytest_report_header` prints the SQLite and Postgres versions (or why Postgres is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from evolution_store.backends import redact_url
from evolution_store.db_errors import first_line

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: runs against PostgreSQL")


# -- Postgres: one database per run -----------------------------------------------------------


def _admin_url() -> str:
    return os.environ.get("EVOLUTION_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _plain_dsn(url: str, database: str | None = None) -> str:
    """A URL asyncpg accepts (no `+driver`), optionally pointing at another database."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@dataclass
class _Postgres:
    """What the session learned about Postgres: a database URL, or why there is none."""

    url: str | None = None
    version: str | None = None
    reason: str | None = None
    database: str | None = None
    seed: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)


_postgres: _Postgres | None = None


async def _pg_probe() -> str:
    import asyncpg

    conn = await asyncpg.connect(_plain_dsn(_admin_url()), timeout=5)
    try:
        return "PostgreSQL " + str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def _pg_create() -> _Postgres:
    import asyncpg

    from evolution_store import EvolutionStore

    name = "evolution_test_" + secrets.token_hex(4)
    admin = await asyncpg.connect(_plain_dsn(_admin_url()), timeout=5)
    try:
        version = "PostgreSQL " + str(await admin.fetchval("SHOW server_version"))
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = _plain_dsn(_admin_url(), name)
    store = await EvolutionStore.open(url)  # runs the migrations once
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        tables = [
            row["tablename"]
            for row in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'alembic_version' ORDER BY tablename"
            )
        ]
        seed = {}
        for table in tables:
            rows = await conn.fetch(f'SELECT * FROM "{table}"')
            if rows:
                seed[table] = [tuple(row.values()) for row in rows]
    finally:
        await conn.close()
    return _Postgres(url=url, version=version, database=name, seed=seed, tables=tables)


async def _pg_reset(pg: _Postgres) -> None:
    """Empty every table and put back what the migrations seeded."""
    import asyncpg

    conn = await asyncpg.connect(pg.url)
    try:
        quoted = ", ".join(f'"{table}"' for table in pg.tables)
        await conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY")
        for table, rows in pg.seed.items():
            await conn.copy_records_to_table(table, records=rows)
    finally:
        await conn.close()


async def _pg_drop(pg: _Postgres) -> None:
    import asyncpg

    admin = await asyncpg.connect(_plain_dsn(_admin_url()), timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{pg.database}" WITH (FORCE)')
    finally:
        await admin.close()


def _run(coroutine: Any) -> Any:
    """Run a coroutine to completion on a private loop in a worker thread, leaving the test's
    event loop (and the thread's current loop) alone."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _postgres_state() -> _Postgres:
    """Create the run's database on first use; remember a failure so it is tried once."""
    global _postgres
    if _postgres is None:
        try:
            _postgres = _run(_pg_create())
        except Exception as exc:  # any failure to reach or set up Postgres is a skip reason
            _postgres = _Postgres(
                reason=f"PostgreSQL unreachable at {redact_url(_admin_url())}: {first_line(exc)}"
            )
    return _postgres


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"SQLite {sqlite3.sqlite_version}"]
    try:
        lines.append(_run(_pg_probe()) + f" at {redact_url(_admin_url())}")
    except Exception as exc:
        outcome = "fail (CI=true)" if IN_CI else "be skipped"
        lines.append(f"PostgreSQL: postgres tests will {outcome} ({first_line(exc)})")
    return lines


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _postgres is not None and _postgres.database:
        with contextlib.suppress(Exception):
            _run(_pg_drop(_postgres))


# -- backends, stores, clients ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store_url(backend: str, tmp_path: Path) -> str:
    """A fresh, empty database for this test (see the module docstring)."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'evolution.db'}"
    pg = _postgres_state()
    if pg.url is None:
        if IN_CI:
            pytest.fail(f"CI=true and {pg.reason}")
        pytest.skip(pg.reason or "PostgreSQL unavailable")
    _run(_pg_reset(pg))
    return pg.url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Any]:
    from evolution_store import EvolutionStore

    opened = await EvolutionStore.open(store_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def make_client(store: Any, store_url: str) -> Callable[..., Any]:
    """`async with make_client(**settings) as client` — an in-process client to an app on the
    test's store, lifespan run; keyword arguments override `Settings` fields."""
    from api.app import create_app
    from evolution_store.config import Settings

    @contextlib.asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        settings = Settings(**{"store_url": store_url, "api_keys": "", **overrides})
        app = create_app(settings, store=store)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client

    return make


@pytest.fixture
async def api_client(make_client: Callable[..., Any]) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as client:
        yield client


# -- a real server process --------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


@dataclass
class LiveServer:
    """One `evolution-store serve` subprocess (see the module docstring)."""

    process: subprocess.Popen[bytes]
    db_url: str
    port: int
    otlp_http_port: int | None
    grpc_port: int | None
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def otlp_http_url(self) -> str | None:
        if self.otlp_http_port is None:
            return None
        return f"http://127.0.0.1:{self.otlp_http_port}/v1/traces"

    @property
    def grpc_target(self) -> str | None:
        return None if self.grpc_port is None else f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait for the exit, return the exit code (SIGKILL if it hangs)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crash or the OOM killer."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    started: list[LiveServer] = []

    def start(
        db_url: str | None = None,
        *,
        grpc: bool = False,
        otlp_http: bool = True,
        api_keys: str | None = None,
        env: dict[str, str] | None = None,
        db_flag: bool = True,
        ready_timeout: float = 60.0,
    ) -> LiveServer:
        db_url = db_url or f"sqlite:///{tmp_path / 'live.db'}"
        port, otlp_port, grpc_port = free_ports(3)
        command = [
            sys.executable, "-m", "evolution_store", "serve",
            *(["--db", db_url] if db_flag else []),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--otlp-http-port", str(otlp_port if otlp_http else 0),
            "--otlp-grpc-port", str(grpc_port if grpc else 0),
        ]  # fmt: skip
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("EVOLUTION_API_KEYS", "EVOLUTION_STORE_URL"):
            child_env.pop(name, None)
        child_env.update(env or {})
        if api_keys is not None:
            child_env["EVOLUTION_API_KEYS"] = api_keys
        log_path = tmp_path / f"server-{len(started) + 1}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=child_env, cwd=tmp_path
            )
        server = LiveServer(
            process=process,
            db_url=db_url,
            port=port,
            otlp_http_port=otlp_port if otlp_http else None,
            grpc_port=grpc_port if grpc else None,
            log_path=log_path,
        )
        started.append(server)
        server.wait_ready(ready_timeout)
        return server

    yield start
    for server in started:
        server.stop(timeout=30)
