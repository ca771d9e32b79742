"""Decoding OTLP trace exports (protobuf or JSON) into `SpanRecord`s.

Both receivers (HTTP `POST /v1/traces`, gRPC `TraceService/Export`) decode through this module
(in `otlp_decode_pool` workers or on the loop); the records then take the shared ingest path
(`span_rows.prepare_spans`, which also reads the rewards some spans carry). Decoding is pure,
so it is tested without a store.

Why not `google.protobuf.json_format`: OTLP/JSON ids are hex strings, and `json_format.Parse`
silently base64-decodes them into 24- and 12-byte ids (OTLP_NOTES, "OTLP/JSON traps"). It is also
slow. The JSON path walks `orjson` output itself; the protobuf path iterates the parsed message
directly. Both build the same records, with per-span work kept to attribute conversion: the
resource and scope dicts are built once per `ResourceSpans`/`ScopeSpans` and *shared* by every
span under them (consumers must not mutate them).

Rules (OTLP_NOTES): ids become lowercase hex; a trace or span id that is all zeros or of the
wrong length rejects that span alone, and the span is counted in `rejected`; an empty or all-zero
parent id means a root span. `task_id`/`execution_id` are left to the writer, which derives them
from attributes and resource (`promote.ids_from_attributes`).
"""

from __future__ import annotations

import base64
import binascii
import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from .errors import InvalidInput
from .models import SPAN_KINDS, STATUS_CODES, SpanRecord
from .partial_success import PartialSuccess

__all__ = ["DecodedRequest", "decode_json", "decode_message", "decode_protobuf"]

logger = logging.getLogger("evolution_store.otlp")

MAX_NAME_LENGTH = 1000  # spans.name is VARCHAR(1000); a longer name must not fail the batch

#: Times go into BIGINT columns: a fixed64 at or past 2**63 would fail the whole transaction.
MAX_TIME = 2**63 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
_KIND_COUNT = len(SPAN_KINDS)
_STATUS_COUNT = len(STATUS_CODES)


@dataclass
class DecodedRequest(PartialSuccess):
    """One export request, decoded: the spans to store, and what was rejected (`reject`,
    `rejected`, `error_message`: OTLP's `partial_success`)."""

    spans: list[SpanRecord] = field(default_factory=list)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while a request is decoded.

    A large export allocates hundreds of thousands of dicts and lists that form no cycles; with
    the GC on, those allocations trigger repeated collections whose cost grows with the heap
    (bench/README.md, "Decoding"). Decoding never awaits, so the pause is
    as long as one decode; the GC resumes (and catches up) right after.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# ---------------------------------------------------------------------------------- protobuf


def decode_protobuf(body: bytes) -> DecodedRequest:
    """Decode a binary `ExportTraceServiceRequest`.

    Raises `InvalidInput` when the bytes are not a valid message (HTTP 400 / INVALID_ARGUMENT).
    """
    try:
        message = ExportTraceServiceRequest.FromString(body)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidInput(f"body is not a valid ExportTraceServiceRequest: {exc}") from exc
    return decode_message(message)


def decode_message(msg: ExportTraceServiceRequest) -> DecodedRequest:
    """Turn a parsed `ExportTraceServiceRequest` into records; never raises for bad spans (they
    are rejected alone and counted)."""
    with _gc_paused():
        return _decode_message(msg)


def _decode_message(msg: ExportTraceServiceRequest) -> DecodedRequest:
    out = DecodedRequest()
    spans = out.spans
    for resource_spans in msg.resource_spans:
        resource = _pb_attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope_msg = scope_spans.scope
            scope = {"name": scope_msg.name, "version": scope_msg.version}
            for span in scope_spans.spans:
                record = _pb_span(span, resource, scope, out)
                if record is not None:
                    spans.append(record)
    return out


#: Unbound, so each call skips the instance lookup upb does first (it searches the message's
#: fields for the name): this runs for every attribute (bench/README.md, "Decoding").
_which_oneof = AnyValue.WhichOneof
_SCALAR_MEMBERS = frozenset(("string_value", "int_value", "double_value", "bool_value"))


