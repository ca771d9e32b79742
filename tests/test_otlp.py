"""OTLP decoding (evolution_store/otlp.py): protobuf and JSON give the same records, ids are hex,
bad spans are rejected alone, and undecodable bodies raise InvalidInput."""

from __future__ import annotations

import base64
import gc
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from evolution_store.errors import InvalidInput
from evolution_store.otlp import (
    MAX_NAME_LENGTH,
    decode_json,
    decode_message,
    decode_protobuf,
)
from evolution_store.partial_success import MAX_ERROR_MESSAGES

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"
PARENT = "00f067aa0ba902b7"


def sdk_request() -> ExportTraceServiceRequest:
    """A realistic request: what the OTel SDK's OTLP exporters send."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "deploy": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("my.scope", "1.2.3")
    with (
        tracer.start_as_current_span(
            "root", kind=SpanKind.SERVER, attributes={"s": "x", "i": 7, "f": 0.5, "b": True}
        ) as root,
        tracer.start_as_current_span(
            "child",
            kind=SpanKind.CLIENT,
            attributes={"list": ["a", "b"], "ints": [1, 2]},
            links=[Link(root.get_span_context(), {"why": "because"})],
        ) as child,
    ):
        child.add_event("thing", {"n": 1})
        child.set_status(StatusCode.ERROR, "boom")
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans())


def to_otlp_json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as the spec defines it: `MessageToDict` output with ids turned into hex."""
    id_keys = {"traceId", "spanId", "parentSpanId"}

    def hexify(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: base64.b64decode(value).hex() if key in id_keys else hexify(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [hexify(item) for item in node]
        return node

    return orjson.dumps(hexify(MessageToDict(message)))


def pb_span(**fields: Any) -> Span:
    defaults: dict[str, Any] = {
        "trace_id": bytes.fromhex(TRACE),
        "span_id": bytes.fromhex(SPAN),
        "name": "op",
        "start_time_unix_nano": 1_700_000_000_000_000_000,
        "end_time_unix_nano": 1_700_000_000_500_000_000,
    }
    defaults.update(fields)
    return Span(**defaults)


def pb_request(*spans: Span) -> bytes:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.spans.extend(spans)
    return request.SerializeToString()


def json_body(*spans: dict[str, Any], resource: dict[str, Any] | None = None) -> bytes:
    return orjson.dumps(
        {
            "resourceSpans": [
                {
                    "resource": resource or {"attributes": []},
                    "scopeSpans": [{"scope": {"name": "s", "version": "1"}, "spans": list(spans)}],
                }
            ]
        }
    )


def json_span(**fields: Any) -> dict[str, Any]:
    span: dict[str, Any] = {
        "traceId": TRACE,
        "spanId": SPAN,
        "name": "op",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000000500000000",
    }
    span.update(fields)
    return span


# ------------------------------------------------------------------------------ protobuf


def test_protobuf_from_the_sdk_decodes_every_field() -> None:
    decoded = decode_protobuf(sdk_request().SerializeToString())
    assert decoded.rejected == 0 and decoded.errors == []
    by_name = {span.name: span for span in decoded.spans}
    root, child = by_name["root"], by_name["child"]

    assert len(root.trace_id) == 32 and root.trace_id == root.trace_id.lower()
    assert len(root.span_id) == 16
    assert root.parent_span_id is None
    assert child.parent_span_id == root.span_id and child.trace_id == root.trace_id
    assert root.kind == "server" and child.kind == "client"
    assert root.status_code == "unset"
    assert (child.status_code, child.status_message) == ("error", "boom")
    assert root.attributes == {"s": "x", "i": 7, "f": 0.5, "b": True}
    assert child.attributes == {"list": ["a", "b"], "ints": [1, 2]}
    assert child.events[0]["name"] == "thing"
    assert child.events[0]["attributes"] == {"n": 1}
    assert isinstance(child.events[0]["time_unix_nano"], int)
    assert child.links == [
        {"trace_id": root.trace_id, "span_id": root.span_id, "attributes": {"why": "because"}}
    ]
    assert root.resource["service.name"] == "svc" and root.resource["deploy"] == 3
    assert root.scope == {"name": "my.scope", "version": "1.2.3"}
    assert root.end_time > root.start_time > 0
    assert root.task_id is None and root.execution_id is None


def test_protobuf_and_json_give_identical_records() -> None:
    message = sdk_request()
    from_pb = decode_protobuf(message.SerializeToString())
    from_json = decode_json(to_otlp_json(message))
    assert from_json.spans == from_pb.spans
    assert decode_message(message).spans == from_pb.spans


def test_any_value_kinds_in_protobuf() -> None:
    span = pb_span()
    kv = span.attributes.add()
    kv.key = "bytes"
    kv.value.bytes_value = b"\x00\x01\xff"
    kv = span.attributes.add()
    kv.key = "kv"
    inner = kv.value.kvlist_value.values.add()
    inner.key = "deep"
    inner.value.array_value.values.add().int_value = 5
    kv = span.attributes.add()
    kv.key = "empty"
    decoded = decode_protobuf(pb_request(span))
    attributes = decoded.spans[0].attributes
    assert attributes["bytes"] == base64.b64encode(b"\x00\x01\xff").decode()
    assert attributes["kv"] == {"deep": [5]}
    assert attributes["empty"] is None


def test_falsy_scalars_keep_their_type_in_protobuf() -> None:
    # The decoder reads `string_value` first; an empty one must not hide another type.
    span = pb_span()
    for key, field, value in (
        ("text", "string_value", "x"),
        ("empty_text", "string_value", ""),
        ("false", "bool_value", False),
        ("zero", "int_value", 0),
        ("zero_float", "double_value", 0.0),
    ):
        kv = span.attributes.add()
        kv.key = key
        setattr(kv.value, field, value)
    kv = span.attributes.add()
    kv.key = "array"
    for field, value in (("string_value", "y"), ("string_value", ""), ("bool_value", False)):
        setattr(kv.value.array_value.values.add(), field, value)
    attributes = decode_protobuf(pb_request(span)).spans[0].attributes
    assert attributes == {
        "text": "x",
        "empty_text": "",
        "false": False,
        "zero": 0,
        "zero_float": 0.0,
        "array": ["y", "", False],
    }
    assert [type(attributes[k]) for k in ("false", "zero", "zero_float")] == [bool, int, float]


def test_unknown_kind_and_status_codes_fall_back() -> None:
    span = pb_span(kind=42, status=Status(code=9, message="?"))
    record = decode_protobuf(pb_request(span)).spans[0]
    assert record.kind == "unspecified" and record.status_code == "unset"


def test_resource_and_scope_dicts_are_built_once_per_group() -> None:
    decoded = decode_protobuf(sdk_request().SerializeToString())
    first, second = decoded.spans
    assert first.resource is second.resource
    assert first.scope is second.scope


def test_long_names_are_truncated_not_rejected() -> None:
    decoded = decode_protobuf(pb_request(pb_span(name="n" * 5000)))
    assert len(decoded.spans[0].name) == MAX_NAME_LENGTH
    decoded = decode_json(json_body(json_span(name="n" * 5000)))
    assert len(decoded.spans[0].name) == MAX_NAME_LENGTH


# ------------------------------------------------------------------------------ bad ids


@pytest.mark.parametrize(
    "fields",
    [
        {"trace_id": bytes(16)},
        {"trace_id": b"\x01" * 15},
        {"trace_id": b""},
        {"span_id": bytes(8)},
        {"span_id": b"\x01" * 9},
        {"parent_span_id": b"\x01" * 4},
        {"start_time_unix_nano": 2**63},
        {"end_time_unix_nano": 2**64 - 1},
    ],
)
def test_bad_protobuf_ids_reject_that_span_alone(fields: dict[str, Any]) -> None:
    good = pb_span(span_id=bytes.fromhex("1111111111111111"))
    decoded = decode_protobuf(pb_request(pb_span(**fields), good))
    assert decoded.rejected == 1
    assert [span.span_id for span in decoded.spans] == ["1111111111111111"]
    assert decoded.errors and "1 span(s) rejected" in decoded.error_message


@pytest.mark.parametrize("parent", [b"", bytes(8)])
def test_empty_or_zero_parent_means_root(parent: bytes) -> None:
    decoded = decode_protobuf(pb_request(pb_span(parent_span_id=parent)))
    assert decoded.rejected == 0 and decoded.spans[0].parent_span_id is None


@pytest.mark.parametrize(
    "fields",
    [
        {"traceId": "0" * 32},
        {"traceId": TRACE[:-2]},
        {"traceId": "zz" + TRACE[2:]},
        {"traceId": None},
        {"traceId": 12345},
        {"spanId": "0" * 16},
        {"spanId": SPAN + "00"},
        {"spanId": "xyz"},
        {"parentSpanId": "abc"},
        {"startTimeUnixNano": "not a number"},
        {"startTimeUnixNano": str(2**63)},
        {"endTimeUnixNano": "-1"},
        {"attributes": [{"key": "big", "value": {"intValue": str(2**63)}}]},
        {"attributes": 5},
        {"events": [{"name": "e", "timeUnixNano": "soon"}]},
    ],
)
def test_bad_json_spans_reject_that_span_alone(fields: dict[str, Any]) -> None:
    good = json_span(spanId="1111111111111111")
    decoded = decode_json(json_body(json_span(**fields), good))
    assert decoded.rejected == 1
    assert [span.span_id for span in decoded.spans] == ["1111111111111111"]
    assert decoded.error_message


def test_error_messages_are_bounded() -> None:
    spans = [json_span(traceId="0" * 32) for _ in range(50)]
    decoded = decode_json(json_body(*spans))
    assert decoded.rejected == 50
    assert len(decoded.errors) == MAX_ERROR_MESSAGES
    assert "50 span(s) rejected" in decoded.error_message
    assert f"and {50 - MAX_ERROR_MESSAGES} more" in decoded.error_message


# ---------------------------------------------------------------------------------- JSON


def test_json_ids_are_hex_and_lowercased() -> None:
    span = json_span(traceId=TRACE.upper(), spanId=SPAN.upper(), parentSpanId=PARENT.upper())
    record = decode_json(json_body(span)).spans[0]
    assert (record.trace_id, record.span_id, record.parent_span_id) == (TRACE, SPAN, PARENT)


def test_json_base64_ids_are_accepted_too() -> None:
    span = json_span(
        traceId=base64.b64encode(bytes.fromhex(TRACE)).decode(),
        spanId=base64.b64encode(bytes.fromhex(SPAN)).decode(),
    )
    record = decode_json(json_body(span)).spans[0]
    assert (record.trace_id, record.span_id) == (TRACE, SPAN)


@pytest.mark.parametrize("parent", ["", "0" * 16, None])
def test_json_empty_or_zero_parent_means_root(parent: str | None) -> None:
    record = decode_json(json_body(json_span(parentSpanId=parent))).spans[0]
    assert record.parent_span_id is None


def test_json_int64_as_strings_or_numbers_and_enums_as_ints_or_names() -> None:
    spans = [
        json_span(
            spanId="1111111111111111",
            startTimeUnixNano="1700000000000000001",
            endTimeUnixNano=1700000000000000002,
            kind=2,
            status={"code": 2, "message": "bad"},
        ),
        json_span(
            spanId="2222222222222222",
            startTimeUnixNano=1700000000000000001,
            kind="SPAN_KIND_CONSUMER",
            status={"code": "STATUS_CODE_OK"},
        ),
    ]
    first, second = decode_json(json_body(*spans)).spans
    assert first.start_time == 1700000000000000001 and first.end_time == 1700000000000000002
    assert (first.kind, first.status_code, first.status_message) == ("server", "error", "bad")
    assert (second.kind, second.status_code) == ("consumer", "ok")
    assert second.start_time == 1700000000000000001


def test_json_any_values() -> None:
    attributes = [
        {"key": "s", "value": {"stringValue": "x"}},
        {"key": "i", "value": {"intValue": "9007199254740993"}},
        {"key": "i2", "value": {"intValue": 3}},
        {"key": "d", "value": {"doubleValue": 1.5}},
        {"key": "d2", "value": {"doubleValue": 2}},
        {"key": "b", "value": {"boolValue": True}},
        {"key": "bytes", "value": {"bytesValue": "AAH/"}},
        {
            "key": "arr",
            "value": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "a"}]}},
        },
        {
            "key": "kv",
            "value": {"kvlistValue": {"values": [{"key": "k", "value": {"boolValue": False}}]}},
        },
        {"key": "none", "value": {}},
        {"key": "missing"},
    ]
    record = decode_json(json_body(json_span(attributes=attributes))).spans[0]
    assert record.attributes == {
        "s": "x",
        "i": 9007199254740993,
        "i2": 3,
        "d": 1.5,
        "d2": 2.0,
        "b": True,
        "bytes": "AAH/",
        "arr": [1, "a"],
        "kv": {"k": False},
        "none": None,
        "missing": None,
    }


