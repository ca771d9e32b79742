"""Run the server: `create_app(settings, standalone=True)` served by uvicorn on sockets bound
here, REST and OTLP/HTTP on two ports, OTLP/gRPC beside them, all over one store.

    run(Settings(store_url="sqlite:///./evolution.db"))     # what `evolution-store serve` does

Before anything starts, every port is bound (or probed, for gRPC) and the database migrated in
a forked child, so a taken port or an unreachable database is one line and nothing was opened.
Then the app's lifespan starts the store, the OTLP decode workers and the gRPC receiver
(`api/app.py`), and uvicorn serves the app on both HTTP sockets: one app, one lifespan, one
store. The OTLP port (4318 by default) answers only `/v1/traces` and `/healthz`, like a
collector's; the main port answers everything, `/v1/traces` included.

Shutdown (SIGTERM or Ctrl+C): uvicorn stops accepting and waits for in-flight requests, whose
spans the writer commits before they are answered; then the lifespan stops the gRPC server
with a grace period, then the decode workers, then `store.close()` drains whatever is still
queued. The process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.loops.auto import auto_loop_factory

from evolution_store.backends import backend_for, redact_url
from evolution_store.config import Settings
from evolution_store.db_errors import first_line
from evolution_store.errors import EvolutionStoreError
from evolution_store.heap import settle_heap

from .app import SHUTDOWN_TIMEOUT, create_app

#: paths the OTLP/HTTP port answers; everything else there is a 404
OTLP_PORT_PATHS = frozenset({"/v1/traces", "/healthz"})


class ServeError(Exception):
    """The server could not start (port taken, database unreachable...). One line, no trace."""


def run(settings: Settings, *, echo: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM/SIGINT, then drain and return. Raises `ServeError` on startup.

    The event loop is the one `uvicorn.run` would pick (`loop="auto"`): uvloop when installed,
    as with `uvicorn[standard]`, else asyncio's."""
    listeners = _listeners(settings)
    if settings.otlp_grpc_port:
        # Probe first: gRPC's own bind failure is a C-core log line plus a vague message.
        _bind(settings.host, settings.otlp_grpc_port, "OTLP/gRPC").close()
    sockets = [_bind(settings.host, port, what) for what, port in listeners]
    try:
        # Before the event loop and any thread exist: the migration runs in a forked child.
        migrated = migrate_in_child(settings.store_url)
    except BaseException:
        _close(sockets)
        raise
    with asyncio.Runner(loop_factory=auto_loop_factory()) as runner:
        runner.run(serve(settings, listeners, sockets, migrate=not migrated, echo=echo))


async def serve(
    settings: Settings,
    listeners: list[tuple[str, int]],
    sockets: list[socket.socket],
    *,
    migrate: bool,
    echo: Callable[[str], None] = print,
) -> None:
    """Async body of `run`, on its bound sockets: start the app's lifespan, serve HTTP until
    asked to stop, drain, stop the lifespan."""
    app = create_app(settings, standalone=True, migrate=migrate)
    asgi: ASGIApp = app
    if settings.otlp_http_port:
        asgi = OtlpPortOnly(app, port=settings.otlp_http_port)
    # The lifespan is run here, around uvicorn, not by uvicorn (`lifespan="off"`): a startup
    # failure then is one line instead of uvicorn's traceback, and the lifespan still stops
    # only after uvicorn has drained its requests.
    server = _Server(
        uvicorn.Config(
            asgi,
            lifespan="off",
            access_log=False,
            timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT),
            log_level="info",
        )
    )
    # From here to the end of the drain, SIGTERM/SIGINT ask for a clean stop instead of killing
    # the process; however many come, the lifespan still commits what was accepted.
    with _StopSignals(server):
        try:
            async with _running(app, settings):
                _announce(app, settings, listeners, echo)
                settle_heap()
                await server.serve(sockets=sockets)
        finally:
            _close(sockets)
    echo("evolution-store stopped")


