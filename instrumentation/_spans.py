"""SDK spans as the plain span JSON the store speaks (the REST span body and `SpanRecord`).

Ids become lowercase hex, kinds and status codes lowercase names, times stay integer
nanoseconds, and attribute tuples become lists so the result is JSON-ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


def _attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {
        key: list(value) if isinstance(value, tuple) else value for key, value in attributes.items()
    }


def span_fields(span: ReadableSpan) -> dict[str, Any]:
    """The fields of one finished span, named as `SpanRecord` and `POST /spans` name them."""
    ctx = span.context
    parent = span.parent
    scope = span.instrumentation_scope
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": span.kind.name.lower(),
        "start_time": span.start_time,
        "end_time": span.end_time,
        "status_code": span.status.status_code.name.lower(),
        "status_message": span.status.description or "",
        "attributes": _attrs(span.attributes),
        "events": [
            {
                "name": event.name,
                "time_unix_nano": event.timestamp,
                "attributes": _attrs(event.attributes),
            }
            for event in span.events
        ],
        "links": [
            {
                "trace_id": format(link.context.trace_id, "032x"),
                "span_id": format(link.context.span_id, "016x"),
                "attributes": _attrs(link.attributes),
            }
            for link in span.links
        ],
        "resource": _attrs(span.resource.attributes),
        "scope": {"name": scope.name, "version": scope.version or ""} if scope else {},
    }
