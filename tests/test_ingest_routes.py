"""Every ingest route takes the one shared path (`span_rows.prepare_spans`, then the
group-commit writer), so the same spans give the same stored result whichever way they come:
REST `POST /api/v1/spans` and `/spans/batch`, OTLP/HTTP, OTLP/gRPC and the embedded exporter.

Checked on both backends for the two things a route could get wrong on its own: rewards
carried inside spans (Agent Lightning annotation spans, OpenInference evaluator spans,
GenAI `gen_ai.evaluation.result` events), and text the database cannot hold as it is (NUL).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2_grpc import TraceServiceStub
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

from api.grpc_server import start_grpc_server
from api.otlp_receiver import OtlpReceiver
from evolution_store import EvolutionStore
from evolution_store.queries import RewardQuery, SpanQuery
from instrumentation._embedded import StoreRunner, StoreSpanExporter
from instrumentation._spans import span_fields

Route = Callable[[list[ReadableSpan]], Awaitable[None]]
ROUTES = ("rest", "rest-batch", "otlp-http", "otlp-grpc", "embedded")


def carrier_spans(nul: str = "") -> list[ReadableSpan]:
    """An agent run whose spans carry one reward of each kind, made by the real OTel SDK (new
    ids on every call). `nul` goes into a span name, an attribute, an event and the resource."""
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": f"support-bot{nul}"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("routes-test")
    with tracer.start_as_current_span(f"agent{nul}", attributes={"note": f"a{nul}b"}):
        with tracer.start_as_current_span(
            "llm", attributes={"gen_ai.operation.name": "chat"}
        ) as llm:
            llm.add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "helpful",
                    "gen_ai.evaluation.score.value": 0.75,
                    "gen_ai.evaluation.explanation": f"clear{nul}",
                },
            )
        # Agent Lightning's emit_reward: an annotation span under the span it judges.
        with tracer.start_as_current_span(
            "agentlightning.annotation",
            attributes={
                "agentlightning.reward.0.name": "task_completion",
                "agentlightning.reward.0.value": 1.0,
                "agentlightning.reward.1.name": "efficiency",
                "agentlightning.reward.1.value": 0.5,
                "agentlightning.tag.0": "graded",
            },
        ):
            pass
        # OpenInference: an evaluator span linked to the span it judges.
        tracer.start_span(
            "evaluate",
            kind=SpanKind.INTERNAL,
            links=[Link(llm.get_span_context())],
            attributes={
                "openinference.span.kind": "EVALUATOR",
                "annotations.0.annotation.name": "correctness",
                "annotations.0.annotation.score": 0.9,
                "annotations.0.annotation.label": "correct",
                "annotations.0.annotation.explanation": "matches the reference",
                "annotations.0.annotation.annotator_kind": "LLM",
            },
        ).end()
    provider.shutdown()
    return list(exporter.get_finished_spans())


@pytest.fixture
async def send(
    store: EvolutionStore, store_url: str, api_client: httpx.AsyncClient
) -> AsyncIterator[Callable[[str], Route]]:
    """`await send(route)(spans)`: deliver finished SDK spans through one ingest route, into
    the test's store, and fail unless the route answered success."""
    grpc_servers: list[grpc.aio.Server] = []
    runners: list[StoreRunner] = []

    async def rest(spans: list[ReadableSpan], path: str, wrap: bool) -> None:
        bodies = [span_fields(span) for span in spans]
        payload: Any = {"spans": bodies} if wrap else bodies
        response = await api_client.post(f"/api/v1/{path}", json=payload)
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(spans)

    async def otlp_http(spans: list[ReadableSpan]) -> None:
        response = await api_client.post(
            "/v1/traces",
            content=encode_spans(spans).SerializeToString(),
            headers={"content-type": "application/x-protobuf"},
        )
        assert response.status_code == 200, response.text

    async def otlp_grpc(spans: list[ReadableSpan]) -> None:
        if not grpc_servers:
            grpc_servers.append(
                await start_grpc_server(OtlpReceiver(store), host="127.0.0.1", port=0)
            )
        target = f"127.0.0.1:{grpc_servers[0].bound_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            await TraceServiceStub(channel).Export(encode_spans(spans), timeout=30)

    async def embedded(spans: list[ReadableSpan]) -> None:
        # The exporter blocks until its own store has committed: run it off the loop.
        runner = StoreRunner(store_url)
        runners.append(runner)
        result = await _in_thread(StoreSpanExporter(runner).export, spans)
        assert result.name == "SUCCESS"

    senders: dict[str, Route] = {
        "rest": lambda spans: rest(spans, "spans", wrap=True),
        "rest-batch": lambda spans: rest(spans, "spans/batch", wrap=True),
        "otlp-http": otlp_http,
        "otlp-grpc": otlp_grpc,
        "embedded": embedded,
    }
    yield senders.__getitem__
    for server in grpc_servers:
        await server.stop(None)
    for runner in runners:
        await _in_thread(runner.shutdown)


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def rewards_as_seen(store: EvolutionStore, spans: list[ReadableSpan]) -> list[tuple]:
    """The stored rewards of one run, with ids replaced by the names of the spans they point
    at, so that runs with different ids compare equal when they mean the same."""
    names = {format(span.context.span_id, "016x"): span.name for span in spans}
    trace = format(spans[0].context.trace_id, "032x")
    found = (await store.list_rewards(RewardQuery(trace_id=trace, limit=1000))).items
    seen = []
    for reward in found:
        target = reward["target"]
        seen.append(
            (
                reward["name"],
                reward["value"],
                reward["dimensions"],
                reward["feedback"],
                reward["source"],
                reward["tags"],
                target["kind"],
                names.get(target["span_id"] or "", target["span_id"]),
                reward["resolved"],
                sorted(names[span_id] for span_id in reward["span_ids"]),
                reward["id"].replace(trace, "<trace>").split(":")[-1],
            )
        )
    return sorted(seen, key=repr)


