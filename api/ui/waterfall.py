"""A trace's spans as waterfall rows: in tree order (each span followed by its children, by
start time), with their depth, and their offset and width as percentages of the trace's
span of time. The `waterfall` macro of `templates/_macros.html` draws these rows; the static
report calls `waterfall_rows` on the spans it read and uses the same macro.

    rows = waterfall_rows(spans, href=lambda s: f"/traces/{s['trace_id']}?span={s['span_id']}")
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .svg import fmt_duration


def tree_order(spans: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """(depth, span) with each span after its parent and siblings by start time. A span whose
    parent is not among `spans` is a root; a parent cycle is broken where it closes."""
    known = {span["span_id"] for span in spans}
    children: dict[str | None, list[Mapping[str, Any]]] = defaultdict(list)
    for span in sorted(spans, key=lambda s: (s["start_time"], s["span_id"])):
        parent = span.get("parent_span_id")
        children[parent if parent in known and parent != span["span_id"] else None].append(span)
    ordered: list[tuple[int, Mapping[str, Any]]] = []
    seen: set[str] = set()
    stack = [(0, span) for span in reversed(children[None])]
    while stack:
        depth, span = stack.pop()
        if span["span_id"] in seen:
            continue
        seen.add(span["span_id"])
        ordered.append((depth, span))
        stack.extend((depth + 1, child) for child in reversed(children[span["span_id"]]))
    # Spans only reachable through a cycle have no root: shown at the top level, last.
    ordered += [(0, span) for span in spans if span["span_id"] not in seen]
    return ordered


def waterfall_rows(
    spans: Sequence[Mapping[str, Any]],
    *,
    href: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> list[dict[str, Any]]:
    """Rows for the `waterfall` macro: the span's fields plus `depth`, `offset_pct`,
    `width_pct`, `offset_text`, `duration_text`, `tokens`, `is_error` and `href`."""
    if not spans:
        return []
    start = min(span["start_time"] for span in spans)
    end = max(_end(span) for span in spans)
    total = max(end - start, 1)
    rows = []
    for depth, span in tree_order(spans):
        span_end = _end(span)
        tokens = (span.get("input_tokens") or 0) + (span.get("output_tokens") or 0)
        rows.append(
            {
                **span,
                "depth": depth,
                "offset_pct": round(100 * (span["start_time"] - start) / total, 3),
                "width_pct": round(max(100 * (span_end - span["start_time"]) / total, 0.2), 3),
                "offset_text": fmt_duration(span["start_time"] - start),
                "duration_text": fmt_duration(span_end - span["start_time"]),
                "tokens": tokens or None,
                "is_error": span.get("status_code") == "error",
                "href": href(span) if href else None,
            }
        )
    return rows


def _end(span: Mapping[str, Any]) -> int:
    end = span.get("end_time")
    return end if end is not None and end >= span["start_time"] else span["start_time"]