def _pb_value(value: Any) -> Any:
    which = _which_oneof(value, "value")
    if which in _SCALAR_MEMBERS:
        return getattr(value, which)
    if which == "array_value":
        # As in `_pb_attributes`: a non-empty string settles an item in one read; for anything
        # else (an empty string included) `_pb_value` asks the oneof.
        return [item.string_value or _pb_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return _pb_attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def _pb_attributes(attributes: Any) -> dict[str, Any]:
    # The hot loop of protobuf decoding. Most values are non-empty strings: one field read
    # settles those, cheaper than asking for the oneof first; an empty string means another
    # type (or an empty string), which the oneof tells apart. Other scalars are read inline
    # rather than through a `_pb_value` call.
    out: dict[str, Any] = {}
    for kv in attributes:
        value = kv.value
        text = value.string_value
        if text:
            out[kv.key] = text
            continue
        which = _which_oneof(value, "value")
        out[kv.key] = getattr(value, which) if which in _SCALAR_MEMBERS else _pb_value(value)
    return out


def _pb_span(
    span: Any, resource: dict[str, Any], scope: dict[str, Any], out: DecodedRequest
) -> SpanRecord | None:
    name = span.name
    trace_id = span.trace_id
    span_id = span.span_id
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        out.reject(f"span {name[:100]!r}: trace_id must be 16 bytes and not all zero")
        return None
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        out.reject(f"span {name[:100]!r}: span_id must be 8 bytes and not all zero")
        return None
    parent = span.parent_span_id
    if not parent or parent == _ZERO_SPAN:
        parent_hex = None
    elif len(parent) != 8:
        out.reject(f"span {span_id.hex()}: parent_span_id must be 8 bytes")
        return None
    else:
        parent_hex = parent.hex()
    start = span.start_time_unix_nano
    end = span.end_time_unix_nano
    if start > MAX_TIME or end > MAX_TIME:
        out.reject(f"span {span_id.hex()}: timestamp out of range")
        return None
    if len(name) > MAX_NAME_LENGTH:
        name = name[:MAX_NAME_LENGTH]
    kind = span.kind
    status = span.status
    code = status.code

    # Most spans have no events and no links: asking whether a list is empty is much cheaper
    # than iterating an empty one.
    events: list[dict[str, Any]] = []
    span_events = span.events
    if span_events:
        for event in span_events:
            events.append(
                {
                    "name": event.name,
                    "time_unix_nano": event.time_unix_nano,
                    "attributes": _pb_attributes(event.attributes),
                }
            )
    span_links = span.links
    links = (
        [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "attributes": _pb_attributes(link.attributes),
            }
            for link in span_links
        ]
        if span_links
        else []
    )
    attributes = _pb_attributes(span.attributes)
    return SpanRecord(
        trace_id=trace_id.hex(),
        span_id=span_id.hex(),
        name=name,
        start_time=start,
        end_time=end or None,
        parent_span_id=parent_hex,
        kind=SPAN_KINDS[kind] if 0 <= kind < _KIND_COUNT else "unspecified",
        status_code=STATUS_CODES[code] if 0 <= code < _STATUS_COUNT else "unset",
        status_message=status.message,
        attributes=attributes,
        events=events,
        links=links,
        resource=resource,
        scope=scope,
    )


# -------------------------------------------------------------------------------------- JSON


def decode_json(body: bytes) -> DecodedRequest:
    """Decode an OTLP/JSON `ExportTraceServiceRequest` (hex ids, integer enums, 64-bit integers
    as strings or numbers, lowerCamelCase or snake_case keys, unknown fields ignored).

    Raises `InvalidInput` when the body is not JSON or not the OTLP shape; a malformed span
    inside a well-formed request is rejected alone.
    """
    with _gc_paused():
        return _decode_json(body)


