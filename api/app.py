"""The FastAPI application factory.

    app = create_app(Settings(store_url="sqlite:///./evolution.db"))

Nothing is created at import: the store is opened in the app's lifespan (or handed in by the
caller, who then owns it), so one test run can build apps over SQLite and Postgres side by side.
The lifespan is the server's one lifecycle: `evolution-store serve` (`api/serve.py`) runs
`create_app(settings, standalone=True)`, whose lifespan also starts and stops the OTLP decode
workers and the OTLP/gRPC receiver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from evolution_store import EvolutionStore
from evolution_store.config import Settings
from evolution_store.otlp_decode_pool import OtlpDecodePool, default_workers

from .deps import WriteAuth
from .errors import BodyTooLarge, error_body, install_error_handlers
from .openapi import install_openapi
from .otlp_receiver import OtlpReceiver
from .routers import (
    agents,
    executions,
    experiments,
    jobs,
    markers,
    patterns,
    prompts,
    reports,
    rewards,
    spans,
    stats,
    tasks,
)
from .routers.otlp import router as otlp_router
from .ui import install_ui

API_PREFIX = "/api/v1"
#: seconds the store's `close()` and the gRPC server get to finish in-flight work at shutdown
SHUTDOWN_TIMEOUT = 30.0


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids, `{tag}-{function name}`, so generated clients keep names."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(
    settings: Settings | None = None,
    *,
    store: EvolutionStore | None = None,
    standalone: bool = False,
    migrate: bool = True,
) -> FastAPI:
    """Build the app. Its lifespan opens `settings.store_url` (migrating it, unless
    `migrate=False` because the caller has) and drains and closes the store when it stops,
    unless `store` is given: then the caller opened it and closes it.

    `standalone=True` makes the app the whole server, as `evolution-store serve` runs it: the
    lifespan also runs `settings.otlp_decode_workers` decode worker processes (None: one on a
    machine with two or more CPUs) and the OTLP/gRPC receiver on `settings.otlp_grpc_port`
    (unless it is 0). Without it, OTLP bodies are decoded on the event loop and nothing listens
    beside the app: what tests, and an app mounted in another server, want.
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Whatever started is stopped in reverse order, however the app stops: gRPC (with a
        # grace period for its in-flight exports), then the decode pool, then the store, which
        # commits what is still queued.
        async with AsyncExitStack() as running:
            active = store
            if active is None:
                active = await EvolutionStore.open(
                    settings.store_url,
                    migrate=migrate,
                    queue_max_spans=settings.queue_max_spans,
                    queue_max_bytes=settings.queue_max_bytes,
                )
                running.push_async_callback(active.close, timeout=SHUTDOWN_TIMEOUT)
            app.state.store = active
            workers = settings.otlp_decode_workers if standalone else 0
            if workers is None:
                workers = default_workers()
            pool = OtlpDecodePool(workers=workers, prices=active.prices)
            pool.start()
            running.push_async_callback(pool.close)
            app.state.otlp = OtlpReceiver(
                active,
                pool=pool,
                intake_max_bytes=settings.otlp_intake_max_bytes,
                max_body_bytes=settings.max_body_bytes,
            )
            app.state.grpc_server = None
            if standalone and settings.otlp_grpc_port:
                # grpc is loaded only by the apps that run its receiver.
                from .grpc_server import start_grpc_server

                app.state.grpc_server = await start_grpc_server(
                    app.state.otlp, host=settings.host, port=settings.otlp_grpc_port
                )
                running.push_async_callback(app.state.grpc_server.stop, SHUTDOWN_TIMEOUT)
            yield

    app = FastAPI(
        title="evolution-store",
        summary="OpenTelemetry-native tracing store and reward linking for LLM agents",
        version=_version(),
        lifespan=lifespan,
        docs_url="/docs",
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.api_keys = settings.parsed_api_keys()
    install_error_handlers(app)
    install_openapi(app)

    for module in (
        tasks,
        executions,
        spans,
        rewards,
        stats,
        prompts,
        agents,
        experiments,
        markers,
        patterns,
        jobs,
        reports,
    ):
        app.include_router(module.router, prefix=API_PREFIX)

    app.include_router(otlp_router, dependencies=[WriteAuth])
    install_ui(app)  # the dashboard's pages at /, beside the API

    @app.get("/healthz", tags=["health"])
    async def healthz(request: Request) -> dict[str, Any]:
        """Liveness and database reachability; never needs an API key."""
        active: EvolutionStore = request.app.state.store
        return {"status": "ok", "backend": active.backend_name, "version": await active.version()}

    # /v1/traces caps its body itself, after decompression, answering in OTLP's own encoding.
    app.add_middleware(
        BodyLimitMiddleware, limit=settings.max_body_bytes, exempt=frozenset({"/v1/traces"})
    )
    return app


class BodyLimitMiddleware:
    """Refuse request bodies over `limit` bytes with 413, whether or not they declare a length.

    A declared Content-Length over the limit is refused before the body is read. A chunked body
    is counted as it arrives; past the limit, reading raises `BodyTooLarge` and whatever the app
    answers is replaced by the 413 (FastAPI turns read errors into a 400 of its own).
    """

    def __init__(self, app: ASGIApp, *, limit: int, exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_413(send, self.limit)
                return
        received = 0
        too_large = False
        replaced = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise BodyTooLarge(self.limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal replaced
            if too_large:
                if not replaced:
                    replaced = True
                    await _send_413(send, self.limit)
                return
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _send_413(send: Send, limit: int) -> None:
    import json

    body = json.dumps(error_body(str(BodyTooLarge(limit)), "payload_too_large")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evolution-store")
    except PackageNotFoundError:
        return "0.0.0"
