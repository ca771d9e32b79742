"""`span_rows`: decoded spans to row values and carried rewards, before any database (pure)."""

from __future__ import annotations

import pickle
from typing import Any

import orjson
import pytest
from factories import span_id, span_record, trace_id

from evolution_store.models import SpanRecord
from evolution_store.promote import PriceTable
from evolution_store.span_rows import (
    MAX_JSON_DEPTH,
    PREPARED_COLUMNS,
    PreparedSpan,
    attribute_digest,
    dumps,
    index_digests,
    indexed_values,
    prepare_spans,
    storable,
    stored_tags,
)

NO_KEYS: frozenset[str] = frozenset()


def prepare_one(record: SpanRecord, keys: frozenset[str] = NO_KEYS) -> PreparedSpan:
    batch = prepare_spans([record], PriceTable({"gpt-x": (1.0, 2.0)}), keys)
    [span] = batch.spans
    return span


def columns(span: PreparedSpan) -> dict[str, Any]:
    assert len(span.values) == len(PREPARED_COLUMNS)
    return dict(zip(PREPARED_COLUMNS, span.values, strict=True))


def test_values_follow_prepared_columns() -> None:
    record = span_record(
        name="chat",
        kind="client",
        parent_span_id=span_id(),
        start_time=1_000,
        end_time=4_000,
        status_code="error",
        status_message="boom",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-x",
            "gen_ai.usage.input_tokens": 1000,
            "gen_ai.usage.output_tokens": 500,
            "evolution.tags": ["a"],
            "evolution.task.id": "t-1",
        },
        events=[{"name": "log", "time": 2_000, "attributes": {"k": "v"}}],
        links=[{"trace_id": trace_id(), "span_id": span_id(), "attributes": {}}],
        resource={"service.name": "svc"},
        scope={"name": "lib", "version": "1"},
        tags=["b"],
    )
    span = prepare_one(record)
    row = columns(span)
    assert {name: row[name] for name in PREPARED_COLUMNS[:9]} == {
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "parent_span_id": record.parent_span_id,
        "name": "chat",
        "kind": "client",
        "start_time": 1_000,
        "end_time": 4_000,
        "status_code": "error",
        "status_message": "boom",
    }
    for name in ("attributes", "events", "links", "resource", "scope"):
        assert orjson.loads(row[name]) == getattr(record, name), name
    assert orjson.loads(row["tags"]) == ["b", "a"] == span.tags
    assert (row["agent"], row["operation"], row["model"]) == ("svc", "chat", "gpt-x")
    assert (row["input_tokens"], row["output_tokens"], row["duration_ns"]) == (1000, 500, 3000)
    assert row["cost"] == pytest.approx((1000 * 1.0 + 500 * 2.0) / 1e6)
    assert span.owner_ids == ("t-1", None)
    # the properties read the same values
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        record.trace_id,
        record.span_id,
        record.parent_span_id,
    )
    assert (span.name, span.start_time, span.end_time, span.status_code) == (
        "chat",
        1_000,
        4_000,
        "error",
    )


def test_nul_and_lone_surrogates_are_replaced_in_every_text() -> None:
    bad = "a\x00b\ud800c"
    good = "a\ufffdb\ufffdc"
    record = span_record(
        name=bad,
        status_message=bad,
        attributes={bad: bad, "nested": {"list": [bad]}, "plain": "x"},
        events=[{"name": bad, "attributes": {"k": bad}}],
        resource={"service.name": bad},
        scope={"name": bad},
    )
    row = columns(prepare_one(record))
    assert (row["name"], row["status_message"], row["agent"]) == (good, good, good)
    assert orjson.loads(row["attributes"]) == {good: good, "nested": {"list": [good]}, "plain": "x"}
    assert orjson.loads(row["events"]) == [{"name": good, "attributes": {"k": good}}]
    assert orjson.loads(row["resource"]) == {"service.name": good}
    assert orjson.loads(row["scope"]) == {"name": good}
    for value in row.values():
        if isinstance(value, str):
            assert "\x00" not in value and "\\u0000" not in value
            value.encode("utf-8")  # no lone surrogate left: every driver can send it


def test_nul_alone_in_attributes_is_replaced() -> None:
    # orjson writes NUL as an escape it accepts; Postgres's JSON functions refuse it.
    row = columns(prepare_one(span_record(attributes={"k": "a\x00b"})))
    assert orjson.loads(row["attributes"]) == {"k": "a\ufffdb"}


def test_long_names_are_cut() -> None:
    assert prepare_one(span_record(name="n" * 5000)).name == "n" * 1000


