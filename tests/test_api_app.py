"""`create_app`: the lifespan owns the store when none is handed in, OpenAPI ids are stable,
store errors map to status codes in one table, and a standalone app (what `serve` runs) starts
gRPC and the decode workers in its lifespan and stops them in order."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket

import httpx
import pytest
from conftest import free_ports
from factories import span_batch

from api.app import create_app
from evolution_store import EvolutionStore
from evolution_store.config import Settings
from evolution_store.errors import Conflict, InvalidInput, NotFound, Overloaded, StorageError
from evolution_store.queries import SpanQuery

API = "/api/v1"


async def test_lifespan_opens_migrates_and_drains_its_own_store(store_url):
    app = create_app(Settings(store_url=store_url, api_keys=""))
    batch = span_batch(20)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            health = await client.get("/healthz")
            assert health.status_code == 200
            assert health.json()["backend"] in ("sqlite", "postgres")
            assert (await client.post(f"{API}/spans", json={"spans": batch})).status_code == 200
    # The app closed its store; what it acknowledged is in the database.
    store = await EvolutionStore.open(store_url)
    try:
        page = await store.list_spans(SpanQuery(trace_id=batch[0]["trace_id"]))
        assert len(page.items) == 20
    finally:
        await store.close()


async def test_openapi_ids_are_tag_dash_name(api_client):
    schema = (await api_client.get("/openapi.json")).json()
    ids = {
        operation["operationId"] for path in schema["paths"].values() for operation in path.values()
    }
    assert {"tasks-create_task", "spans-post_spans", "rewards-rewards_summary"} <= ids
    assert "health-healthz" in ids
    assert "/v1/traces" in schema["paths"]
    assert (await api_client.get("/docs")).status_code == 200


class _FailingStore:
    """A stand-in store whose every call raises the given error."""

    backend_name = "fake"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def version(self) -> str:
        return "fake 0"

    def __getattr__(self, name):
        async def fail(*args, **kwargs):
            raise self.error

        return fail


@pytest.mark.parametrize(
    "error, status, retry_after",
    [
        (NotFound("no such task"), 404, None),
        (Conflict("reused id"), 409, None),
        (InvalidInput("bad cursor", field="cursor"), 422, None),
        (Overloaded(retry_after=2.5), 503, "3"),
        (StorageError("database gone"), 503, "5"),
        (RuntimeError("bug"), 500, None),
    ],
)
async def test_error_table(error, status, retry_after):
    app = create_app(Settings(api_keys=""), store=_FailingStore(error))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        response = await client.get(f"{API}/tasks")
    assert response.status_code == status
    assert response.headers.get("retry-after") == retry_after
    body = response.json()
    assert body["detail"]
    if isinstance(error, InvalidInput):
        assert body["field"] == "cursor"
    if status == 500:
        assert "bug" not in response.text  # internals stay in the log


def _export_over_grpc(port: int, name: str) -> str:
    """One span through the real OTel gRPC exporter; its trace id. The exporter blocks until
    answered and the server runs on the test's loop: call it from a worker thread."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span(name) as span:
        trace = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace


async def test_a_standalone_app_runs_grpc_inside_its_lifespan(store):
    (port,) = free_ports(1)
    settings = Settings(otlp_grpc_port=port, otlp_decode_workers=0, api_keys="")
    app = create_app(settings, store=store, standalone=True)
    async with app.router.lifespan_context(app):
        trace = await asyncio.to_thread(_export_over_grpc, port, "in-lifespan")
        page = await store.list_spans(SpanQuery(trace_id=trace))
        assert [item["name"] for item in page.items] == ["in-lifespan"]


async def test_a_standalone_app_stops_what_its_lifespan_started(store_url):
    """gRPC, the decode workers and its own store: all started by the lifespan, all stopped
    when it ends, and what was acknowledged is committed."""
    (port,) = free_ports(1)
    before = {child.pid for child in multiprocessing.active_children()}
    settings = Settings(
        store_url=store_url, otlp_grpc_port=port, otlp_decode_workers=1, api_keys=""
    )
    app = create_app(settings, standalone=True)
    async with app.router.lifespan_context(app):
        assert app.state.otlp.pool.workers == 1
        workers = [c for c in multiprocessing.active_children() if c.pid not in before]
        assert len(workers) == 1
        trace = await asyncio.to_thread(_export_over_grpc, port, "standalone")
    assert not workers[0].is_alive()
    with socket.create_server(("127.0.0.1", port)):  # the gRPC port is free again
        pass
    store = await EvolutionStore.open(store_url)
    try:
        page = await store.list_spans(SpanQuery(trace_id=trace))
        assert [item["name"] for item in page.items] == ["standalone"]
    finally:
        await store.close()


async def test_an_app_that_is_not_standalone_decodes_on_its_loop_and_opens_no_port(store):
    settings = Settings(otlp_grpc_port=free_ports(1)[0], otlp_decode_workers=2, api_keys="")
    app = create_app(settings, store=store)
    async with app.router.lifespan_context(app):
        assert app.state.otlp.pool.workers == 0
        assert app.state.grpc_server is None
