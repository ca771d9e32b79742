"""The OTLP/gRPC receiver (api/grpc_server.py) in-process over a real store, on SQLite and
Postgres: OK after commit, gzip, idempotent retries, partial success, INVALID_ARGUMENT for
undecodable requests, UNAVAILABLE + RetryInfo on overload, the message cap (which follows
`EVOLUTION_MAX_BODY_BYTES`), carried rewards, and the real OTel gRPC exporter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from conftest import free_ports
from factories import FailingStore
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from api.app import create_app
from api.grpc_server import SERVICE_NAME, start_grpc_server
from api.otlp_receiver import OtlpReceiver
from evolution_store.config import Settings
from evolution_store.errors import Overloaded, StorageError
from evolution_store.queries import SpanQuery

Target = Callable[..., Awaitable[str]]


def finished_spans(count: int = 3, **attributes: Any) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "grpc-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root", attributes=attributes):
        for index in range(count - 1):
            tracer.start_span(f"step-{index}").end()
    provider.shutdown()
    return list(exporter.get_finished_spans())


def trace_of(spans: list[ReadableSpan]) -> str:
    return format_trace_id(spans[0].context.trace_id)


async def stored(store: Any, trace_id: str) -> list[dict[str, Any]]:
    return (await store.list_spans(SpanQuery(trace_id=trace_id, limit=1000))).items


@pytest.fixture
async def serve() -> AsyncIterator[Target]:
    """`target = await serve(store_or_receiver, **options)`: a receiver on a free loopback
    port; `options` go to `OtlpReceiver` when given a store."""
    servers: list[grpc.aio.Server] = []

    async def start(store: Any, **options: Any) -> str:
        receiver = store if isinstance(store, OtlpReceiver) else OtlpReceiver(store, **options)
        server = await start_grpc_server(receiver, host="127.0.0.1", port=0)
        servers.append(server)
        return f"127.0.0.1:{server.bound_port}"

    yield start
    for server in servers:
        await server.stop(None)


async def export(
    target: str, request: ExportTraceServiceRequest, **kwargs: Any
) -> ExportTraceServiceResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        return await TraceServiceStub(channel).Export(request, timeout=30, **kwargs)


async def test_export_is_stored_before_ok(serve: Target, store: Any) -> None:
    spans = finished_spans(3)
    response = await export(await serve(store), encode_spans(spans))
    assert not response.HasField("partial_success")
    rows = await stored(store, trace_of(spans))
    assert sorted(row["name"] for row in rows) == ["root", "step-0", "step-1"]
    assert {row["agent"] for row in rows} == {"grpc-test"}


async def test_gzip_and_retries_store_each_span_once(serve: Target, store: Any) -> None:
    spans = finished_spans(4)
    target = await serve(store)
    for _ in range(2):
        await export(target, encode_spans(spans), compression=grpc.Compression.Gzip)
    assert len(await stored(store, trace_of(spans))) == 4


async def test_empty_request_is_ok(serve: Target, store: Any) -> None:
    response = await export(await serve(store), ExportTraceServiceRequest())
    assert not response.HasField("partial_success")


async def test_bad_ids_are_rejected_alone(serve: Target, store: Any) -> None:
    spans = finished_spans(3)
    request = encode_spans(spans)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = bytes(16)
    response = await export(await serve(store), request)
    assert response.partial_success.rejected_spans == 1
    assert response.partial_success.error_message
    assert len(await stored(store, trace_of(spans))) == 2


async def test_undecodable_request_is_invalid_argument(serve: Target, store: Any) -> None:
    target = await serve(store)
    async with grpc.aio.insecure_channel(target) as channel:
        raw = channel.unary_unary(f"/{SERVICE_NAME}/Export")  # bytes in, bytes out
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\xff\xff\xff\xff not protobuf", timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_message_cap_applies_after_decompression(serve: Target, store: Any) -> None:
    target = await serve(store, max_body_bytes=64 * 1024)
    spans = finished_spans(2, padding="x" * 256 * 1024)  # compresses to almost nothing
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await export(target, encode_spans(spans), compression=grpc.Compression.Gzip)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await stored(store, trace_of(spans)) == []


async def test_the_message_cap_follows_max_body_bytes(store: Any) -> None:
    """`EVOLUTION_MAX_BODY_BYTES` caps gRPC messages as it caps OTLP/HTTP bodies: the gRPC
    receiver the app's lifespan runs refuses a message over it and stores one under it."""
    (port,) = free_ports(1)
    settings = Settings(
        api_keys="", otlp_grpc_port=port, otlp_decode_workers=0, max_body_bytes=16 * 1024
    )
    app = create_app(settings, store=store, standalone=True)
    small, large = finished_spans(2), finished_spans(2, padding="x" * 32 * 1024)
    assert encode_spans(small).ByteSize() < 16 * 1024 < encode_spans(large).ByteSize()
    async with app.router.lifespan_context(app):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export(f"127.0.0.1:{port}", encode_spans(large))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await export(f"127.0.0.1:{port}", encode_spans(small))
    assert await stored(store, trace_of(large)) == []
    assert len(await stored(store, trace_of(small))) == 2