def test_spans_of_one_resource_share_its_json() -> None:
    resource = {"service.name": "svc", "host.name": "h"}
    records = [span_record(resource=resource) for _ in range(3)]
    batch = prepare_spans(records, PriceTable(), NO_KEYS)
    texts = [columns(span)["resource"] for span in batch.spans]
    assert all(text is texts[0] for text in texts)  # one string, pickled once


# -- rewards carried inside spans ---------------------------------------------------------------


def test_rewards_of_every_carrier_kind_are_read() -> None:
    trace = trace_id()
    agent = span_record(trace_id=trace, name="agent")
    lightning = span_record(
        trace_id=trace,
        parent_span_id=agent.span_id,
        name="agentlightning.annotation",
        attributes={"agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 1},
    )
    evaluator = span_record(
        trace_id=trace,
        parent_span_id=agent.span_id,
        name="evaluate",
        attributes={
            "openinference.span.kind": "EVALUATOR",
            "evaluations.0.evaluation.name": "correctness",
            "evaluations.0.evaluation.score": 0.5,
        },
        links=[{"trace_id": trace, "span_id": agent.span_id}],
    )
    chat = span_record(
        trace_id=trace,
        parent_span_id=agent.span_id,
        name="chat",
        events=[
            {"name": "log", "attributes": {}},
            {
                "name": "gen_ai.evaluation.result",
                "attributes": {
                    "gen_ai.evaluation.name": "relevance",
                    "gen_ai.evaluation.score.value": 0.25,
                },
            },
        ],
    )
    plain = span_record(trace_id=trace, name="tool", attributes={"reward": 1.0})
    batch = prepare_spans([agent, lightning, evaluator, chat, plain], PriceTable(), NO_KEYS)
    assert [span.span_id for span in batch.spans] == [
        record.span_id for record in (agent, lightning, evaluator, chat, plain)
    ]  # carriers are stored as spans too
    by_carrier = {reward.metadata["carrier"]: reward for reward in batch.rewards}
    assert set(by_carrier) == {"agentlightning", "openinference", "gen_ai"}
    assert len(batch.rewards) == 3
    lightning_reward = by_carrier["agentlightning"]
    assert (lightning_reward.span_id, lightning_reward.value) == (agent.span_id, 1.0)
    assert lightning_reward.id == f"otlp:{trace}:{lightning.span_id}:al"
    oi_reward = by_carrier["openinference"]
    assert (oi_reward.span_id, oi_reward.name, oi_reward.value) == (
        agent.span_id,
        "correctness",
        0.5,
    )
    genai_reward = by_carrier["gen_ai"]
    assert (genai_reward.span_id, genai_reward.name, genai_reward.value) == (
        chat.span_id,
        "relevance",
        0.25,
    )
    assert genai_reward.id == f"otlp:{trace}:{chat.span_id}:ge1"
    assert (batch.report.rejected, batch.report.errors) == (0, [])


def test_a_broken_carrier_leaves_a_note_and_its_span() -> None:
    record = span_record(
        name="judge",
        attributes={
            "annotations.0.annotation.name": "tone",
            "annotations.0.annotation.label": "polite",  # no score
        },
    )
    batch = prepare_spans([record], PriceTable(), NO_KEYS)
    assert [span.span_id for span in batch.spans] == [record.span_id]
    assert batch.rewards == []
    assert batch.report.rejected == 0
    [note] = batch.report.errors
    assert "'tone'" in note and record.span_id in note


# -- the attribute index ------------------------------------------------------------------------


def test_indexed_values_are_canonical_text_of_scalars() -> None:
    attributes = {
        "session.id": "s-1",
        "n": 3,
        "ratio": 2.0,
        "flag": True,
        "list": ["x"],
        "map": {"a": 1},
        "span_id": "ab" * 8,  # ids are columns of their own
        "unindexed": "u",
    }
    keys = frozenset({"session.id", "n", "ratio", "flag", "list", "map", "span_id", "absent"})
    assert indexed_values(attributes, keys) == {
        "session.id": "s-1",
        "n": "3",
        "ratio": "2",
        "flag": "true",
    }


def test_prepared_index_entries_are_digests_of_the_indexed_values() -> None:
    record = span_record(attributes={"session.id": "s-1", "user.id": 7, "other": "o"})
    span = prepare_one(record, frozenset({"session.id", "user.id"}))
    assert span.indexed_values == {"session.id": "s-1", "user.id": "7"}
    assert sorted(span.index_digests) == sorted(
        [attribute_digest("session.id", "s-1"), attribute_digest("user.id", "7")]
    )
    assert prepare_one(record).index_digests == []


def test_use_indexed_keys_recomputes_the_entries_from_the_json() -> None:
    span = prepare_one(span_record(attributes={"session.id": "s-1", "user.id": "u"}))
    assert (span.indexed_values, span.index_digests) == ({}, [])
    span.use_indexed_keys({"session.id"})
    assert span.indexed_for == frozenset({"session.id"})
    assert span.indexed_values == {"session.id": "s-1"}
    assert span.index_digests == [attribute_digest("session.id", "s-1")]
    before = span.indexed_values
    span.use_indexed_keys(frozenset({"session.id"}))  # the same keys: nothing to redo
    assert span.indexed_values is before
    span.use_indexed_keys(set())
    assert (span.indexed_values, span.index_digests) == ({}, [])


def test_index_digests_cache_and_repeats() -> None:
    known: dict[tuple[str, str], int] = {}
    first = index_digests({"a": "1", "b": "2"}, known)
    assert known == {("a", "1"): first[0], ("b", "2"): first[1]}
    known[("c", "3")] = 42  # a cached digest is used as it is
    assert index_digests({"c": "3", "a": "1"}, known) == [42, first[0]]
    assert index_digests({}) == []


def test_state_round_trip() -> None:
    span = prepare_one(span_record(attributes={"session.id": "s"}), frozenset({"session.id"}))
    assert PreparedSpan(*span.state()) == span
    assert PreparedSpan(*pickle.loads(pickle.dumps(span.state()))) == span


def test_attribute_digest_is_a_stable_signed_64_bit_integer() -> None:
    digest = attribute_digest("session.id", "s-1")
    assert digest == attribute_digest("session.id", "s-1")
    assert -(2**63) <= digest < 2**63
    assert attribute_digest("k", "v") != attribute_digest("v", "k")
    # the digest is of the text as stored: a NUL and its replacement index alike
    assert attribute_digest("k", "a\x00") == attribute_digest("k", "a\ufffd")


# -- JSON text for stored values ----------------------------------------------------------------


def test_an_empty_list_is_one_shared_text() -> None:
    assert dumps([]) == "[]"
    assert dumps([]) is dumps([])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": 1}, {"a": 1}),
        ({1: "int key", None: "none key"}, {"1": "int key", "null": "none key"}),
        ((1, 2), [1, 2]),
        ({"big": 2**64}, {"big": str(2**64)}),
        ({"max": 2**64 - 1, "min": -(2**63)}, {"max": 2**64 - 1, "min": -(2**63)}),
        ({"low": -(2**63) - 1}, {"low": str(-(2**63) - 1)}),
        ({"s": "x\ud800"}, {"s": "x\ufffd"}),
        ({"s\x00": "x\x00"}, {"s\ufffd": "x\ufffd"}),
        ({"f": 1.5, "b": False, "n": None}, {"f": 1.5, "b": False, "n": None}),
        ({"bytes": b"ab"}, {"bytes": "b'ab'"}),  # anything else as its str()
    ],
)
def test_dumps_stores_what_json_cannot_hold_as_it_is(value: Any, expected: Any) -> None:
    assert orjson.loads(dumps(value)) == expected