def _decode_json(body: bytes) -> DecodedRequest:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise InvalidInput("body must be a JSON object (ExportTraceServiceRequest)")
    resource_spans_list = _get(document, "resourceSpans", "resource_spans")
    if resource_spans_list is None:
        return DecodedRequest()
    if not isinstance(resource_spans_list, list):
        raise InvalidInput("resourceSpans must be an array")
    out = DecodedRequest()
    for resource_spans in resource_spans_list:
        try:
            resource, scoped = _json_resource(resource_spans)
        except (TypeError, ValueError, AttributeError, LookupError) as exc:
            raise InvalidInput(f"malformed resourceSpans entry: {exc!r}") from exc
        for scope, spans in scoped:
            for span in spans:
                try:
                    record = _json_span(span, resource, scope, out)
                except (TypeError, ValueError, AttributeError, LookupError, OverflowError) as exc:
                    out.reject(f"malformed span: {type(exc).__name__}: {str(exc)[:200]}")
                    continue
                if record is not None:
                    out.spans.append(record)
    return out


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _json_resource(
    resource_spans: Any,
) -> tuple[dict[str, Any], list[tuple[dict[str, Any], list[Any]]]]:
    if not isinstance(resource_spans, dict):
        raise TypeError("resourceSpans items must be objects")
    resource_obj = resource_spans.get("resource") or {}
    resource = _json_attributes(resource_obj.get("attributes"))
    scoped: list[tuple[dict[str, Any], list[Any]]] = []
    for scope_spans in _get(resource_spans, "scopeSpans", "scope_spans") or ():
        if not isinstance(scope_spans, dict):
            raise TypeError("scopeSpans items must be objects")
        scope_obj = scope_spans.get("scope") or {}
        scope = {
            "name": str(scope_obj.get("name") or ""),
            "version": str(scope_obj.get("version") or ""),
        }
        spans = scope_spans.get("spans") or []
        if not isinstance(spans, list):
            raise TypeError("spans must be an array")
        scoped.append((scope, spans))
    return resource, scoped


def _int(value: Any) -> int:
    """An OTLP/JSON int64 (a number or a decimal string); out of range raises ValueError, as a
    proto3 JSON parser would, so the span is rejected instead of failing the database write."""
    number = value if type(value) is int else int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError("integer out of int64 range")
    return number


def _time(value: Any) -> int:
    number = value if type(value) is int else int(value)
    if not 0 <= number <= MAX_TIME:
        raise ValueError("timestamp out of range")
    return number


def _double(value: Any) -> float:
    return float(value)  # proto3 JSON also allows "NaN", "Infinity", "-Infinity"


