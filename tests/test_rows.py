"""`rows`: stored rows shaped as the API returns them, from plain mappings (no database)."""

from __future__ import annotations

from typing import Any

import pytest

from evolution_store.rows import execution_dict, iso, reward_dict, span_dict, task_dict

NS = 1_700_000_000_500_000_000


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (None, None),
        (0, "1970-01-01T00:00:00Z"),
        (1_700_000_000_000_000_000, "2023-11-14T22:13:20Z"),
        (NS, "2023-11-14T22:13:20.500000Z"),
    ],
)
def test_iso(ns: int | None, text: str | None) -> None:
    assert iso(ns) == text


def test_task_dict_parses_json_and_fills_defaults() -> None:
    row = {
        "id": "t-1",
        "name": "solve",
        "input": '{"q": [1, 2]}',
        "status": "queued",
        "metadata": None,
        "tags": None,
        "span_count": 3,
        "created_at": NS,
        "updated_at": None,
        "origin": "api",  # columns the API does not show are left out
    }
    assert task_dict(row) == {
        "id": "t-1",
        "name": "solve",
        "input": {"q": [1, 2]},
        "status": "queued",
        "metadata": {},
        "tags": [],
        "span_count": 3,
        "created_at": "2023-11-14T22:13:20.500000Z",
        "updated_at": None,
    }
    assert task_dict({**row, "input": None, "tags": '["a"]'})["input"] is None


def test_execution_dict() -> None:
    row = {
        "id": "e-1",
        "task_id": "t-1",
        "attempt": 2,
        "status": "failed",
        "config": '{"prompt": "v2"}',
        "created_at": 0,
        "updated_at": 0,
        "ended_at": None,
        "origin": "span",
    }
    shaped = execution_dict(row)
    assert shaped["config"] == {"prompt": "v2"}
    assert (shaped["attempt"], shaped["ended_at"], shaped["created_at"]) == (
        2,
        None,
        "1970-01-01T00:00:00Z",
    )
    assert "origin" not in shaped
    assert execution_dict({**row, "config": None})["config"] == {}


def _span_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "pk": 7,
        "ingested_at": NS,
        "trace_id": "a" * 32,
        "span_id": "b" * 16,
        "name": "chat",
        "attributes": '{"k": 1}',
        "events": None,
        "links": None,
        "resource": None,
        "scope": '{"name": "lib"}',
        "tags": '["x"]',
    }
    row.update(overrides)
    return row


def test_span_dict_drops_internal_columns_and_parses_json() -> None:
    row = _span_row()
    shaped = span_dict(row)
    assert "pk" not in shaped and "ingested_at" not in shaped
    assert shaped["attributes"] == {"k": 1}
    assert (shaped["events"], shaped["links"], shaped["resource"]) == ([], [], {})
    assert (shaped["scope"], shaped["tags"]) == ({"name": "lib"}, ["x"])
    assert shaped["name"] == "chat"
    assert row["pk"] == 7  # the mapping it was given is left alone


def test_escaped_lone_surrogates_are_read_back() -> None:
    # Valid JSON that orjson refuses to decode; the standard library reads it.
    shaped = span_dict(_span_row(attributes='{"k": "a\\ud800b"}'))
    assert shaped["attributes"] == {"k": "a\ud800b"}


def _reward_row(**overrides: Any) -> dict[str, Any]:
    row = {
        "id": "r-1",
        "name": "quality",
        "value": 0.5,
        "dimensions": '{"quality": 0.5}',
        "feedback": None,
        "source": "code",
        "tags": None,
        "metadata": None,
        "created_at": NS,
        "target_kind": "span",
        "target_span_id": "b" * 16,
        "target_trace_id": None,
        "target_execution_id": None,
        "target_task_id": None,
        "selectors": None,
        "resolved_at": None,
    }
    row.update(overrides)
    return row


def test_reward_dict_pending() -> None:
    shaped = reward_dict(_reward_row(), [], 0)
    assert shaped["target"] == {
        "kind": "span",
        "span_id": "b" * 16,
        "trace_id": None,
        "execution_id": None,
        "task_id": None,
        "links": None,
    }
    assert (shaped["resolved"], shaped["resolved_at"]) == (False, None)
    assert (shaped["dimensions"], shaped["tags"], shaped["metadata"]) == ({"quality": 0.5}, [], {})
    assert (shaped["span_ids"], shaped["span_count"]) == ([], 0)


def test_reward_dict_resolved_with_links() -> None:
    row = _reward_row(
        target_kind="links", target_span_id=None, selectors='{"session": "s-1"}', resolved_at=0
    )
    shaped = reward_dict(row, ["c" * 16], 1500)  # more linked than listed
    assert shaped["target"]["links"] == {"session": "s-1"}
    assert (shaped["resolved"], shaped["resolved_at"]) == (True, "1970-01-01T00:00:00Z")
    assert (shaped["span_ids"], shaped["span_count"]) == (["c" * 16], 1500)
