"""Run the server: REST and OTLP/HTTP from one uvicorn server on two ports, OTLP/gRPC beside
them, all over one store.

    run(Settings(store_url="sqlite:///./evolution.db"))     # what `evolution-store serve` does

How the two HTTP ports work: both sockets are bound here, before anything else starts, and
handed to a single `uvicorn.Server.serve(sockets=[...])`, so one app, one lifespan and one
store serve both. The OTLP port (4318 by default) answers only `/v1/traces` and `/healthz`,
like a collector's; the main port answers everything, `/v1/traces` included.

Shutdown (SIGTERM or Ctrl+C): uvicorn stops accepting and waits for in-flight requests, whose
spans the writer commits before they are answered; then the gRPC server stops with a grace
period; then `store.close()` drains whatever is still queued. The process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from types import FrameType
from typing import Any

import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.loops.auto import auto_loop_factory

from evolution_store import EvolutionStore
from evolution_store.backends import backend_for, redact_url
from evolution_store.config import Settings
from evolution_store.errors import EvolutionStoreError
from evolution_store.heap import settle_heap
from evolution_store.otlp_decoder import OtlpDecoder, default_workers
from evolution_store.writer import first_line

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
    """Async body of `run`, on its bound sockets: open the store, start gRPC, serve HTTP,
    drain, close."""
    try:
        store = await _open_store(settings, migrate=migrate)
    except BaseException:
        _close(sockets)
        raise
    grpc_server = None
    workers = settings.otlp_decode_workers
    decoder = OtlpDecoder(
        store,
        workers=default_workers() if workers is None else workers,
        intake_max_bytes=settings.otlp_intake_max_bytes,
    )
    # From here to the end of the drain, SIGTERM/SIGINT ask for a clean stop (a second one
    # during the drain changes nothing) instead of killing the process.
    with _StopSignals() as signals:
        try:
            decoder.start()
            if settings.otlp_grpc_port:
                grpc_server = await _start_grpc(store, settings, decoder)
            app: ASGIApp = create_app(settings, store=store, decoder=decoder)
            if settings.otlp_http_port:
                app = OtlpPortOnly(app, port=settings.otlp_http_port)
            config = uvicorn.Config(
                app,
                lifespan="on",
                access_log=False,
                timeout_graceful_shutdown=int(SHUTDOWN_TIMEOUT),
                log_level="info",
            )
            server = _Server(config)
            signals.attach(server)
            backend, where = store.backend_name, redact_url(settings.store_url)
            echo(f"evolution-store {backend} database at {where}")
            for what, port in listeners:
                echo(f"{what} on http://{_host_text(settings.host)}:{port}")
            if grpc_server is not None:
                echo(f"OTLP/gRPC on {_host_text(settings.host)}:{settings.otlp_grpc_port}")
            if decoder.workers:
                echo(f"OTLP bodies decoded in {decoder.workers} worker process(es)")
            settle_heap()
            await server.serve(sockets=sockets)
        finally:
            _close(sockets)
            if grpc_server is not None:
                await grpc_server.stop(SHUTDOWN_TIMEOUT)
            await decoder.close()
            await store.close(timeout=SHUTDOWN_TIMEOUT)
    echo("evolution-store stopped")


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
    """SIGINT/SIGTERM handlers for the life of `serve`: each signal asks the attached uvicorn
    server to stop (one that arrives before a server is attached stops it as it starts). The
    previous handlers come back on exit, and the signal is not re-raised: a clean stop exits 0.
    """

    HANDLED = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._requested = False
        self._previous: dict[int, Any] = {}

    def attach(self, server: uvicorn.Server) -> None:
        self._server = server
        if self._requested:
            server.should_exit = True

    def _handle(self, sig: int, frame: FrameType | None) -> None:
        self._requested = True
        if self._server is not None:
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
    # add ~40 ms to every request after the first on a kept-alive connection.
    return socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP, fileno=sock.detach())


def migrate_in_child(url: str) -> bool:
    """Migrate the database at `url` in a forked child process; True once it is at the latest
    schema. The server then never imports Alembic and the migration scripts: ~10 MB of its
    resident memory, held for its whole life, for a moment's work. Raises `ServeError` when
    the migration fails. False when it cannot be done apart (no fork on this platform, or an
    in-memory database, which a child would not share): the store migrates as it opens.

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


async def _open_store(settings: Settings, *, migrate: bool) -> EvolutionStore:
    try:
        return await EvolutionStore.open(
            settings.store_url,
            migrate=migrate,
            queue_max_spans=settings.queue_max_spans,
            queue_max_bytes=settings.queue_max_bytes,
        )
    except (EvolutionStoreError, OSError) as exc:
        raise ServeError(f"cannot open {redact_url(settings.store_url)}: {exc}") from exc


async def _start_grpc(store: EvolutionStore, settings: Settings, decoder: OtlpDecoder) -> Any:
    from .grpc_server import start_grpc_server

    try:
        return await start_grpc_server(
            store, host=settings.host, port=settings.otlp_grpc_port, decoder=decoder
        )
    except (RuntimeError, OSError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not message.startswith("cannot listen"):
            where = f"{settings.host}:{settings.otlp_grpc_port}"
            message = f"cannot listen for OTLP/gRPC on {where}: {message}"
        raise ServeError(message) from exc


def _local_port(scope: Scope) -> int | None:
    server = scope.get("server")
    return server[1] if server and len(server) > 1 else None


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
