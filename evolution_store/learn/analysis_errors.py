"""Recurring errors for the lab technician (`analysis`): error spans grouped by type and by a
message with its ids, numbers, paths and quoted values masked, so "user 1234 not found" and
"user 98 not found" count as one error."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ErrorGroups", "error_of", "normalise_message"]

#: example span ids kept per error group
EXAMPLES = 3
TOP_ERRORS = 10
MESSAGE_CHARS = 300

_UUID = r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
# Whole tokens only: the hex tail of `req-4f2a91c0` is part of an id, masked whole below.
_HEX = r"(?<![\w-])(?:0x[0-9a-f]+|(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,})(?![\w-])"
_MASKS = [
    (re.compile(_UUID, re.I), "<uuid>"),
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"]+", re.I), "<url>"),
    (re.compile(r"'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`"), "<str>"),
    (re.compile(r"(?:\b[a-z]:)?(?:[\\/][\w.@~+-]+){2,}[\\/]?", re.I), "<path>"),
    (re.compile(_HEX, re.I), "<hex>"),
    # a word with a digit in it: order-7781, req_42, abc123
    (re.compile(r"\b(?=[a-z_-]*\d)(?=\w*[a-z])[\w-]*\w\b", re.I), "<id>"),
    (re.compile(r"[-+]?\b\d+(?:[.,:]\d+)*(?:e[-+]?\d+)?"), "<n>"),
]


def normalise_message(message: str) -> str:
    """`message` with what varies between occurrences of one error masked, so they group:
    uuids, urls, quoted strings, paths, hex, ids (words with digits) and numbers, in that
    order; whitespace collapsed."""
    text = " ".join(message.split())[:MESSAGE_CHARS]
    for pattern, mask in _MASKS:
        text = pattern.sub(mask, text)
    return text


def error_of(status_message: str | None, events: str | None) -> tuple[str, str]:
    """(type, message) of an error span: its first `exception` event's type and message,
    else ("error", the status message)."""
    if events and '"exception"' in events:
        try:
            parsed = orjson.loads(events)
        except orjson.JSONDecodeError:
            parsed = []
        for event in parsed if isinstance(parsed, list) else []:
            if isinstance(event, dict) and event.get("name") == "exception":
                attributes = event.get("attributes") or {}
                kind = str(attributes.get("exception.type") or "error")
                message = attributes.get("exception.message") or status_message or ""
                return kind, str(message)
    return "error", status_message or ""


@dataclass(slots=True)
class _ErrorGroup:
    type: str
    message: str
    count: int = 0
    example_message: str = ""
    example_span_ids: list[str] = field(default_factory=list)
    names: Counter = field(default_factory=Counter)
    agents: Counter = field(default_factory=Counter)


class ErrorGroups:
    """A fold over error spans (rows of span_id, name, agent, status message, events JSON):
    groups by (type, normalised message), counting and keeping `EXAMPLES` span ids each."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], _ErrorGroup] = {}
        self.total = 0

    def add_rows(self, rows: Iterable[Any]) -> None:
        for span_id, name, agent, status_message, events in rows:
            kind, message = error_of(status_message, events)
            key = (kind, normalise_message(message))
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _ErrorGroup(kind, key[1], example_message=message)
            group.count += 1
            if len(group.example_span_ids) < EXAMPLES:
                group.example_span_ids.append(span_id)
            group.names[name] += 1
            if agent is not None:
                group.agents[agent] += 1
            self.total += 1

    def top(self, limit: int = TOP_ERRORS) -> list[dict[str, Any]]:
        """The groups, most frequent first (ties by type, then message)."""
        ordered = sorted(self._groups.values(), key=lambda g: (-g.count, g.type, g.message))
        return [
            {
                "type": group.type,
                "message": group.message,
                "count": group.count,
                "example_message": group.example_message[:MESSAGE_CHARS],
                "example_span_ids": group.example_span_ids,
                "span_names": [name for name, _ in group.names.most_common(3)],
                "agent": _most_common(group.agents),
            }
            for group in ordered[:limit]
        ]


def _most_common(counts: Counter) -> str | None:
    if not counts:
        return None
    return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]
