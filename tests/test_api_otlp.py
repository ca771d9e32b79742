"""`POST /v1/traces` through the real app on SQLite and Postgres: protobuf, JSON and gzip,
idempotent retries, partial success, 400/413/415 answers with `google.rpc.Status` bodies,
503 + Retry-After on overload, carried rewards, the real OTel HTTP exporter against a real
server process, and bodies captured from the OpenTelemetry JS SDK's exporters."""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import os
import random
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from factories import FailingStore
from fastapi import FastAPI
from google.protobuf.json_format import MessageToDict
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, format_span_id, format_trace_id

from api import otlp_receiver
from api.otlp_receiver import OtlpReceiver, Refused, Stored
from api.routers.otlp import router
from evolution_store.errors import Overloaded, StorageError
from evolution_store.otlp_decode_pool import OtlpDecodePool
from evolution_store.queries import SpanQuery

PB = {"content-type": "application/x-protobuf"}
JSON = {"content-type": "application/json"}


def finished_spans(
    count: int = 3, resource: dict[str, Any] | None = None, **attributes: Any
) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "otlp-test", **(resource or {})})
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("root", attributes=attributes):
        for index in range(count - 1):
            tracer.start_span(f"step-{index}").end()
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf_request(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    return encode_spans(spans)


def json_body(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON: MessageToDict output with the ids turned from base64 into hex."""
    import base64

    def hexify(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: base64.b64decode(value).hex()
                if key in ("traceId", "spanId", "parentSpanId")
                else hexify(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [hexify(item) for item in node]
        return node

    return orjson.dumps(hexify(MessageToDict(message)))


def trace_of(spans: list[ReadableSpan]) -> str:
    return format_trace_id(spans[0].context.trace_id)


async def stored(store: Any, trace_id: str) -> list[dict[str, Any]]:
    return (await store.list_spans(SpanQuery(trace_id=trace_id, limit=1000))).items


def status_of(response: httpx.Response) -> status_pb2.Status:
    status = status_pb2.Status()
    if response.headers["content-type"].startswith("application/x-protobuf"):
        status.ParseFromString(response.content)
    else:
        from google.protobuf.json_format import Parse

        Parse(response.content, status)
    return status


# ---------------------------------------------------------------------------------- success


async def test_protobuf_export_is_stored_before_200(api_client: httpx.AsyncClient, store) -> None:
    spans = finished_spans(3)
    body = protobuf_request(spans).SerializeToString()
    response = await api_client.post("/v1/traces", content=body, headers=PB)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert not answer.HasField("partial_success")

    rows = await stored(store, trace_of(spans))
    assert sorted(row["name"] for row in rows) == ["root", "step-0", "step-1"]
    root = next(row for row in rows if row["name"] == "root")
    assert root["parent_span_id"] is None
    assert root["resource"]["service.name"] == "otlp-test"
    assert root["agent"] == "otlp-test"


async def test_json_export_with_hex_ids(api_client: httpx.AsyncClient, store) -> None:
    spans = finished_spans(2)
    response = await api_client.post(
        "/v1/traces",
        content=json_body(protobuf_request(spans)),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    rows = await stored(store, trace_of(spans))
    assert {row["span_id"] for row in rows} == {format_span_id(s.context.span_id) for s in spans}


def raw_deflate(data: bytes) -> bytes:
    """Deflate data without the zlib header, as some clients send under "deflate"."""
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


#: Content-Encoding → how a client compresses the body under it.
COMPRESSIONS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # the zlib format: what Python's OTLP exporter sends
    "Deflate ": raw_deflate,
}


@pytest.mark.parametrize("encoding", list(COMPRESSIONS))
@pytest.mark.parametrize("media", ["protobuf", "json"])
async def test_compressed_bodies(
    api_client: httpx.AsyncClient, store, media: str, encoding: str
) -> None:
    spans = finished_spans(4)
    message = protobuf_request(spans)
    raw = message.SerializeToString() if media == "protobuf" else json_body(message)
    headers = {**(PB if media == "protobuf" else JSON), "content-encoding": encoding}
    body = COMPRESSIONS[encoding](raw)
    response = await api_client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200
    assert len(await stored(store, trace_of(spans))) == 4


@pytest.mark.parametrize("encoding", ["deflate", "Deflate ", "gzip"])
async def test_a_compressed_body_may_arrive_a_byte_at_a_time(
    api_client: httpx.AsyncClient, store, encoding: str
) -> None:
    # Whether deflate data starts with a zlib header takes two bytes to tell.
    spans = finished_spans(2)
    body = COMPRESSIONS[encoding](protobuf_request(spans).SerializeToString())

    async def trickle() -> AsyncIterator[bytes]:
        for index in range(3):
            yield body[index : index + 1]
        yield body[3:]

    headers = {**PB, "content-encoding": encoding}
    response = await api_client.post("/v1/traces", content=trickle(), headers=headers)
    assert response.status_code == 200
    assert len(await stored(store, trace_of(spans))) == 2


async def test_a_body_of_several_gzip_members_is_read_whole(
    api_client: httpx.AsyncClient, store
) -> None:
    raw = protobuf_request(finished_spans(3)).SerializeToString()
    body = gzip.compress(raw[:40]) + gzip.compress(raw[40:])
    headers = {**PB, "content-encoding": "gzip"}
    response = await api_client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 200


async def test_the_same_batch_twice_stores_each_span_once(
    api_client: httpx.AsyncClient, store
) -> None:
    spans = finished_spans(5)
    body = protobuf_request(spans).SerializeToString()
    for _ in range(2):
        response = await api_client.post("/v1/traces", content=body, headers=PB)
        assert response.status_code == 200
    rows = await stored(store, trace_of(spans))
    assert len(rows) == 5


async def test_empty_requests_succeed(api_client: httpx.AsyncClient) -> None:
    for body, headers in ((b"", PB), (b"{}", JSON), (b'{"resourceSpans": []}', JSON)):
        response = await api_client.post("/v1/traces", content=body, headers=headers)
        assert response.status_code == 200


# ---------------------------------------------------------------------------- partial success


async def test_bad_ids_are_rejected_alone_protobuf(api_client: httpx.AsyncClient, store) -> None:
    spans = finished_spans(3)
    message = protobuf_request(spans)
    scope_spans = message.resource_spans[0].scope_spans[0]
    scope_spans.spans[0].trace_id = bytes(16)
    scope_spans.spans[1].span_id = b"\x01\x02"
    response = await api_client.post("/v1/traces", content=message.SerializeToString(), headers=PB)
    assert response.status_code == 200
    partial = ExportTraceServiceResponse.FromString(response.content).partial_success
    assert partial.rejected_spans == 2
    assert "rejected" in partial.error_message
    assert len(await stored(store, trace_of(spans))) == 1


async def test_bad_ids_are_rejected_alone_json(api_client: httpx.AsyncClient, store) -> None:
    spans = finished_spans(3)
    document = orjson.loads(json_body(protobuf_request(spans)))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "0" * 16
    response = await api_client.post("/v1/traces", content=orjson.dumps(document), headers=JSON)
    assert response.status_code == 200
    assert response.json()["partialSuccess"]["rejectedSpans"] in ("1", 1)
    assert len(await stored(store, trace_of(spans))) == 2


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "application/grpc"])
async def test_unknown_content_type_is_415(api_client: httpx.AsyncClient, content_type) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await api_client.post("/v1/traces", content=b"{}", headers=headers)
    assert response.status_code == 415
    assert status_of(response).code == code_pb2.INVALID_ARGUMENT


async def test_unknown_content_encoding_is_415(api_client: httpx.AsyncClient) -> None:
    headers = {**PB, "content-encoding": "br"}
    response = await api_client.post("/v1/traces", content=b"", headers=headers)
    assert response.status_code == 415
    assert response.headers["content-type"] == "application/x-protobuf"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (PB, b"\xff\xff\xff\xff garbage"),
        (JSON, b"{not json"),
        (JSON, b"[1, 2]"),
        ({**PB, "content-encoding": "gzip"}, b"not gzip at all"),
        ({**JSON, "content-encoding": "gzip"}, gzip.compress(b'{"resourceSpans": []}')[:-8]),
        ({**PB, "content-encoding": "deflate"}, b"not deflate at all"),
        ({**JSON, "content-encoding": "deflate"}, zlib.compress(b'{"resourceSpans": []}')[:-4]),
        ({**JSON, "content-encoding": "deflate"}, zlib.compress(b'{"resourceSpans": []}') * 2),
        ({**PB, "content-encoding": "deflate"}, b"x"),
    ],
)
async def test_undecodable_bodies_are_400_with_a_status_body(
    api_client: httpx.AsyncClient, headers: dict[str, str], body: bytes
) -> None:
    response = await api_client.post("/v1/traces", content=body, headers=headers)
    assert response.status_code == 400
    assert response.headers["content-type"] == headers["content-type"]
    status = status_of(response)
    assert status.code == code_pb2.INVALID_ARGUMENT and status.message


#: Values a mutated JSON body gets in place of a field: wrong types, out-of-range numbers,
#: ids of the wrong length, NUL and a lone surrogate in text.
ODD_VALUES = [
    None,
    0,
    -1,
    2**64,
    -(2**70),
    1.5e308,
    "",
    "zz",
    "0" * 32,
    "f" * 33,
    [],
    {},
    [1],
    {"a": 1},
    True,
    "\u0000",
    "\ud800x",
    "1e5",
    "-5",
    str(2**64),
]


def mutated(node: Any, rng: random.Random) -> None:
    """Replace, drop or descend into one random member of `node`, in place."""
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        draw = rng.random()
        # Mostly deeper: the values that reach the database are leaves.
        if draw < 0.25 or not isinstance(node[key], dict | list):
            node[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif draw < 0.3:
            del node[key]
        else:
            mutated(node[key], rng)
    elif isinstance(node, list) and node:
        index = rng.randrange(len(node))
        if rng.random() < 0.25 or not isinstance(node[index], dict | list):
            node[index] = copy.deepcopy(rng.choice(ODD_VALUES))
        else:
            mutated(node[index], rng)


async def test_mutated_bodies_are_answered_200_or_400_never_500(
    api_client: httpx.AsyncClient,
) -> None:
    # Valid exports with a few fields replaced by odd values (JSON) or a few bytes flipped
    # (protobuf), seeded: each is stored (partial success for what is rejected) or refused
    # with a status body; none reaches the database as a value it cannot store.
    rng = random.Random(3)
    spans = finished_spans(3, **{"gen_ai.conversation.id": "c1", "n": 5, "flag": True})
    valid = protobuf_request(spans)
    document = orjson.loads(json_body(valid))
    wire = valid.SerializeToString()
    seen = set()
    for _ in range(120):
        body = copy.deepcopy(document)
        for _ in range(rng.randint(1, 4)):
            mutated(body, rng)
        flipped = bytearray(wire)
        for _ in range(rng.randint(1, 3)):
            flipped[rng.randrange(len(flipped))] = rng.randrange(256)
        # `json`, not orjson: it writes a lone surrogate as an escape and any integer.
        for content, headers in ((json.dumps(body).encode(), JSON), (bytes(flipped), PB)):
            response = await api_client.post("/v1/traces", content=content, headers=headers)
            assert response.status_code in (200, 400), (content[:300], response.text[:300])
            if response.status_code == 400:
                assert status_of(response).code == code_pb2.INVALID_ARGUMENT
            seen.add((headers["content-type"], response.status_code))
    assert len(seen) == 4  # both encodings were both stored and refused


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compression_bomb_stops_at_the_cap(
    make_client: Callable[..., Any], encoding: str
) -> None:
    cap = 1024 * 1024
    compress = COMPRESSIONS[encoding]
    bomb = compress(b"\0" * (20 * cap))  # ~20 KB on the wire, 20 MiB inflated
    assert len(bomb) < cap
    async with make_client(max_body_bytes=cap) as client:
        headers = {**PB, "content-encoding": encoding}
        response = await client.post("/v1/traces", content=bomb, headers=headers)
        assert response.status_code == 413
        assert status_of(response).code == code_pb2.RESOURCE_EXHAUSTED
        # Just under the cap still works.
        fine = compress(protobuf_request(finished_spans(2)).SerializeToString())
        response = await client.post("/v1/traces", content=fine, headers=headers)
        assert response.status_code == 200


async def test_identity_body_over_the_cap_is_413(make_client: Callable[..., Any]) -> None:
    async with make_client(max_body_bytes=1000) as client:
        response = await client.post("/v1/traces", content=b"\0" * 5000, headers=PB)
        assert response.status_code == 413


async def test_write_key_is_needed_when_auth_is_on(make_client: Callable[..., Any]) -> None:
    body = protobuf_request(finished_spans(1)).SerializeToString()
    async with make_client(api_keys="writer,reader:ro") as client:
        assert (await client.post("/v1/traces", content=body, headers=PB)).status_code == 401
        read_only = {**PB, "authorization": "Bearer reader"}
        response = await client.post("/v1/traces", content=body, headers=read_only)
        assert response.status_code == 403
        writer = {**PB, "authorization": "Bearer writer"}
        assert (await client.post("/v1/traces", content=body, headers=writer)).status_code == 200


def _app_with(store: Any) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(router)
    app.state.otlp = OtlpReceiver(store)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("media", ["protobuf", "json"])
async def test_overload_is_503_with_retry_after(media: str) -> None:
    message = protobuf_request(finished_spans(1))
    body = message.SerializeToString() if media == "protobuf" else json_body(message)
    async with _app_with(FailingStore(Overloaded(retry_after=2.5))) as client:
        response = await client.post(
            "/v1/traces", content=body, headers=PB if media == "protobuf" else JSON
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"
    status = status_of(response)
    assert status.code == code_pb2.UNAVAILABLE
    retry = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(retry) and retry.retry_delay.seconds == 3


@pytest.mark.parametrize("error", [StorageError("disk on fire"), RuntimeError("bug")])
async def test_storage_failures_are_503_never_500(error: Exception) -> None:
    body = protobuf_request(finished_spans(1)).SerializeToString()
    async with _app_with(FailingStore(error)) as client:
        response = await client.post("/v1/traces", content=body, headers=PB)
    assert response.status_code == 503
    assert status_of(response).code == code_pb2.UNAVAILABLE
    assert "disk on fire" not in response.text


async def test_past_the_intake_budget_is_503_and_nothing_is_lost(
    live_server: Callable[..., Any], store_url: str
) -> None:
    """A request whose body is still arriving holds its bytes; one that would pass the budget
    meanwhile is refused with 503 + Retry-After before its body is read, and stores fine once
    room is back."""
    server = live_server(store_url, env={"EVOLUTION_OTLP_INTAKE_MAX_BYTES": "1500"})
    slow_spans, quick_spans = finished_spans(20), finished_spans(10)
    slow = protobuf_request(slow_spans).SerializeToString()
    quick = protobuf_request(quick_spans).SerializeToString()
    assert len(slow) > 1500 and 500 < len(quick) < 1500
    first_chunk_sent, rest_may_come = asyncio.Event(), asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:  # chunked: held as it arrives
        yield slow[:1200]
        first_chunk_sent.set()
        await rest_may_come.wait()
        yield slow[1200:]

    async with httpx.AsyncClient(timeout=30) as client:
        held = asyncio.create_task(
            client.post(server.otlp_http_url, content=slow_body(), headers=PB)
        )
        # The server is idle: a second is ample for it to read (and hold) the first chunk.
        await first_chunk_sent.wait()
        await asyncio.sleep(1)
        refused = None
        for _ in range(100):  # on a very slow machine, until it has
            response = await client.post(server.otlp_http_url, content=quick, headers=PB)
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code == 200
            await asyncio.sleep(0.1)
        assert refused is not None, "a request past the budget must be refused"
        assert refused.headers["retry-after"] == "1"
        assert status_of(refused).code == code_pb2.UNAVAILABLE
        rest_may_come.set()
        assert (await held).status_code == 200
        assert (
            await client.post(server.otlp_http_url, content=quick, headers=PB)
        ).status_code == 200
    for spans in (slow_spans, quick_spans):
        listed = httpx.get(
            server.url + "/api/v1/spans", params={"trace_id": trace_of(spans), "limit": 100}
        )
        assert len(listed.json()["items"]) == len(spans)


# ------------------------------------------------------------------------------------ rewards


async def test_rewards_from_every_carrier_are_stored_and_resolved(
    api_client: httpx.AsyncClient, store
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("rewards")
    with tracer.start_as_current_span("agent") as agent:
        with tracer.start_as_current_span(
            "chat", attributes={"gen_ai.response.id": "chatcmpl-7"}
        ) as chat:
            chat.add_event(
                "gen_ai.evaluation.result",
                {"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.8},
            )
        tracer.start_span(
            "agentlightning.annotation",
            attributes={
                "agentlightning.reward.0.name": "primary",
                "agentlightning.reward.0.value": 1.0,
                "agentlightning.tag.0": "final",
            },
        ).end()
        tracer.start_span(
            "judge",
            links=[Link(chat.get_span_context())],
            attributes={
                "openinference.span.kind": "EVALUATOR",
                "evaluations.0.evaluation.name": "correctness",
                "evaluations.0.evaluation.score": 0.5,
                "evaluations.0.evaluation.annotator_kind": "HUMAN",
            },
        ).end()
        tracer.start_span(
            "agentlightning.annotation",
            attributes={
                "agentlightning.reward.0.value": 0.25,
                "agentlightning.link.0.key_match": "gen_ai.response.id",
                "agentlightning.link.0.value_match": "chatcmpl-7",
            },
        ).end()
    provider.shutdown()
    spans = list(exporter.get_finished_spans())
    body = protobuf_request(spans).SerializeToString()
    response = await api_client.post("/v1/traces", content=body, headers=PB)
    assert response.status_code == 200

    agent_id = format_span_id(agent.get_span_context().span_id)
    chat_id = format_span_id(chat.get_span_context().span_id)
    page = await store.list_rewards()
    by_name = {reward["name"]: reward for reward in page.items}
    assert set(by_name) == {"relevance", "reward", "correctness"} and len(page.items) == 4
    assert by_name["relevance"]["span_ids"] == [chat_id] and by_name["relevance"]["resolved"]
    assert by_name["relevance"]["source"] == "llm"
    assert by_name["correctness"]["span_ids"] == [chat_id]
    assert by_name["correctness"]["source"] == "human"
    al = [reward for reward in page.items if reward["name"] == "reward"]
    assert {tuple(reward["span_ids"]) for reward in al} == {(agent_id,), (chat_id,)}
    assert all(reward["resolved"] for reward in al)
    assert any(reward["tags"] == ["final"] for reward in al)

    # A retried export neither duplicates spans nor rewards.
    response = await api_client.post("/v1/traces", content=body, headers=PB)
    assert response.status_code == 200
    assert len((await store.list_rewards()).items) == 4
    assert len(await stored(store, trace_of(spans))) == len(spans)


# -------------------------------------------------- where a body is decoded (OtlpReceiver)


class _RecordingPool:
    """The real decode pool, noting for each body whether it went to a worker, which process
    decoded it, and whether the writer had been told a write was on its way."""

    def __init__(self, pool: OtlpDecodePool, store: Any) -> None:
        self.pool = pool
        self.store = store
        self.calls: list[tuple[bool, bool, bool]] = []  # (in_worker, in this process, announced)

    @property
    def workers(self) -> int:
        return self.pool.workers

    async def decode(self, body: bytes, **options: Any) -> Any:
        announced = not self.store.writer.idle
        export = await self.pool.decode(body, **options)
        self.calls.append((options["in_worker"], export.decoded_by == os.getpid(), announced))
        return export


async def test_a_body_alone_is_decoded_on_the_loop_others_in_a_worker(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = OtlpDecodePool(workers=1, prices=store.prices)
    pool.start()
    recording = _RecordingPool(pool, store)
    receiver = OtlpReceiver(store, pool=recording)  # type: ignore[arg-type]

    async def receive(spans: list[ReadableSpan]) -> Any:
        with receiver.intake.hold() as hold:
            body = protobuf_request(spans).SerializeToString()
            return await receiver.receive(body, json=False, hold=hold)

    try:
        alone, beside, large = finished_spans(2), finished_spans(3), finished_spans(4)
        assert isinstance(await receive(alone), Stored)
        with receiver.intake.hold():  # another OTLP request in flight
            assert isinstance(await receive(beside), Stored)
        monkeypatch.setattr(otlp_receiver, "ALONE_MAX_BYTES", 10)
        assert isinstance(await receive(large), Stored)
    finally:
        await pool.close()
    assert recording.calls == [
        (False, True, False),  # alone: on the loop, the writer not told
        (True, False, True),  # in a worker, announced to the writer meanwhile
        (True, False, True),  # larger than worth decoding on the loop
    ]
    for spans in (alone, beside, large):
        assert len(await stored(store, trace_of(spans))) == len(spans)


async def test_a_receiver_without_a_pool_decodes_on_the_loop_and_never_asks_the_writer() -> None:
    # FailingStore has no writer: asking it would raise.
    receiver = OtlpReceiver(FailingStore(StorageError("down", retry_after=7)))
    body = protobuf_request(finished_spans(1)).SerializeToString()
    with receiver.intake.hold() as hold:
        outcome = await receiver.receive(body, json=False, hold=hold)
        assert hold.size == len(body)
    assert outcome == Refused("unavailable", "storage unavailable", 7)
    assert receiver.intake.held == 0


# --------------------------------------------------------------- the real OTel HTTP exporter


@pytest.mark.parametrize("compression", ["none", "gzip", "deflate"])
def test_real_otlp_http_exporter_against_a_real_server(
    live_server: Callable[..., Any], store_url: str, compression: str
) -> None:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    server = live_server(store_url)
    exporter = OTLPSpanExporter(
        endpoint=server.otlp_http_url,
        compression={
            "none": Compression.NoCompression,
            "gzip": Compression.Gzip,
            "deflate": Compression.Deflate,
        }[compression],
    )
    spans = finished_spans(5, resource={"evolution.task.id": "otlp-http-task"})
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        assert exporter.export(spans) == SpanExportResult.SUCCESS  # a retry: no duplicates
    finally:
        exporter.shutdown()
    listed = httpx.get(
        server.url + "/api/v1/spans", params={"trace_id": trace_of(spans), "limit": 100}
    )
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert len(items) == 5
    assert {item["task_id"] for item in items} == {"otlp-http-task"}


# ------------------------------------------------- another language's SDK: OpenTelemetry JS

JS_FIXTURES = Path(__file__).parent / "fixtures" / "otlp"


@pytest.mark.parametrize(
    ("fixture", "content_type"),
    [("js-sdk-0.223.1.json", "application/json"), ("js-sdk-0.223.1.pb", "application/x-protobuf")],
)
def test_bodies_from_the_javascript_sdk_exporters(
    live_server: Callable[..., Any], store_url: str, fixture: str, content_type: str
) -> None:
    """What the OpenTelemetry JS SDK's OTLP/HTTP exporters sent, byte for byte
    (`fixtures/otlp/js-sdk-emit.js` tells how they were made): its JSON has its own shape
    (integers as numbers, times as strings, link flags, keys in its own order), and it streams
    a body with chunked transfer encoding, no Content-Length, as this test does."""
    body = (JS_FIXTURES / fixture).read_bytes()
    server = live_server(store_url)

    def chunked() -> Iterator[bytes]:
        yield body[:100]
        yield body[100:]

    answer = httpx.post(
        server.otlp_http_url, content=chunked(), headers={"content-type": content_type}
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == content_type

    task = "node-task-js-json" if content_type == JSON["content-type"] else "node-task-js-protobuf"
    listed = httpx.get(server.url + "/api/v1/spans", params={"task_id": task}).json()["items"]
    by_name = {item["name"]: item for item in listed}
    assert sorted(by_name) == ["chat gpt-4o", "invoke_agent node"]
    root, chat = by_name["invoke_agent node"], by_name["chat gpt-4o"]
    assert root["parent_span_id"] is None and chat["parent_span_id"] == root["span_id"]
    assert (root["kind"], chat["kind"]) == ("server", "client")
    assert (chat["status_code"], chat["status_message"]) == ("error", "boom")
    assert chat["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 120,
        "gen_ai.usage.output_tokens": 33,
        "temperature": 0.25,
        "stream": False,
        "stop": ["a", "b"],
        "big": 9007199254740991,
    }
    assert (chat["model"], chat["input_tokens"], chat["output_tokens"]) == ("gpt-4o", 120, 33)
    assert root["agent"] == "node-bot"
    assert [event["name"] for event in chat["events"]] == ["gen_ai.evaluation.result", "note"]
    assert chat["events"][1]["attributes"] == {"n": 3}
    assert chat["links"] == [
        {"trace_id": root["trace_id"], "span_id": root["span_id"], "attributes": {"why": "self"}}
    ]
    assert chat["resource"] == {"service.name": "node-agent", "evolution.task.id": task}
    assert chat["scope"] == {"name": "node-emitter", "version": "1.2.3"}

    # The gen_ai.evaluation.result event is a reward on the span that carries it.
    rewards = httpx.get(
        server.url + "/api/v1/rewards", params={"trace_id": chat["trace_id"]}
    ).json()["items"]
    assert [(r["name"], r["value"], r["span_ids"]) for r in rewards] == [
        ("relevance", 0.75, [chat["span_id"]])
    ]
