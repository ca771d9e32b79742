"""The pattern learner's writes (evolution_store/pattern_writes.py) through the store, on both
backends: upsert by id, stale rows by scope, applied rows kept, and refused input."""

from __future__ import annotations

import pytest
from factories import pattern

from evolution_store import Conflict, EvolutionStore, InvalidInput, NotFound
from evolution_store.pattern_writes import pattern_id


async def all_patterns(store: EvolutionStore) -> dict[str, dict]:
    page = await store.list_patterns(limit=1000)
    return {item["id"]: item for item in page.items}


async def test_a_new_pattern_is_stored_as_given_with_the_store_s_parts(
    store: EvolutionStore,
) -> None:
    made = pattern()
    counts = await store.save_patterns([made], scope={"agent": None})
    assert counts == {"new": 1, "updated": 0, "stale": 0}
    stored = await store.get_pattern(made["id"])
    for key in ("id", "kind", "context", "condition", "feature", "effect", "evidence"):
        assert stored[key] == made[key], key
    assert stored["explanation"] == made["explanation"]
    assert stored["status"] == "active" and stored["applied"] is None
    assert stored["first_seen"] == stored["last_seen"] > 0


async def test_mining_again_updates_the_same_row(store: EvolutionStore) -> None:
    await store.save_patterns([pattern(q=0.01)], scope={"agent": None})
    first = await store.get_pattern(pattern()["id"])
    again = pattern(q=0.002, difference=0.4, kind="success", explanation="now stronger")
    counts = await store.save_patterns([again], scope={"agent": None})
    assert counts == {"new": 0, "updated": 1, "stale": 0}
    stored = await all_patterns(store)
    assert list(stored) == [first["id"]]  # never a second row
    row = stored[first["id"]]
    assert row["evidence"]["q_value"] == 0.002 and row["effect"]["difference"] == 0.4
    assert row["explanation"] == "now stronger"
    assert row["first_seen"] == first["first_seen"] and row["last_seen"] > first["last_seen"]


async def test_what_a_run_no_longer_finds_goes_stale_and_comes_back(
    store: EvolutionStore,
) -> None:
    kept, dropped = pattern("model = gpt-4o"), pattern("tool search before answer")
    await store.save_patterns([kept, dropped], scope={"agent": None})
    counts = await store.save_patterns([kept], scope={"agent": None})
    assert counts == {"new": 0, "updated": 1, "stale": 1}
    stored = await all_patterns(store)
    assert stored[dropped["id"]]["status"] == "stale"
    assert stored[kept["id"]]["status"] == "active"
    # Stale rows are not counted again; found again, a row is active again.
    assert (await store.save_patterns([kept], scope={"agent": None}))["stale"] == 0
    await store.save_patterns([kept, dropped], scope={"agent": None})
    assert (await store.get_pattern(dropped["id"]))["status"] == "active"


async def test_an_agent_s_run_retires_only_that_agent_s_rows(store: EvolutionStore) -> None:
    support = pattern("model = a", agent="support")
    billing = pattern("model = a", agent="billing")
    overall = pattern("model = a", agent=None)
    await store.save_patterns([support, billing, overall], scope={"agent": None})
    assert len({support["id"], billing["id"], overall["id"]}) == 3  # contexts differ
    counts = await store.save_patterns([], scope={"agent": "support"})
    assert counts == {"new": 0, "updated": 0, "stale": 1}
    statuses = {key: row["status"] for key, row in (await all_patterns(store)).items()}
    assert statuses == {support["id"]: "stale", billing["id"]: "active", overall["id"]: "active"}
    # An overall run owns every row.
    assert (await store.save_patterns([], scope={"agent": None}))["stale"] == 2


async def test_an_applied_pattern_stays_applied(store: EvolutionStore) -> None:
    made = pattern()
    await store.save_patterns([made], scope={"agent": None})
    applied = await store.mark_pattern_applied(made["id"], {"action": "proposal", "by": "ops"})
    assert applied["status"] == "applied"
    assert applied["applied"]["action"] == "proposal"
    assert isinstance(applied["applied"]["applied_at"], int)
    with pytest.raises(Conflict, match="applied already"):
        await store.mark_pattern_applied(made["id"], {"action": "again"})
    # Found again, or not found at all: what was done about it is not undone.
    await store.save_patterns([pattern(q=0.0001)], scope={"agent": None})
    assert (await store.get_pattern(made["id"]))["status"] == "applied"
    assert (await store.save_patterns([], scope={"agent": None}))["stale"] == 0
    assert (await store.get_pattern(made["id"]))["applied"] == applied["applied"]
    with pytest.raises(NotFound):
        await store.mark_pattern_applied("0" * 16, {})


async def test_an_id_given_twice_keeps_the_lower_q(store: EvolutionStore) -> None:
    weaker, stronger = pattern(q=0.04), pattern(q=0.003, kind="optimization")
    counts = await store.save_patterns([weaker, stronger], scope={"agent": None})
    assert counts == {"new": 1, "updated": 0, "stale": 0}
    stored = await store.get_pattern(weaker["id"])
    assert stored["kind"] == "optimization" and stored["evidence"]["q_value"] == 0.003


def test_the_id_is_the_digest_of_context_and_condition() -> None:
    made = pattern("config.temperature <= 0.3", agent="support")
    assert pattern_id(made["context"], made["condition"]) == made["id"]
    swapped = {"task_name": None, "agent": "support"}  # key order does not matter
    assert pattern_id(swapped, made["condition"]) == made["id"]
    assert pattern_id({"agent": None, "task_name": None}, made["condition"]) != made["id"]


async def test_a_pattern_without_an_id_gets_the_digest(store: EvolutionStore) -> None:
    made = pattern()
    expected = made.pop("id")
    await store.save_patterns([made], scope={"agent": None})
    assert (await store.get_pattern(expected))["condition"] == made["condition"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "neutral"}, "kind must be one of"),
        ({"effect": [1, 2]}, "must be objects"),
        ({"evidence": {"q_value": 1.5}}, "within"),
        ({"evidence": {"q_value": float("nan")}}, "finite"),
        ({"evidence": {}}, "q_value must be a finite number"),
        ({"effect": {"difference": "big"}}, "difference must be a finite number"),
    ],
)
async def test_malformed_patterns_are_refused_and_nothing_is_stored(
    store: EvolutionStore, change: dict, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await store.save_patterns([pattern("ok = 1"), pattern(**change)], scope={"agent": None})
    assert await all_patterns(store) == {}


async def test_missing_parts_and_bad_scopes_are_refused(store: EvolutionStore) -> None:
    made = pattern()
    del made["explanation"]
    with pytest.raises(InvalidInput, match="lacks explanation"):
        await store.save_patterns([made], scope={"agent": None})
    for scope in ({"agent": 3}, {"agent": None, "task": "x"}):
        with pytest.raises(InvalidInput, match="scope"):
            await store.save_patterns([], scope=scope)
    # A run for one agent cannot store another context's pattern: it could never retire it.
    with pytest.raises(InvalidInput, match="must name that agent"):
        await store.save_patterns([pattern(agent=None)], scope={"agent": "support"})
    assert await all_patterns(store) == {}
