"""Rewards carried inside spans (evolution_store/reward_carriers.py): Agent Lightning annotation
spans, OpenInference annotations/evaluations and GenAI `gen_ai.evaluation.result` events become
RewardIn objects with deterministic ids and the right target."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Tracer, format_span_id, format_trace_id

from evolution_store.otlp import decode_json, decode_protobuf
from evolution_store.promote import PriceTable
from evolution_store.span_rows import prepare_spans


@dataclass
class Carried:
    """Decoded spans and what the shared ingest path reads from them (`prepare_spans`)."""

    spans: list[Any]
    rewards: list[Any]
    rejected: int
    errors: list[str]


def carried(body: bytes, *, json: bool = False) -> Carried:
    decoded = decode_json(body) if json else decode_protobuf(body)
    batch = prepare_spans(decoded.spans, PriceTable(), frozenset())
    report = batch.report
    return Carried(decoded.spans, batch.rewards, decoded.rejected + report.rejected, report.errors)


Emit = Callable[[Callable[[Tracer], Any]], Carried]


@pytest.fixture
def emit() -> Iterator[Emit]:
    """Run `body(tracer)` under a real SDK tracer and decode what its exporter would send."""
    providers: list[TracerProvider] = []

    def run(body: Callable[[Tracer], Any]) -> Carried:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        body(provider.get_tracer("test"))
        return carried(encode_spans(exporter.get_finished_spans()).SerializeToString())

    yield run
    for provider in providers:
        provider.shutdown()


def ids(span: Any) -> tuple[str, str]:
    context = span.get_span_context()
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


# --------------------------------------------------------------------------- Agent Lightning


def test_agent_lightning_reward_targets_the_parent_span(emit: Emit) -> None:
    seen: dict[str, Any] = {}

    def body(tracer: Tracer) -> None:
        with tracer.start_as_current_span("agent") as agent:
            seen["agent"] = ids(agent)
            # What agentlightning.emit_reward(0.5) writes (emit_annotation + flatten_attributes).
            with tracer.start_as_current_span(
                "agentlightning.annotation",
                attributes={
                    "agentlightning.reward.0.name": "primary",
                    "agentlightning.reward.0.value": 0.5,
                },
            ) as carrier:
                seen["carrier"] = ids(carrier)

    decoded = emit(body)
    assert len(decoded.spans) == 2, "the carrier span is stored too"
    (reward,) = decoded.rewards
    trace_id, agent_span = seen["agent"]
    assert (reward.span_id, reward.trace_id) == (agent_span, trace_id)
    assert reward.target_kind == "span"
    assert (reward.name, reward.value, reward.dimensions) == ("reward", 0.5, {"reward": 0.5})
    assert reward.id == f"otlp:{trace_id}:{seen['carrier'][1]}:al"
    assert reward.metadata["carrier"] == "agentlightning"


def test_agent_lightning_root_annotation_targets_its_trace(emit: Emit) -> None:
    decoded = emit(
        lambda tracer: tracer.start_span(
            "agentlightning.annotation", attributes={"agentlightning.reward.0.value": 1.0}
        ).end()
    )
    (reward,) = decoded.rewards
    assert reward.target_kind == "trace" and reward.trace_id == decoded.spans[0].trace_id


def test_agent_lightning_multi_dimensional_links_and_tags(emit: Emit) -> None:
    attributes = {
        # emit_reward({"task_completion": 1.0, "efficiency": 0.8}, primary_key="task_completion",
        #             attributes={**make_link_attributes(...), **make_tag_attributes(...)})
        "agentlightning.reward.0.name": "task_completion",
        "agentlightning.reward.0.value": 1.0,
        "agentlightning.reward.1.name": "efficiency",
        "agentlightning.reward.1.value": 0.8,
        "agentlightning.link.0.key_match": "gen_ai.response.id",
        "agentlightning.link.0.value_match": "response-123",
        "agentlightning.link.1.key_match": "span_id",
        "agentlightning.link.1.value_match": "ABCDEF0123456789",
        "agentlightning.tag.0": "fast",
        "agentlightning.tag.1": "reliable",
    }
    decoded = emit(
        lambda tracer: tracer.start_span("agentlightning.annotation", attributes=attributes).end()
    )
    (reward,) = decoded.rewards
    assert reward.name == "task_completion" and reward.value == 1.0
    assert list(reward.dimensions.items()) == [("task_completion", 1.0), ("efficiency", 0.8)]
    assert reward.target_kind == "links"
    assert reward.links == {"gen_ai.response.id": "response-123", "span_id": "abcdef0123456789"}
    assert reward.tags == ["fast", "reliable"]


@pytest.mark.parametrize(
    ("name", "attributes", "value"),
    [
        # A JSON-encoded reward list (sanitize_attributes json.dumps non-primitive values).
        (
            "agentlightning.annotation",
            {"agentlightning.reward": json.dumps([{"name": "primary", "value": 0.7}])},
            0.7,
        ),
        ("agentlightning.annotation", {"agentlightning.reward": 0.25}, 0.25),
        # Agent Lightning 0.2: span "agentlightning.reward" with a numeric "reward" attribute.
        ("agentlightning.reward", {"reward": 0.3}, 0.3),
        ("agentlightning.reward", {"reward": "0.9"}, 0.9),
        # AgentOps reward operations that Agent Lightning reads.
        ("reward_fn", {"agentops.task.output": json.dumps({"type": "reward", "value": 0.4})}, 0.4),
        ("reward_fn", {"agentops.entity.output": '{"type": "reward", "value": 1}'}, 1.0),
    ],
)
def test_agent_lightning_older_layouts(
    emit: Emit, name: str, attributes: dict[str, Any], value: float
) -> None:
    decoded = emit(lambda tracer: tracer.start_span(name, attributes=attributes).end())
    (reward,) = decoded.rewards
    assert reward.value == value and reward.name == "reward"


def test_agent_lightning_tag_list_attribute(emit: Emit) -> None:
    attributes = {
        "agentlightning.reward.0.value": 1.0,
        "agentlightning.tag": ["a", "b", "a"],
    }
    decoded = emit(
        lambda tracer: tracer.start_span("agentlightning.annotation", attributes=attributes).end()
    )
    assert decoded.rewards[0].tags == ["a", "b"]


def test_annotation_without_reward_is_just_a_span(emit: Emit) -> None:
    decoded = emit(
        lambda tracer: tracer.start_span(
            "agentlightning.annotation", attributes={"agentlightning.tag.0": "x"}
        ).end()
    )
    assert decoded.rewards == [] and decoded.errors == [] and len(decoded.spans) == 1


def test_invalid_selector_skips_the_reward_but_keeps_the_span(emit: Emit) -> None:
    attributes = {
        "agentlightning.reward.0.value": 1.0,
        "agentlightning.link.0.key_match": "span_id",
        "agentlightning.link.0.value_match": "abcd-efgh-ijkl",
    }
    decoded = emit(
        lambda tracer: tracer.start_span("agentlightning.annotation", attributes=attributes).end()
    )
    assert decoded.rewards == [] and len(decoded.spans) == 1
    assert decoded.rejected == 0
    assert any("reward skipped" in error for error in decoded.errors)


def test_evolution_extension_attributes(emit: Emit) -> None:
    attributes = {
        "agentlightning.reward.0.name": "primary",
        "agentlightning.reward.0.value": 0.6,
        "evolution.reward.id": "my-key",
        "evolution.reward.name": "helpfulness",
        "evolution.reward.feedback": "good answer",
        "evolution.reward.source": "human",
    }
    decoded = emit(
        lambda tracer: tracer.start_span("agentlightning.annotation", attributes=attributes).end()
    )
    (reward,) = decoded.rewards
    assert (reward.id, reward.name, reward.feedback, reward.source) == (
        "my-key",
        "helpfulness",
        "good answer",
        "human",
    )
    assert reward.dimensions == {"helpfulness": 0.6}


def test_reward_ids_are_stable_across_retries(emit: Emit) -> None:
    def body(tracer: Tracer) -> None:
        with tracer.start_as_current_span("agent"):
            for value in (0.1, 0.2):
                tracer.start_span(
                    "agentlightning.annotation", attributes={"agentlightning.reward.0.value": value}
                ).end()

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    body(provider.get_tracer("t"))
    wire = encode_spans(exporter.get_finished_spans()).SerializeToString()
    first, again = carried(wire), carried(wire)
    assert [r.id for r in first.rewards] == [r.id for r in again.rewards]
    assert len({r.id for r in first.rewards}) == 2


# ----------------------------------------------------------------------------- OpenInference


def _evaluator(tracer: Tracer, target: Any, attributes: dict[str, Any]) -> None:
    tracer.start_span(
        "hallucination_judge",
        links=[Link(target.get_span_context())],
        attributes={"openinference.span.kind": "EVALUATOR", **attributes},
    ).end()


def test_openinference_evaluator_span_targets_its_link(emit: Emit) -> None:
    seen: dict[str, Any] = {}

    def body(tracer: Tracer) -> None:
        target = tracer.start_span("answer")
        target.end()
        seen["target"] = ids(target)
        _evaluator(
            tracer,
            target,
            {
                "evaluations.0.evaluation.name": "hallucination",
                "evaluations.0.evaluation.score": 1,
                "evaluations.0.evaluation.label": "hallucinated",
                "evaluations.0.evaluation.explanation": "unsupported claim",
                "evaluations.0.evaluation.annotator_kind": "LLM",
                "evaluations.0.evaluation.identifier": "judge-v2",
                "evaluations.0.evaluation.metadata": '{"rubric": "2026-07-01"}',
                "evaluations.1.evaluation.name": "helpful",
                "evaluations.1.evaluation.score": 0.5,
                "evaluations.1.evaluation.annotator_kind": "HUMAN",
            },
        )

    decoded = emit(body)
    first, second = decoded.rewards
    trace_id, span_id = seen["target"]
    for reward in (first, second):
        assert (reward.trace_id, reward.span_id) == (trace_id, span_id)
    assert (first.name, first.value, first.feedback, first.source) == (
        "hallucination",
        1.0,
        "unsupported claim",
        "llm",
    )
    assert first.metadata["label"] == "hallucinated"
    assert first.metadata["identifier"] == "judge-v2"
    assert first.metadata["metadata"] == {"rubric": "2026-07-01"}
    assert (second.name, second.value, second.source) == ("helpful", 0.5, "human")
    assert first.id.endswith(":ev0") and second.id.endswith(":ev1")


def test_openinference_annotations_on_an_evaluator_target_the_link(emit: Emit) -> None:
    seen: dict[str, Any] = {}

    def body(tracer: Tracer) -> None:
        target = tracer.start_span("answer")
        target.end()
        seen["target"] = ids(target)
        _evaluator(
            tracer,
            target,
            {
                "annotations.0.annotation.name": "correctness",
                "annotations.0.annotation.score": 0.9,
                "annotations.0.annotation.annotator_kind": "CODE",
            },
        )

    (reward,) = emit(body).rewards
    assert (reward.trace_id, reward.span_id) == seen["target"]
    assert (reward.name, reward.value, reward.source) == ("correctness", 0.9, "code")
    assert reward.id.endswith(":an0")


def test_openinference_bare_carrier_with_a_link_targets_the_link(emit: Emit) -> None:
    seen: dict[str, Any] = {}

    def body(tracer: Tracer) -> None:
        target = tracer.start_span("answer")
        target.end()
        seen["target"] = ids(target)
        tracer.start_span(
            "feedback",
            links=[Link(target.get_span_context())],
            attributes={
                "annotations.0.annotation.name": "thumbs",
                "annotations.0.annotation.score": 1,
                "annotations.0.annotation.annotator_kind": "HUMAN",
            },
        ).end()

    (reward,) = emit(body).rewards
    assert (reward.trace_id, reward.span_id) == seen["target"]
    assert reward.source == "human"


def test_openinference_inline_annotations_judge_the_carrying_span(emit: Emit) -> None:
    seen: dict[str, Any] = {}

    def body(tracer: Tracer) -> None:
        other = tracer.start_span("other")
        other.end()
        span = tracer.start_span(
            "answer_question",
            links=[Link(other.get_span_context())],
            attributes={
                "openinference.span.kind": "CHAIN",
                "annotations.0.annotation.name": "hallucination",
                "annotations.0.annotation.score": 0,
                "annotations.0.annotation.annotator_kind": "alien",
            },
        )
        span.end()
        seen["span"] = ids(span)

    (reward,) = emit(body).rewards
    assert (reward.trace_id, reward.span_id) == seen["span"]
    assert (reward.value, reward.source) == (0.0, "code")


def test_openinference_without_score_is_skipped_and_reported(emit: Emit) -> None:
    def body(tracer: Tracer) -> None:
        target = tracer.start_span("answer")
        target.end()
        _evaluator(
            tracer,
            target,
            {
                "evaluations.0.evaluation.name": "tone",
                "evaluations.0.evaluation.label": "polite",
            },
        )

    decoded = emit(body)
    assert decoded.rewards == [] and len(decoded.spans) == 2
    assert any("no numeric score" in error for error in decoded.errors)
    assert decoded.rejected == 0


def test_openinference_evaluator_without_link_targets_its_trace(emit: Emit) -> None:
    decoded = emit(
        lambda tracer: tracer.start_span(
            "judge",
            attributes={
                "openinference.span.kind": "EVALUATOR",
                "evaluations.0.evaluation.name": "x",
                "evaluations.0.evaluation.score": 0.1,
            },
        ).end()
    )
    (reward,) = decoded.rewards
    assert reward.target_kind == "trace" and reward.trace_id == decoded.spans[0].trace_id
    assert any("no valid link" in error for error in decoded.errors)


# ----------------------------------------------------------------------------- GenAI semconv


def test_genai_evaluation_events(emit: Emit) -> None:
    seen: dict[str, Any] = {}

    def body(tracer: Tracer) -> None:
        with tracer.start_as_current_span("chat gpt-4") as span:
            seen["span"] = ids(span)
            span.add_event("unrelated")
            span.add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "relevance",
                    "gen_ai.evaluation.score.value": 0.75,
                    "gen_ai.evaluation.score.label": "relevant",
                    "gen_ai.evaluation.explanation": "on topic",
                },
            )
            span.add_event(
                "gen_ai.evaluation.result",
                {
                    "gen_ai.evaluation.name": "accuracy",
                    "gen_ai.evaluation.score.value": 1,
                    "gen_ai.response.id": "chatcmpl-42",
                },
            )
            span.add_event("gen_ai.evaluation.result", {"gen_ai.evaluation.name": "label-only"})

    decoded = emit(body)
    relevance, accuracy = decoded.rewards
    assert (relevance.trace_id, relevance.span_id) == seen["span"]
    assert (relevance.name, relevance.value, relevance.feedback, relevance.source) == (
        "relevance",
        0.75,
        "on topic",
        "llm",
    )
    assert relevance.metadata["label"] == "relevant"
    assert relevance.id.endswith(":ge1")
    assert accuracy.target_kind == "links"
    assert accuracy.links == {"gen_ai.response.id": "chatcmpl-42"}
    assert accuracy.id.endswith(":ge2")
    assert any("label-only" in error for error in decoded.errors)


def test_ordinary_spans_carry_no_rewards(emit: Emit) -> None:
    def body(tracer: Tracer) -> None:
        with tracer.start_as_current_span("chat", attributes={"reward": 1.0}) as span:
            span.add_event("log", {"gen_ai.evaluation.score.value": 1.0})

    decoded = emit(body)
    assert decoded.rewards == [] and decoded.errors == []


# ------------------------------------------------------------------------------- JSON path


def test_carriers_in_otlp_json() -> None:
    trace_id, carrier, parent = (
        "5b8aa5a2d2c872e8321cf37308d69df2",
        "93564f51e1abe1c2",
        "e457b5a2e4d86bd1",
    )

    def kv(key: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"key": key, "value": value}

    body = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": trace_id,
                                    "spanId": carrier,
                                    "parentSpanId": parent,
                                    "name": "agentlightning.annotation",
                                    "startTimeUnixNano": "1",
                                    "attributes": [
                                        kv(
                                            "agentlightning.reward.0.name",
                                            {"stringValue": "primary"},
                                        ),
                                        kv("agentlightning.reward.0.value", {"doubleValue": 0.5}),
                                    ],
                                    "events": [
                                        {
                                            "name": "gen_ai.evaluation.result",
                                            "timeUnixNano": "2",
                                            "attributes": [
                                                kv("gen_ai.evaluation.name", {"stringValue": "q"}),
                                                kv(
                                                    "gen_ai.evaluation.score.value",
                                                    {"intValue": "1"},
                                                ),
                                            ],
                                        }
                                    ],
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    )
    decoded = carried(body, json=True)
    al, genai = decoded.rewards
    assert (al.span_id, al.trace_id, al.value) == (parent, trace_id, 0.5)
    assert (genai.span_id, genai.name, genai.value) == (carrier, "q", 1.0)
    assert al.id == f"otlp:{trace_id}:{carrier}:al"


def test_a_carrier_that_breaks_the_reader_costs_only_its_rewards(
    emit: Emit, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evolution_store.span_rows as span_rows

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("reader bug")

    monkeypatch.setattr(span_rows, "rewards_from_span", broken)
    decoded = emit(
        lambda tracer: tracer.start_span(
            "agentlightning.annotation", attributes={"agentlightning.reward.0.value": 1.0}
        ).end()
    )
    assert len(decoded.spans) == 1 and decoded.rewards == [] and decoded.rejected == 0
    assert any("could not be read" in error for error in decoded.errors)
