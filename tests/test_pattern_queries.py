"""Reads of the pattern learner's rows (evolution_store/pattern_queries.py) through the store,
on both backends: the order (q, then effect), cursor pages, every filter, refused input."""

from __future__ import annotations

import pytest
from factories import pattern

from evolution_store import EvolutionStore, InvalidInput, NotFound
from evolution_store.queries import encode_cursor


def conditions(page) -> list[str]:
    return [item["condition"] for item in page.items]


@pytest.fixture
async def mined(store: EvolutionStore) -> EvolutionStore:
    """Six patterns: q ties broken by the larger effect (either sign), then the id."""
    await store.save_patterns(
        [
            pattern("c", q=0.01, difference=0.1),
            pattern("a", q=0.001, difference=-0.2, kind="failure"),
            pattern("b", q=0.001, difference=0.3),
            pattern("d", q=0.04, difference=0.5, kind="optimization", agent="billing"),
            pattern("e", q=0.02, difference=0.2, agent=None),
            pattern("f", q=0.02, difference=0.2, agent="support", task_name="triage"),
        ],
        scope={"agent": None},
    )
    return store


async def test_sorted_by_q_then_effect_size(mined: EvolutionStore) -> None:
    page = await mined.list_patterns()
    assert conditions(page)[:3] == ["b", "a", "c"]
    tied = page.items[3:5]
    assert {item["condition"] for item in tied} == {"e", "f"}
    assert sorted(item["id"] for item in tied) == [item["id"] for item in tied]  # then by id
    assert conditions(page)[5] == "d" and page.next_cursor is None


async def test_cursor_pages_walk_the_same_order(mined: EvolutionStore) -> None:
    whole = conditions(await mined.list_patterns())
    walked: list[str] = []
    cursor = None
    for _ in range(10):
        page = await mined.list_patterns(limit=2, cursor=cursor)
        walked += conditions(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert walked == whole


async def test_filters(mined: EvolutionStore) -> None:
    assert conditions(await mined.list_patterns(kind="failure")) == ["a"]
    assert conditions(await mined.list_patterns(agent="billing")) == ["d"]
    assert conditions(await mined.list_patterns(agent="support")) == ["b", "a", "c", "f"]
    assert conditions(await mined.list_patterns(context="overall")) == ["e"]
    assert conditions(await mined.list_patterns(context="agent:support")) == ["b", "a", "c"]
    assert conditions(await mined.list_patterns(context="task:triage")) == ["f"]
    assert conditions(await mined.list_patterns(max_q=0.01)) == ["b", "a", "c"]
    assert conditions(await mined.list_patterns(status="stale")) == []
    await mined.save_patterns([pattern("b", q=0.001, difference=0.3)], scope={"agent": "support"})
    assert conditions(await mined.list_patterns(status="stale")) == ["a", "c", "f"]
    assert conditions(await mined.list_patterns(status="active", agent="support")) == ["b"]


async def test_get_one_pattern(mined: EvolutionStore) -> None:
    made = pattern("b", q=0.001, difference=0.3)
    stored = await mined.get_pattern(made["id"])
    assert stored["condition"] == "b" and stored["status"] == "active"
    assert stored["evidence"]["q_value"] == 0.001 and stored["effect"]["difference"] == 0.3
    with pytest.raises(NotFound, match="not found"):
        await mined.get_pattern("nope")


@pytest.mark.parametrize(
    ("filters", "field"),
    [
        ({"kind": "neutral"}, "kind"),
        ({"status": "gone"}, "status"),
        ({"context": "everywhere"}, "context"),
        ({"context": "agent:"}, "context"),
        ({"max_q": float("nan")}, "max_q"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"cursor": "!!"}, "cursor"),
        ({"cursor": encode_cursor([0.1, "big", "id"])}, "cursor"),
        ({"cursor": encode_cursor([True, 0.1, "id"])}, "cursor"),
        ({"cursor": encode_cursor([0.1, 0.2, "a\x00"])}, "cursor"),
        ({"cursor": encode_cursor([0.1, 0.2])}, "cursor"),
    ],
)
async def test_bad_filters_name_their_field(
    store: EvolutionStore, filters: dict, field: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        await store.list_patterns(**filters)
    assert raised.value.field == field