async def test_every_route_turns_the_same_carriers_into_the_same_rewards(
    store: EvolutionStore, send: Callable[[str], Route]
) -> None:
    seen: dict[str, list[tuple]] = {}
    for route in ROUTES:
        spans = carrier_spans()
        await send(route)(spans)
        seen[route] = await rewards_as_seen(store, spans)
    expected = seen["otlp-http"]
    # One reward of each carrier kind, each linked to the span it judges.
    judged = sorted((row[0], row[7], row[8], row[9]) for row in expected)
    assert judged == [
        ("correctness", "llm", True, ["llm"]),
        ("helpful", "llm", True, ["llm"]),
        ("task_completion", "agent", True, ["agent"]),
    ], expected
    for route in ROUTES:
        assert seen[route] == expected, route


@pytest.mark.parametrize("route", ROUTES)
async def test_nul_in_any_text_is_stored_as_the_replacement_character(
    store: EvolutionStore, send: Callable[[str], Route], route: str
) -> None:
    spans = carrier_spans(nul="\x00")
    await send(route)(spans)
    trace = format(spans[0].context.trace_id, "032x")
    stored = {
        span["span_id"]: span
        for span in (await store.list_spans(SpanQuery(trace_id=trace, limit=100))).items
    }
    assert len(stored) == len(spans)
    root = next(span for span in stored.values() if span["parent_span_id"] is None)
    assert root["name"] == "agent\ufffd"
    assert root["attributes"]["note"] == "a\ufffdb"
    assert root["resource"]["service.name"] == "support-bot\ufffd"
    assert "\x00" not in repr(list(stored.values()))
    # The task a trace names after its root span, and a query that scans attributes' JSON
    # (which Postgres refuses to do over an escaped NUL), both work.
    assert (await store.get_task(root["task_id"]))["name"] == "agent\ufffd"
    found = await store.list_spans(SpanQuery(trace_id=trace, attributes={"note": "a\ufffdb"}))
    assert [span["span_id"] for span in found.items] == [root["span_id"]]
    helpful = await store.list_rewards(RewardQuery(trace_id=trace, name="helpful"))
    assert [reward["feedback"] for reward in helpful.items] == ["clear\ufffd"]