@contextlib.asynccontextmanager
async def _running(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """The app's lifespan, its startup failures turned into one-line `ServeError`s."""
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(app.router.lifespan_context(app))
        except EvolutionStoreError as exc:
            raise ServeError(f"cannot open {redact_url(settings.store_url)}: {exc}") from exc
        except OSError as exc:  # the gRPC port; `start_grpc_server` names it
            raise ServeError(first_line(exc)) from exc
        yield


def _announce(
    app: FastAPI, settings: Settings, listeners: list[tuple[str, int]], echo: Callable[[str], None]
) -> None:
    host = _host_text(settings.host)
    echo(
        f"evolution-store {app.state.store.backend_name} database at "
        f"{redact_url(settings.store_url)}"
    )
    for what, port in listeners:
        echo(f"{what} on http://{host}:{port}")
    if app.state.grpc_server is not None:
        echo(f"OTLP/gRPC on {host}:{settings.otlp_grpc_port}")
    if app.state.otlp.pool.workers:
        echo(f"OTLP bodies decoded in {app.state.otlp.pool.workers} worker process(es)")


class OtlpPortOnly:
    """On the OTLP/HTTP port, let through only `/v1/traces` and `/healthz`.

    uvicorn puts the local address of the connection in `scope["server"]`, so the port a
    request arrived on is known without a second app."""

    def __init__(self, app: ASGIApp, *, port: int) -> None:
        self.app = app
        self.port = port

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and _local_port(scope) == self.port
            and scope["path"] not in OTLP_PORT_PATHS
        ):
            body = json.dumps(
                {"detail": "the OTLP port serves only /v1/traces", "type": "not_found"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    # `_StopSignals` handles the signals, for the whole drain, and does not re-raise them
    # afterwards (uvicorn does, which would turn a clean SIGTERM into exit -15).
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _StopSignals:
    """SIGINT/SIGTERM handlers for the life of `serve`: each signal asks the uvicorn server to
    stop (one that arrives before it serves stops it as soon as it starts). The previous
    handlers come back on exit, and the signal is not re-raised: a clean stop exits 0.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, server: uvicorn.Server) -> None:
        self._server = server
        self._previous: dict[int, Any] = {}

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self._server.handle_exit(sig, frame)

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.HANDLED}
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _listeners(settings: Settings) -> list[tuple[str, int]]:
    listeners = [
        (what, port)
        for what, port in (("API", settings.port), ("OTLP/HTTP", settings.otlp_http_port))
        if port
    ]
    ports = [port for _, port in listeners]
    if settings.otlp_grpc_port:
        ports.append(settings.otlp_grpc_port)
    if len(set(ports)) != len(ports):
        raise ServeError(f"the API, OTLP/HTTP and OTLP/gRPC ports must differ (got {ports})")
    if not ports:
        raise ServeError("every listener is disabled (all ports are 0): nothing to serve")
    return listeners


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def _bind(host: str, port: int, what: str) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.create_server(address, family=family, backlog=2048)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ServeError(f"cannot listen for {what} on {host}:{port}: {reason}") from exc
    # create_server leaves proto 0, and asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto is IPPROTO_TCP (which they inherit from this one). Without it, Nagle + delayed ACK
    # hold every request after the first on a kept-alive connection until the ACK timer fires.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())


def migrate_in_child(url: str) -> bool:
    """Migrate the database at `url` in a forked child process; True once it is at the latest
    schema. The server then never imports Alembic and the migration scripts, whose memory it
    would hold for its whole life for a moment's work. Raises `ServeError` when the migration
    fails. False when it cannot be done apart (no fork on this platform, or an in-memory
    database, which a child would not share): the store migrates as it opens.

    Call it before any thread or event loop exists: a fork copies only the calling thread."""
    try:
        in_memory = backend_for(url).in_memory
    except EvolutionStoreError as exc:
        raise ServeError(f"cannot open {redact_url(url)}: {exc}") from exc
    if in_memory or "fork" not in multiprocessing.get_all_start_methods():
        return False
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_migrate, args=(url, sender), name="evolution-store-migrate")
    child.start()
    sender.close()  # the child's copy stays open: end of file only once the child is gone
    with receiver:
        try:
            failure = receiver.recv()
        except EOFError:  # the child died before answering
            failure = None
    child.join()
    if failure is None and child.exitcode:
        failure = f"the migration process exited with code {child.exitcode}"
    if failure is not None:
        raise ServeError(f"cannot open {redact_url(url)}: {failure}")
    return True


def _migrate(url: str, answer: Connection) -> None:
    """In the child: migrate and answer None, or the reason it failed (one line)."""
    from evolution_store.migrate import upgrade

    try:
        upgrade(url)
    except (EvolutionStoreError, SQLAlchemyError, OSError) as exc:
        answer.send(first_line(exc))
    else:
        answer.send(None)


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server and len(server) > 1 else None


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