def _bool(value: Any) -> bool:
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def _bytes_value(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _array_value(value: Any) -> list[Any]:
    return [_json_value(item) for item in (value or {}).get("values") or ()]


def _kvlist_value(value: Any) -> dict[str, Any]:
    return _json_attributes((value or {}).get("values"))


_JSON_VALUE_READERS = {
    "stringValue": str,
    "intValue": _int,
    "doubleValue": _double,
    "boolValue": _bool,
    "arrayValue": _array_value,
    "kvlistValue": _kvlist_value,
    "bytesValue": _bytes_value,  # already base64 in OTLP/JSON, which is what we store
    "string_value": str,
    "int_value": _int,
    "double_value": _double,
    "bool_value": _bool,
    "array_value": _array_value,
    "kvlist_value": _kvlist_value,
    "bytes_value": _bytes_value,
}


def _json_value(value: Any) -> Any:
    if type(value) is dict and len(value) == 1:
        item = value.get("stringValue")
        if type(item) is str:
            return item  # the usual case, inside arrays too
    if not value:
        return None
    if not isinstance(value, dict):
        return value  # lenient: a bare value instead of an AnyValue object
    for key, item in value.items():
        reader = _JSON_VALUE_READERS.get(key)
        if reader is not None and item is not None:
            return reader(item)
    return None


def _json_attributes(attributes: Any) -> dict[str, Any]:
    if not attributes:
        return {}
    if isinstance(attributes, dict):
        return dict(attributes)  # lenient: a plain mapping instead of a KeyValue list
    # The hot loop of JSON decoding. An AnyValue with one member (what exporters send) is read
    # inline; anything else goes through `_json_value`. Same result either way: the key is read
    # first, so a malformed pair fails with the same exception as before.
    out: dict[str, Any] = {}
    readers = _JSON_VALUE_READERS
    for kv in attributes:
        key = kv["key"]
        value = kv.get("value")
        if type(value) is dict and len(value) == 1:
            item = value.get("stringValue")
            if type(item) is str:
                out[key] = item
                continue
            ((member, item),) = value.items()
            reader = readers.get(member)
            out[key] = None if reader is None or item is None else reader(item)
        else:
            out[key] = _json_value(value)
    return out


def _json_id(value: Any, size: int) -> str | None:
    """Lowercase hex of an id of `size` bytes, or None if it is not one.

    OTLP/JSON ids are hex; base64 (what `json_format.MessageToJson` writes) is accepted too,
    since its lengths (24/12 characters) can never be mistaken for hex ones (32/16)."""
    if not isinstance(value, str):
        return None
    if len(value) == 2 * size:
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            return None
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return None
    if len(raw) != size or not any(raw):
        return None
    return raw.hex()


def _link_id(value: Any, size: int) -> str:
    """Link ids are kept even when invalid (a bad link must not reject its span)."""
    return _json_id(value, size) or str(value or "").lower()


def _json_enum(value: Any, names: tuple[str, ...], prefix: str) -> str:
    if value is None:
        return names[0]
    if isinstance(value, str):
        text = value.strip().lower()
        if not text.isdigit():
            text = text.removeprefix(prefix)
            return text if text in names else names[0]
        value = int(text)
    index = int(value)
    return names[index] if 0 <= index < len(names) else names[0]


def _json_span(
    span: Any, resource: dict[str, Any], scope: dict[str, Any], out: DecodedRequest
) -> SpanRecord | None:
    if not isinstance(span, dict):
        raise TypeError("span must be an object")
    name = span.get("name") or ""
    if not isinstance(name, str):
        name = str(name)
    trace_id = _json_id(_get(span, "traceId", "trace_id"), 16)
    if trace_id is None:
        out.reject(f"span {name[:100]!r}: traceId must be 32 hex characters, not all zero")
        return None
    span_id = _json_id(_get(span, "spanId", "span_id"), 8)
    if span_id is None:
        out.reject(f"span {name[:100]!r}: spanId must be 16 hex characters, not all zero")
        return None
    parent_raw = _get(span, "parentSpanId", "parent_span_id")
    parent_id = None
    if parent_raw and parent_raw.strip("0"):
        parent_id = _json_id(parent_raw, 8)
        if parent_id is None:
            out.reject(f"span {span_id}: parentSpanId must be 16 hex characters")
            return None
    if len(name) > MAX_NAME_LENGTH:
        name = name[:MAX_NAME_LENGTH]
    status = span.get("status") or {}
    start = _get(span, "startTimeUnixNano", "start_time_unix_nano")
    end = _get(span, "endTimeUnixNano", "end_time_unix_nano")

    events: list[dict[str, Any]] = []
    for event in span.get("events") or ():
        event_name = str(event.get("name") or "")
        time = _get(event, "timeUnixNano", "time_unix_nano")
        events.append(
            {
                "name": event_name,
                "time_unix_nano": _time(time) if time is not None else 0,
                "attributes": _json_attributes(event.get("attributes")),
            }
        )
    links = [
        {
            "trace_id": _link_id(_get(link, "traceId", "trace_id"), 16),
            "span_id": _link_id(_get(link, "spanId", "span_id"), 8),
            "attributes": _json_attributes(link.get("attributes")),
        }
        for link in span.get("links") or ()
    ]
    attributes = _json_attributes(span.get("attributes"))
    message = status.get("message")
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        name=name,
        start_time=_time(start) if start is not None else 0,
        end_time=(_time(end) or None) if end is not None else None,
        parent_span_id=parent_id,
        kind=_json_enum(span.get("kind"), SPAN_KINDS, "span_kind_"),
        status_code=_json_enum(status.get("code"), STATUS_CODES, "status_code_"),
        status_message=message if isinstance(message, str) else "",
        attributes=attributes,
        events=events,
        links=links,
        resource=resource,
        scope=scope,
    )
