"""`evolution_store/models.py`: the shapes input takes before the store sees it.

Tags: every model that carries them takes a list of strings (or one string, as one tag) and
refuses anything else with a pydantic `ValidationError`, never a `TypeError` (which the API
would answer with a 500).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from evolution_store.models import RewardIn, SpanIn, TagsIn, TaskIn, clean_text, link_value_text


def _tagged(model: type, tags: object) -> list[str]:
    fields = {
        TaskIn: {"name": "t"},
        TagsIn: {},
        SpanIn: {"name": "s"},
        RewardIn: {"value": 1.0, "task_id": "t"},
    }[model]
    return model(**fields, tags=tags).tags


MODELS = [TaskIn, TagsIn, SpanIn, RewardIn]


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@pytest.mark.parametrize(
    "tags, expected",
    [
        (["a", "b"], ["a", "b"]),
        (["b", "a", "b"], ["b", "a"]),  # duplicates dropped, first order kept
        ("solo", ["solo"]),
        (("x", "y"), ["x", "y"]),  # the Python API passes tuples
        (["a\x00"], ["a\ufffd"]),
    ],
)
def test_tags_accepted(model, tags, expected):
    assert _tagged(model, tags) == expected


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
@pytest.mark.parametrize(
    "tags",
    [False, True, 0, 7, 3.5, {"a": 1}, {}, b"bytes", [1], [""], ["x" * 201], [None]],
    ids=repr,
)
def test_tags_refused_with_a_validation_error(model, tags):
    with pytest.raises(ValidationError) as refused:
        _tagged(model, tags)
    assert refused.value.errors()[0]["loc"] == ("tags",)


def test_missing_tags_are_empty():
    assert TaskIn(name="t").tags == []
    assert SpanIn(name="s", tags=None).tags == []


# -- ids, kinds and status codes of posted spans ------------------------------------------------


def test_span_ids_are_normalised() -> None:
    span = SpanIn(
        name="s",
        trace_id=" 4BF92F3577B34DA6A3CE929D0E0E4736 ",
        span_id="00F067AA0BA902B7",
        parent_span_id="00F067AA0BA902B8",
    )
    assert (span.trace_id, span.span_id, span.parent_span_id) == (
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "00f067aa0ba902b7",
        "00f067aa0ba902b8",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"trace_id": "0" * 32},
        {"trace_id": "a" * 31},
        {"trace_id": "g" * 32},
        {"span_id": "0" * 16},
        {"span_id": "a" * 17},
        {"parent_span_id": "xyz"},
        {"kind": "sideways"},
        {"status_code": "maybe"},
        {"name": ""},
        {"start_time": -1},
    ],
    ids=repr,
)
def test_bad_span_fields_are_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as refused:
        SpanIn(**{"name": "s", **fields})
    assert refused.value.errors()[0]["loc"][0] == next(iter(fields))


@pytest.mark.parametrize("parent", [None, "", "   ", "0" * 16])
def test_an_empty_or_zero_parent_means_a_root(parent: str | None) -> None:
    assert SpanIn(name="s", parent_span_id=parent).parent_span_id is None


def test_otlp_spellings_of_kind_and_status() -> None:
    span = SpanIn(name="s", kind="SPAN_KIND_CLIENT", status_code="STATUS_CODE_ERROR")
    assert (span.kind, span.status_code) == ("client", "error")
    assert SpanIn(name="s", kind="Server", status_code="OK").kind == "server"


def test_a_span_without_ids_or_start_gets_them() -> None:
    record = SpanIn(name="s\x00", unknown_field=1).to_record()
    assert len(record.trace_id) == 32 and len(record.span_id) == 16
    assert int(record.trace_id, 16) and int(record.span_id, 16)
    assert record.start_time > 0
    assert record.name == "s\ufffd"
    other = SpanIn(name="s").to_record()
    assert (other.trace_id, other.span_id) != (record.trace_id, record.span_id)


# -- reward targets and values ------------------------------------------------------------------


TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"span_id": SPAN}, "span"),
        ({"span_id": SPAN, "trace_id": TRACE}, "span"),
        ({"trace_id": TRACE}, "trace"),
        ({"execution_id": "e-1"}, "execution"),
        ({"task_id": "t-1"}, "task"),
        ({"links": {"session.id": "s-1"}}, "links"),
    ],
)
def test_reward_target_kinds(fields: dict[str, object], kind: str) -> None:
    assert RewardIn(value=1, **fields).target_kind == kind


def test_ids_beside_selectors_narrow_them() -> None:
    reward = RewardIn(value=1, links={"session.id": "s-1"}, span_id=SPAN.upper(), trace_id=TRACE)
    assert reward.target_kind == "links"
    assert reward.links == {"session.id": "s-1", "span_id": SPAN, "trace_id": TRACE}


@pytest.mark.parametrize("other", [{"task_id": "t"}, {"execution_id": "e"}])
def test_selectors_with_a_task_or_execution_are_two_targets(other: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="one target"):
        RewardIn(value=1, links={"k": "v"}, **other)


def test_selectors_are_checked_and_cleaned() -> None:
    reward = RewardIn(
        value=1,
        links={"k\x00": "v\x00", "n": 3, "flag": True, "trace_id": TRACE.upper(), "span_id": SPAN},
    )
    assert reward.links == {
        "k\ufffd": "v\ufffd",
        "n": 3,
        "flag": True,
        "trace_id": TRACE,
        "span_id": SPAN,
    }


@pytest.mark.parametrize(
    "links",
    [
        {"": "v"},
        {"k": None},
        {"k": ["list"]},
        {"k": {"a": 1}},
        {"k" * 201: "v"},
        {"k": "v" * 501},
        {"trace_id": "0" * 32},
        {"span_id": "not-hex"},
    ],
    ids=repr,
)
def test_bad_selectors_are_refused(links: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RewardIn(value=1, links=links)


def test_value_and_dimensions_fill_each_other() -> None:
    only_value = RewardIn(name="q", value=0.5, task_id="t")
    assert only_value.dimensions == {"q": 0.5}
    only_dimensions = RewardIn(dimensions={"a": 0.2, "b": 0.9}, task_id="t")
    assert (only_dimensions.value, only_dimensions.dimensions) == (0.2, {"a": 0.2, "b": 0.9})


@pytest.mark.parametrize(
    "fields",
    [
        {"value": 1e16},
        {"value": float("inf")},
        {"value": -float("inf")},
        {"value": 1.0, "dimensions": {"other": 2e15}},
        {"dimensions": {"a": float("nan")}},
    ],
    ids=repr,
)
def test_reward_values_are_bounded_scores(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="finite"):
        RewardIn(task_id="t", **fields)


def test_reward_models_refuse_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        RewardIn(value=1, task_id="t", colour="red")
    with pytest.raises(ValidationError):
        RewardIn(value=1, task_id="t", source="oracle")


# -- canonical text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("42", "42"),
        (42, "42"),
        (42.0, "42"),
        (42.5, "42.5"),
        (-0.0, "0"),
        (True, "true"),
        (False, "false"),
        ("true", "true"),
        (1e20, "100000000000000000000"),
    ],
)
def test_link_value_text(value: object, text: str) -> None:
    assert link_value_text(value) == text


def test_clean_text() -> None:
    plain = "ordinary ascii"
    assert clean_text(plain) is plain  # untouched, not copied
    assert clean_text("é 😀 中") == "é 😀 中"
    assert clean_text("a\x00b\x00") == "a\ufffdb\ufffd"
    assert clean_text("lone \ud800 and \udfff") == "lone \ufffd and \ufffd"
    assert clean_text("\x00\ud800é") == "\ufffd\ufffdé"
    assert clean_text("") == ""
