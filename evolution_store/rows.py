"""Stored rows as the dicts the API and the store return (JSON columns parsed, times ISO).

Reads and the reward write (which answers with the reward it stored) both shape rows here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

#: span ids listed in a reward's `span_ids` (its `span_count` counts them all)
MAX_LINKED_IDS = 1000


def _json(text: str | None, default: Any = None) -> Any:
    if text is None:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Escaped lone surrogates, stored by the writer's fallback, are valid JSON that only
        # the standard library will decode.
        return json.loads(text)


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat().replace("+00:00", "Z")


def task_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "name": m["name"],
        "input": _json(m["input"]),
        "status": m["status"],
        "metadata": _json(m["metadata"], {}),
        "tags": _json(m["tags"], []),
        "span_count": m["span_count"],
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
    }


def execution_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "task_id": m["task_id"],
        "attempt": m["attempt"],
        "status": m["status"],
        "config": _json(m["config"], {}),
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
        "ended_at": iso(m["ended_at"]),
    }


SPAN_JSON_COLUMNS = ("attributes", "events", "links", "resource", "scope", "tags")


def span_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    m = dict(m)
    m.pop("pk", None)
    m.pop("ingested_at", None)
    for name in SPAN_JSON_COLUMNS:
        m[name] = _json(m[name], [] if name in ("events", "links", "tags") else {})
    return m


def reward_dict(m: Mapping[str, Any], linked: list[str], linked_count: int) -> dict[str, Any]:
    return {
        "id": m["id"],
        "name": m["name"],
        "value": m["value"],
        "dimensions": _json(m["dimensions"], {}),
        "feedback": m["feedback"],
        "source": m["source"],
        "tags": _json(m["tags"], []),
        "metadata": _json(m["metadata"], {}),
        "created_at": iso(m["created_at"]),
        "target": {
            "kind": m["target_kind"],
            "span_id": m["target_span_id"],
            "trace_id": m["target_trace_id"],
            "execution_id": m["target_execution_id"],
            "task_id": m["target_task_id"],
            "links": _json(m["selectors"], None),
        },
        "resolved": m["resolved_at"] is not None,
        "resolved_at": iso(m["resolved_at"]),
        "span_ids": linked,
        "span_count": linked_count,
    }


def prompt_dict(m: Mapping[str, Any], labels: list[str]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "agent": m["agent"],
        "version": m["version"],
        "content": m["content"],
        "parent_ids": _json(m["parent_ids"], []),
        "status": m["status"],
        "labels": labels,
        "fitness": _json(m["fitness"]),
        "created_by": m["created_by"],
        "note": m["note"],
        "approved_by": m["approved_by"],
        "approved_at": iso(m["approved_at"]),
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
    }
