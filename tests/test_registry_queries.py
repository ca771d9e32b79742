"""The prompt registry's reads (evolution_store/registry_queries.py): lists and filters,
lineage both ways, diffs, and the sticky, weighted A/B assignment."""

from __future__ import annotations

from collections import Counter

import pytest

from evolution_store import EvolutionStore, InvalidInput, NotFound
from evolution_store.registry_models import PromptIn
from evolution_store.registry_queries import assign_variant


async def add(store: EvolutionStore, content: str, *parents: dict, **fields) -> dict:
    prompt, _ = await store.create_prompt(
        PromptIn(agent=fields.pop("agent", "bot"), content=content,
                 parent_ids=[p["id"] for p in parents], **fields)
    )  # fmt: skip
    return prompt


async def test_lists_filter_and_page_newest_first(store: EvolutionStore) -> None:
    made = [await add(store, f"v{i}", created_by="apo" if i % 2 else "human") for i in range(5)]
    await add(store, "elsewhere", agent="other")
    first = await store.list_prompts(agent="bot", limit=2)
    second = await store.list_prompts(agent="bot", limit=2, cursor=first.next_cursor)
    third = await store.list_prompts(agent="bot", limit=2, cursor=second.next_cursor)
    pages = [first.items, second.items, third.items]
    assert [[p["version"] for p in page] for page in pages] == [[5, 4], [3, 2], [1]]
    assert third.next_cursor is None
    by_apo = await store.list_prompts(created_by="apo")
    assert {p["id"] for p in by_apo.items} == {made[1]["id"], made[3]["id"]}
    latest = await store.list_prompts(label="latest")
    assert sorted(p["agent"] for p in latest.items) == ["bot", "other"]
    assert (await store.list_prompts(status="candidate")).items == []
    with pytest.raises(InvalidInput):
        await store.list_prompts(cursor="not-a-cursor")


async def test_lineage_walks_ancestors_and_descendants(store: EvolutionStore) -> None:
    root = await add(store, "root")
    left, right = await add(store, "left", root), await add(store, "right", root)
    merged = await add(store, "merged", left, right)
    child = await add(store, "child", merged)
    up = await store.prompt_lineage(child["id"])
    assert [p["content"] for p in up["ancestors"]][0] == "merged"
    assert {p["content"] for p in up["ancestors"]} == {"merged", "left", "right", "root"}
    assert up["descendants"] == []
    down = await store.prompt_lineage(root["id"])
    assert down["ancestors"] == []
    assert {p["content"] for p in down["descendants"]} == {"left", "right", "merged", "child"}
    assert all("status" in p and "fitness" in p for p in down["descendants"])
    with pytest.raises(NotFound):
        await store.prompt_lineage("missing")


async def test_diff_is_unified_from_the_other_prompt(store: EvolutionStore) -> None:
    old = await add(store, "Be brief.\nAnswer in English.\n")
    new = await add(store, "Be brief.\nAnswer in {{ language }}.\n", old)
    diff = await store.prompt_diff(new["id"], old["id"])
    assert (diff["from"], diff["to"]) == (old["id"], new["id"])
    lines = diff["diff"].splitlines()
    assert lines[0].startswith("--- bot v1") and lines[1].startswith("+++ bot v2")
    assert "-Answer in English." in lines and "+Answer in {{ language }}." in lines
    assert (await store.prompt_diff(new["id"], new["id"]))["diff"] == ""


def test_assignment_is_sticky_and_follows_the_weights() -> None:
    weights = [0.5, 0.3, 0.2]
    keys = [f"user-{i}" for i in range(10_000)]
    counts = Counter(assign_variant("exp-1", key, weights) for key in keys)
    for index, weight in enumerate(weights):
        assert abs(counts[index] / len(keys) - weight) <= 0.02, counts
    assert all(assign_variant("exp-1", key, weights) == assign_variant("exp-1", key, weights)
               for key in keys[:500])  # fmt: skip
    # Another experiment shuffles the keys anew.
    moved = sum(assign_variant("exp-2", key, weights) != assign_variant("exp-1", key, weights)
                for key in keys)  # fmt: skip
    assert moved > 1000
    assert assign_variant("exp-1", "k", [1.0, 0.0]) == 0
