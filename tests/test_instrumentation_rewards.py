"""emit_reward targets and payloads, and the Agent Lightning attribute forms."""

from __future__ import annotations

import json
import math

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import instrumentation
import instrumentation._config as config_module
from instrumentation import (
    EvolutionClientError,
    emit_reward,
    make_link_attributes,
    make_tag_attributes,
    task,
    track_evolution,
)

OTEL_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class FakeRewards:
    """POST /rewards that echoes the body like the server; `answers` queues status codes."""

    def __init__(self):
        self.bodies: list[dict] = []
        self.answers: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if request.url.path.endswith("/rewards"):
            self.bodies.append(body)
            status = self.answers.pop(0) if self.answers else 201
            if status >= 400:
                return httpx.Response(status, json={"detail": "nope"}, headers={"Retry-After": "0"})
            return httpx.Response(201, json={**body, "resolved": False, "span_ids": []})
        return httpx.Response(201, json=body)


@pytest.fixture
def server(monkeypatch):
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    fake = FakeRewards()
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(config_module, "build_otlp_exporter", lambda *a, **k: exporter)
    session = instrumentation.configure(
        "http://evo.test",
        tracer_provider=TracerProvider(),
        set_global=False,
        transport=httpx.MockTransport(fake),
    )
    fake.session = session
    yield fake
    session.shutdown()


def test_link_attributes_match_agent_lightning():
    assert make_link_attributes({"gen_ai.response.id": "resp-1", "span_id": "ab" * 8}) == {
        "agentlightning.link.0.key_match": "gen_ai.response.id",
        "agentlightning.link.0.value_match": "resp-1",
        "agentlightning.link.1.key_match": "span_id",
        "agentlightning.link.1.value_match": "ab" * 8,
    }
    assert make_link_attributes({"turn": 3, "ok": True, "score": 0.5}) == {
        "agentlightning.link.0.key_match": "turn",
        "agentlightning.link.0.value_match": "3",
        "agentlightning.link.1.key_match": "ok",
        "agentlightning.link.1.value_match": "true",
        "agentlightning.link.2.key_match": "score",
        "agentlightning.link.2.value_match": "0.5",
    }
    with pytest.raises(ValueError):
        make_link_attributes({"k": ["not", "scalar"]})
    assert make_link_attributes({}) == {}


def test_tag_attributes_match_agent_lightning():
    assert make_tag_attributes(["gen_ai.model:gpt-4", "reward.extrinsic"]) == {
        "agentlightning.tag.0": "gen_ai.model:gpt-4",
        "agentlightning.tag.1": "reward.extrinsic",
    }
    assert make_tag_attributes("solo") == {"agentlightning.tag.0": "solo"}
    with pytest.raises(ValueError):
        make_tag_attributes([1])


def test_default_target_is_the_current_span(server):
    @track_evolution
    def agent():
        span = trace.get_current_span().get_span_context()
        stored = emit_reward(0.75, tags=["judge"], feedback="good", metadata={"m": 1})
        return span, stored

    ctx, stored = agent()
    (body,) = server.bodies
    assert body["span_id"] == format(ctx.span_id, "016x")
    assert body["trace_id"] == format(ctx.trace_id, "032x")
    assert body["value"] == 0.75 and body["name"] == "reward" and body["source"] == "code"
    assert body["tags"] == ["judge"] and body["feedback"] == "good"
    assert body["metadata"] == {"m": 1}
    assert len(body["id"]) == 32
    assert "execution_id" not in body and "links" not in body
    assert stored["id"] == body["id"]


def test_default_target_falls_back_to_the_task_execution(server):
    with task("demo") as t:
        emit_reward(1)
    body = server.bodies[-1]
    assert body["execution_id"] == t.execution_id
    assert "span_id" not in body and body["value"] == 1.0


def test_explicit_targets_and_dimensions(server):
    emit_reward(
        {"correct": 1, "brevity": 0.25},
        name="quality",
        links={"gen_ai.response.id": "resp-9"},
        reward_id="r-1",
        source="llm",
    )
    emit_reward(0.1, task_id="ticket-1")
    emit_reward(0.2, trace_id="a" * 32)
    first, second, third = server.bodies
    assert first["dimensions"] == {"correct": 1.0, "brevity": 0.25}
    assert list(first["dimensions"]) == ["correct", "brevity"]  # primary first
    assert first["value"] == 1.0 and first["name"] == "quality"
    assert first["links"] == {"gen_ai.response.id": "resp-9"}
    assert first["id"] == "r-1" and first["source"] == "llm"
    assert second["task_id"] == "ticket-1"
    assert third["trace_id"] == "a" * 32 and "span_id" not in third


def test_bad_values_and_missing_target_raise_before_any_request(server):
    with pytest.raises(ValueError, match="target"):
        emit_reward(1.0)
    with pytest.raises(TypeError):
        emit_reward("high", task_id="t")
    with pytest.raises(ValueError):
        emit_reward(math.nan, task_id="t")
    with pytest.raises(ValueError):
        emit_reward({}, task_id="t")
    with pytest.raises(ValueError):
        emit_reward(1.0, task_id="t", source="robot")
    assert server.bodies == []


def test_transient_errors_are_retried_with_the_same_id(server):
    server.answers = [503]
    stored = emit_reward(0.5, task_id="t")
    first, second = server.bodies
    assert first == second and stored["id"] == first["id"]


def test_refusals_raise_evolution_client_error(server):
    server.answers = [422]
    with pytest.raises(EvolutionClientError) as caught:
        emit_reward(0.5, task_id="t")
    assert caught.value.status == 422 and caught.value.detail == "nope"


def test_unconfigured_reward_becomes_an_agent_lightning_annotation_span(monkeypatch):
    from instrumentation._state import STATE

    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    session = instrumentation.configure(
        span_exporter=exporter, tracer_provider=provider, set_global=False
    )
    assert STATE.sink is None
    try:
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("llm-call") as target:
            stored = emit_reward({"task": 1.0, "style": 0.5}, tags=["auto"], reward_id="rid")
        session.force_flush()
    finally:
        session.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    annotation = spans["agentlightning.annotation"]
    assert annotation.parent.span_id == target.get_span_context().span_id
    attrs = dict(annotation.attributes)
    assert attrs["agentlightning.reward.0.name"] == "task"
    assert attrs["agentlightning.reward.0.value"] == 1.0
    assert attrs["agentlightning.reward.1.name"] == "style"
    assert attrs["agentlightning.tag.0"] == "auto"
    assert attrs["evolution.reward.id"] == "rid"
    assert stored["stored"] is False and stored["id"] == "rid"

    # The server's OTLP reward reader understands it (evolution_store is fine to import here).
    from evolution_store.models import SpanRecord
    from evolution_store.reward_carriers import rewards_from_span
    from instrumentation._spans import span_fields

    (reward,) = rewards_from_span(SpanRecord(**span_fields(annotation)), lambda _: None)
    assert reward.id == "rid" and reward.value == 1.0 and reward.tags == ["auto"]
    assert reward.dimensions == {"task": 1.0, "style": 0.5}
    ctx = target.get_span_context()
    assert reward.links == {
        "span_id": format(ctx.span_id, "016x"),
        "trace_id": format(ctx.trace_id, "032x"),
    }
