"""`create_app`: the lifespan owns the store when none is handed in, OpenAPI ids are stable,
store errors map to status codes in one table, and gRPC can run inside the lifespan."""

from __future__ import annotations

import asyncio

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


async def test_grpc_runs_inside_the_lifespan_when_asked(store):
    pytest.importorskip("api.grpc_server")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    (port,) = free_ports(1)
    app = create_app(Settings(otlp_grpc_port=port, api_keys=""), store=store, grpc=True)

    def export_one() -> str:
        # The exporter blocks until answered, and the server runs on this test's loop: export
        # from a worker thread.
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        with provider.get_tracer("t").start_as_current_span("in-lifespan") as span:
            trace = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
        return trace

    async with app.router.lifespan_context(app):
        trace = await asyncio.to_thread(export_one)
        page = await store.list_spans(SpanQuery(trace_id=trace))
        assert [item["name"] for item in page.items] == ["in-lifespan"]