def test_json_snake_case_keys_and_unknown_fields() -> None:
    body = orjson.dumps(
        {
            "resource_spans": [
                {
                    "resource": {
                        "attributes": [{"key": "service.name", "value": {"string_value": "a"}}]
                    },
                    "scope_spans": [
                        {
                            "scope": {"name": "sc"},
                            "spans": [
                                {
                                    "trace_id": TRACE,
                                    "span_id": SPAN,
                                    "parent_span_id": PARENT,
                                    "name": "snake",
                                    "start_time_unix_nano": "5",
                                    "end_time_unix_nano": "6",
                                    "attributes": [{"key": "n", "value": {"int_value": "4"}}],
                                    "events": [{"name": "e", "time_unix_nano": "5"}],
                                    "links": [{"trace_id": TRACE, "span_id": PARENT}],
                                    "flags": 1,
                                    "somethingNew": {"x": 1},
                                }
                            ],
                            "schemaUrl": "https://example",
                        }
                    ],
                }
            ],
            "extra": True,
        }
    )
    record = decode_json(body).spans[0]
    assert (record.trace_id, record.span_id, record.parent_span_id) == (TRACE, SPAN, PARENT)
    assert (record.start_time, record.end_time) == (5, 6)
    assert record.attributes == {"n": 4}
    assert record.resource == {"service.name": "a"}
    assert record.scope == {"name": "sc", "version": ""}
    assert record.events == [{"name": "e", "time_unix_nano": 5, "attributes": {}}]
    assert record.links == [{"trace_id": TRACE, "span_id": PARENT, "attributes": {}}]
    assert record.kind == "unspecified" and record.status_code == "unset"


