"""`promote`: task and execution ids, tags and promoted columns read from a span (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from factories import span_record

from evolution_store.promote import (
    PROMOTED_COLUMNS,
    PriceTable,
    first,
    ids_from_attributes,
    promoted_columns,
    tags_from_attributes,
)

PRICES = PriceTable({"gpt-x": (2.0, 10.0)})


def promoted(**overrides: Any) -> dict[str, Any]:
    record = span_record(**overrides)
    return dict(zip(PROMOTED_COLUMNS, promoted_columns(record, PRICES), strict=True))


# -- ids ----------------------------------------------------------------------------------------


def test_ids_from_the_resource_win_over_the_span() -> None:
    record = span_record(
        resource={"evolution.task.id": "from-resource"},
        attributes={"evolution.task.id": "from-span", "evolution.execution.id": "ex-span"},
    )
    assert ids_from_attributes(record) == ("from-resource", "ex-span")


def test_ids_given_as_fields_win_over_attributes() -> None:
    record = span_record(
        task_id="field-task",
        resource={"evolution.task.id": "from-resource", "evolution.execution.id": "ex-r"},
    )
    assert ids_from_attributes(record) == ("field-task", "ex-r")


def test_agent_lightning_ids_and_ours_take_turns() -> None:
    theirs = span_record(
        attributes={"agentlightning.rollout_id": "ro", "agentlightning.attempt_id": "at"}
    )
    assert ids_from_attributes(theirs) == ("ro", "at")
    both = span_record(attributes={"agentlightning.rollout_id": "ro", "evolution.task.id": "ours"})
    assert ids_from_attributes(both) == ("ours", None)  # ours first


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("  padded  ", "padded"),
        ("", None),
        ("   ", None),
        (42, "42"),
        ("x" * 300, "x" * 200),
        ("a\x00b", "a\ufffdb"),
    ],
)
def test_ids_are_cleaned_text(value: Any, expected: str | None) -> None:
    record = span_record(attributes={"evolution.task.id": value})
    assert ids_from_attributes(record)[0] == expected


def test_a_span_naming_no_ids() -> None:
    assert ids_from_attributes(span_record(attributes={"other": 1})) == (None, None)


# -- tags ---------------------------------------------------------------------------------------


def test_tags_from_fields_attributes_and_agent_lightning_in_order() -> None:
    record = span_record(
        tags=["given"],
        attributes={
            "evolution.tags": ["listed", 7, "given"],
            "agentlightning.tag.0": "al-0",
            "agentlightning.tag.1": "al-1",
            "agentlightning.tag.2": 3,  # not text: skipped
        },
    )
    assert tags_from_attributes(record) == ["given", "listed", "7", "al-0", "al-1"]


def test_a_single_tag_string_and_no_tags() -> None:
    assert tags_from_attributes(span_record(attributes={"evolution.tags": "one"})) == ["one"]
    assert tags_from_attributes(span_record(attributes={"agentlightning.tag.1": "x"})) == []
    assert tags_from_attributes(span_record()) == []


# -- promoted columns ---------------------------------------------------------------------------


def test_the_first_present_source_wins() -> None:
    assert first({"a": "", "b": None, "c": 0, "d": 1}, ("a", "b", "c", "d")) == 0
    assert first({}, ("a",)) is None
    row = promoted(
        attributes={
            "agent.name": "second",
            "gen_ai.agent.name": "",
            "evolution.agent": "third",
            "gen_ai.request.model": "requested",
            "gen_ai.response.model": "responded",
        },
        resource={"service.name": "svc"},
    )
    assert (row["agent"], row["model"]) == ("second", "responded")


def test_agent_falls_back_to_the_service_name() -> None:
    assert promoted(resource={"service.name": "svc"})["agent"] == "svc"
    assert promoted()["agent"] is None


def test_tokens_only_on_llm_spans() -> None:
    usage = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 3}
    llm = promoted(attributes={"gen_ai.operation.name": "chat", **usage})
    assert (llm["input_tokens"], llm["output_tokens"]) == (10, 3)
    agent = promoted(attributes={"gen_ai.operation.name": "invoke_agent", **usage})
    assert (agent["input_tokens"], agent["output_tokens"]) == (None, None)
    no_operation = promoted(attributes=usage)
    assert no_operation["input_tokens"] is None


def test_openinference_llm_spans_count_tokens() -> None:
    row = promoted(
        attributes={
            "openinference.span.kind": "LLM",
            "llm.model_name": "gpt-x",
            "llm.token_count.prompt": "1000",
            "llm.token_count.completion": 100,
        }
    )
    assert (row["operation"], row["model"]) == ("LLM", "gpt-x")
    assert (row["input_tokens"], row["output_tokens"]) == (1000, 100)
    assert row["cost"] == pytest.approx((1000 * 2.0 + 100 * 10.0) / 1e6)


@pytest.mark.parametrize("bad", [-1, True, "many", None, [1]])
def test_token_counts_that_are_not_counts_are_dropped(bad: Any) -> None:
    row = promoted(attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": bad})
    assert row["input_tokens"] is None


def test_cost_carried_wins_over_the_price_table() -> None:
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.usage.input_tokens": 1_000_000,
    }
    assert promoted(attributes=attributes)["cost"] == pytest.approx(2.0)
    assert promoted(attributes={**attributes, "llm.cost.total": 0.5})["cost"] == 0.5
    assert promoted(attributes={"llm.cost.total": "0.25"})["cost"] == 0.25  # any span
    # a carried cost that is not a number falls back to the table
    assert promoted(attributes={**attributes, "llm.cost.total": "nan"})["cost"] == pytest.approx(
        2.0
    )


def test_price_table() -> None:
    assert PRICES.cost("gpt-x", 1_000_000, None) == pytest.approx(2.0)
    assert PRICES.cost("gpt-x", None, 1_000_000) == pytest.approx(10.0)
    assert PRICES.cost("gpt-x", None, None) is None
    assert PRICES.cost("unknown", 10, 10) is None
    assert PRICES.cost(None, 10, 10) is None
    assert PriceTable().cost("gpt-x", 10, 10) is None
    unpriced = promoted(
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "other",
            "gen_ai.usage.input_tokens": 5,
        }
    )
    assert unpriced["cost"] is None


def test_duration() -> None:
    assert promoted(start_time=1_000, end_time=1_500)["duration_ns"] == 500
    assert promoted(start_time=1_000, end_time=1_000)["duration_ns"] == 0
    assert promoted(start_time=1_000, end_time=999)["duration_ns"] is None
    assert promoted(start_time=1_000, end_time=None)["duration_ns"] is None


def test_promoted_text_is_cut_and_cleaned() -> None:
    row = promoted(
        attributes={
            "gen_ai.agent.name": "a" * 600,
            "gen_ai.operation.name": "o\x00" + "p" * 200,
            "gen_ai.request.model": "m\ud800" + "m" * 600,
        }
    )
    assert row["agent"] == "a" * 500
    assert row["operation"] == "o\ufffd" + "p" * 98
    assert row["model"] == "m\ufffd" + "m" * 498