def test_dumps_cuts_nesting_too_deep_for_json_codecs() -> None:
    deep: Any = "leaf"
    for _ in range(300):
        deep = [deep]
    loaded = orjson.loads(dumps({"deep": deep}))
    level = loaded["deep"]
    depth = 1
    while isinstance(level, list):
        level, depth = level[0], depth + 1
    assert depth == MAX_JSON_DEPTH
    assert isinstance(level, str) and level.startswith("[[")  # the rest kept as its text


def test_storable_leaves_plain_values_alone() -> None:
    assert storable(True) is True  # a bool is not cut as an integer
    assert storable(None) is None
    assert storable(1.5) == 1.5
    assert storable(2**63) == 2**63
    assert storable({"a": (1, "b\x00")}) == {"a": [1, "b\ufffd"]}
    assert storable(frozenset()) == "frozenset()"  # anything else as its str()
    assert storable([1], depth=MAX_JSON_DEPTH) == "[1]"


@pytest.mark.parametrize(
    ("text", "tags"),
    [(None, []), ("", []), ('["a", "b"]', ["a", "b"]), ('["a", 1, null]', ["a"]), ('{"a": 1}', [])],
)
def test_stored_tags(text: str | None, tags: list[str]) -> None:
    assert stored_tags(text) == tags