# ---------------------------------------------------------------------------- undecodable


@pytest.mark.parametrize("body", [b"\xff\xff\xff\xff", b"\x0a\x05abc", b"not protobuf at all"])
def test_undecodable_protobuf_raises_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_protobuf(body)


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b"42",
        b'{"resourceSpans": 5}',
        b'{"resourceSpans": [5]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": 7}]}]}',
        b'{"resourceSpans": [{"resource": {"attributes": [{"value": {}}]}}]}',
        "\u00e9".encode("latin-1"),
    ],
)
def test_undecodable_json_raises_invalid_input(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        decode_json(body)


@pytest.mark.parametrize("body", [b"", b"{}", b'{"resourceSpans": []}'])
def test_empty_requests_decode_to_nothing(body: bytes) -> None:
    decoded = decode_json(body) if body else decode_protobuf(body)
    assert decoded.spans == [] and decoded.rejected == 0


def test_gc_is_enabled_again_after_decoding_even_on_error() -> None:
    assert gc.isenabled()
    decode_json(json_body(json_span()))
    assert gc.isenabled()
    with pytest.raises(InvalidInput):
        decode_json(b"[")
    assert gc.isenabled()


def test_json_any_values_off_the_fast_path() -> None:
    """One-member AnyValues take a shortcut; these shapes must still read as before."""
    attributes = [
        {"key": "two", "value": {"intValue": "3", "stringValue": "x"}},
        {"key": "unknown_first", "value": {"fooValue": 1, "stringValue": "y"}},
        {"key": "number_as_string", "value": {"stringValue": 5}},
        {"key": "null", "value": {"stringValue": None}},
        {"key": "unknown", "value": {"fooValue": "z"}},
        {"key": "bare", "value": "plain"},
        {"key": "arr", "value": {"arrayValue": {"values": [{"stringValue": "a"}, "b", {}]}}},
    ]
    record = decode_json(json_body(json_span(attributes=attributes))).spans[0]
    assert record.attributes == {
        "two": 3,
        "unknown_first": "y",
        "number_as_string": "5",
        "null": None,
        "unknown": None,
        "bare": "plain",
        "arr": ["a", "b", None],
    }


def test_protobuf_any_value_string_index_reads_as_none() -> None:
    span = pb_span()
    kv = span.attributes.add()
    kv.key = "indexed"
    kv.value.string_value_strindex = 3
    kv = span.attributes.add()
    kv.key = "nested"
    kv.value.array_value.values.add().double_value = 1.5
    kv.value.array_value.values.add().bool_value = False
    attributes = decode_protobuf(pb_request(span)).spans[0].attributes
    assert attributes == {"indexed": None, "nested": [1.5, False]}