async def test_overload_is_unavailable_with_retry_info(serve: Target) -> None:
    target = await serve(FailingStore(Overloaded(retry_after=1.5)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await export(target, encode_spans(finished_spans(1)))
    error = caught.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(error.trailing_metadata())
    retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == 2
    status = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    assert status.code == code_pb2.UNAVAILABLE
    detail = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(detail) and detail.retry_delay.seconds == 2


async def test_past_the_intake_budget_is_unavailable_then_stored(serve: Target, store: Any) -> None:
    receiver = OtlpReceiver(store, intake_max_bytes=100)
    target = await serve(receiver)
    spans = finished_spans(3)
    with receiver.intake.hold() as other_request:  # the budget is taken
        other_request.add(100)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await export(target, encode_spans(spans))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    trailers = dict(caught.value.trailing_metadata())
    retry = error_details_pb2.RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"])
    assert retry.retry_delay.seconds == 1
    assert await stored(store, trace_of(spans)) == []
    await export(target, encode_spans(spans))  # room again: the retry is stored
    assert len(await stored(store, trace_of(spans))) == 3
    assert receiver.intake.held == 0


@pytest.mark.parametrize("error", [StorageError("disk on fire"), RuntimeError("bug")])
async def test_storage_failures_are_unavailable(serve: Target, error: Exception) -> None:
    target = await serve(FailingStore(error))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await export(target, encode_spans(finished_spans(1)))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "disk on fire" not in (caught.value.details() or "")


async def test_carried_rewards_are_stored(serve: Target, store: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("rewards")
    with tracer.start_as_current_span("agent") as agent:
        tracer.start_span(
            "agentlightning.annotation",
            attributes={
                "agentlightning.reward.0.name": "primary",
                "agentlightning.reward.0.value": 1.0,
            },
        ).end()
        with tracer.start_as_current_span("chat") as chat:
            chat.add_event(
                "gen_ai.evaluation.result",
                {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.5},
            )
    provider.shutdown()
    await export(await serve(store), encode_spans(exporter.get_finished_spans()))
    rewards = {reward["name"]: reward for reward in (await store.list_rewards()).items}
    assert rewards["reward"]["span_ids"] == [format_span_id(agent.get_span_context().span_id)]
    assert rewards["relevance"]["span_ids"] == [format_span_id(chat.get_span_context().span_id)]
    assert rewards["reward"]["resolved"] and rewards["relevance"]["resolved"]


@pytest.mark.parametrize("compression", ["NoCompression", "Gzip", "Deflate"])
async def test_real_otlp_grpc_exporter(serve: Target, store: Any, compression: str) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    target = await serve(store)
    exporter = OTLPSpanExporter(
        endpoint=f"http://{target}",
        insecure=True,
        compression=getattr(grpc.Compression, compression),
    )
    spans = finished_spans(5)
    try:
        # The SDK exporter blocks; run it off the loop that serves it.
        assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
        assert await asyncio.to_thread(exporter.export, spans) == SpanExportResult.SUCCESS
    finally:
        await asyncio.to_thread(exporter.shutdown)
    assert len(await stored(store, trace_of(spans))) == 5
