"""The prompt registry's writes (evolution_store/prompt_writes.py) through the store, on both
backends: versions, idempotent posts, the lifecycle, approval and rollback, labels, markers."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from evolution_store import Conflict, EvolutionStore, InvalidInput, NotFound
from evolution_store.registry_models import ApproveIn, PromptIn, PromptStatusIn


async def new_prompt(store: EvolutionStore, content: str, **fields) -> dict:
    prompt, created = await store.create_prompt(PromptIn(agent="bot", content=content, **fields))
    assert created
    return prompt


async def candidate(store: EvolutionStore, content: str) -> dict:
    return await new_prompt(store, content, status="candidate")


async def test_versions_count_up_per_agent_and_posts_are_idempotent(store: EvolutionStore) -> None:
    first = await new_prompt(store, "You are {{ role }}.")
    second = await new_prompt(store, "You are a {{ role }}.", parent_ids=[first["id"]])
    other, _ = await store.create_prompt(PromptIn(agent="other", content="You are {{ role }}."))
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert second["parent_ids"] == [first["id"]] and second["status"] == "draft"
    # The same agent, content and parents again: the stored row, no new version.
    again, created = await store.create_prompt(
        PromptIn(agent="bot", content="You are a {{ role }}.", parent_ids=[first["id"]])
    )
    assert not created and again == second
    # `latest` follows the newest version.
    assert (await store.get_prompt(first["id"]))["labels"] == []
    assert second["labels"] == ["latest"]


async def test_unknown_parents_and_bad_templates_are_refused(store: EvolutionStore) -> None:
    with pytest.raises(InvalidInput, match="unknown parent") as raised:
        await store.create_prompt(PromptIn(agent="bot", content="x", parent_ids=["nope"]))
    assert raised.value.field == "parent_ids"
    with pytest.raises(ValidationError, match="line 2"):
        PromptIn(agent="bot", content="fine\n{% for x in %}\n")
    assert (await store.list_prompts(agent="bot")).items == []


async def test_the_lifecycle_allows_only_its_moves(store: EvolutionStore) -> None:
    prompt = await new_prompt(store, "v1")
    with pytest.raises(Conflict, match="allowed moves: experimental, archived"):
        await store.set_prompt_status(prompt["id"], PromptStatusIn(status="candidate"))
    with pytest.raises(Conflict, match="approve a candidate"):
        await store.set_prompt_status(prompt["id"], PromptStatusIn(status="production"))
    for status in ("experimental", "candidate"):
        moved = await store.set_prompt_status(prompt["id"], PromptStatusIn(status=status))
        assert moved["status"] == status
    archived = await store.set_prompt_status(
        prompt["id"], PromptStatusIn(status="archived", note="old")
    )
    assert (archived["status"], archived["note"]) == ("archived", "old")
    with pytest.raises(NotFound):
        await store.set_prompt_status("missing", PromptStatusIn(status="archived"))


async def test_approval_archives_the_previous_production_and_rollback_restores_it(
    store: EvolutionStore,
) -> None:
    v1, v2 = await candidate(store, "v1"), await candidate(store, "v2")
    with pytest.raises(Conflict, match="only a candidate"):
        await store.approve_prompt(
            (await new_prompt(store, "v3"))["id"], ApproveIn(), approved_by="me"
        )
    approved = await store.approve_prompt(v1["id"], ApproveIn(note="ship"), approved_by="fp-1")
    assert (approved["status"], approved["approved_by"], approved["note"]) == (
        "production",
        "fp-1",
        "ship",
    )
    assert approved["approved_at"] is not None and "production" in approved["labels"]
    await store.approve_prompt(v2["id"], ApproveIn(), approved_by="fp-2")
    assert (await store.get_prompt(v1["id"]))["status"] == "archived"
    assert (await store.resolve_prompt("bot"))["id"] == v2["id"]
    # Rollback: approving the archived version again.
    await store.approve_prompt(v1["id"], ApproveIn(), approved_by="fp-1")
    assert (await store.get_prompt(v2["id"]))["status"] == "archived"
    assert (await store.resolve_prompt("bot"))["id"] == v1["id"]
    kinds = [marker["kind"] for marker in (await store.list_markers(agent="bot")).items]
    assert kinds == ["prompt.rolled_back", "prompt.promoted", "prompt.promoted"]
    latest = (await store.list_markers(agent="bot", limit=1)).items[0]
    assert latest["before"] == {"prompt_id": v2["id"], "version": v2["version"]}
    assert latest["after"]["prompt_id"] == v1["id"] and latest["agent"] == "bot"


async def test_concurrent_approvals_leave_exactly_one_production_prompt(
    store: EvolutionStore,
) -> None:
    candidates = [await candidate(store, f"v{i}") for i in range(4)]
    await asyncio.gather(
        *(store.approve_prompt(p["id"], ApproveIn(), approved_by="x") for p in candidates)
    )
    production = (await store.list_prompts(agent="bot", status="production")).items
    assert len(production) == 1
    assert (await store.resolve_prompt("bot"))["id"] == production[0]["id"]
    assert len((await store.list_prompts(agent="bot", status="archived")).items) == 3


async def test_labels_move_with_a_marker_and_reserved_ones_are_refused(
    store: EvolutionStore,
) -> None:
    v1, v2 = await new_prompt(store, "v1"), await new_prompt(store, "v2")
    label = await store.set_label("bot", "staging", v1["id"])
    assert (label["prompt_id"], label["version"]) == (v1["id"], 1)
    await store.set_label("bot", "staging", v2["id"])
    assert (await store.resolve_prompt("bot", label="staging"))["id"] == v2["id"]
    assert [item["label"] for item in await store.list_labels("bot")] == ["latest", "staging"]
    for reserved in ("production", "latest"):
        with pytest.raises(Conflict, match="moved by the registry"):
            await store.set_label("bot", reserved, v1["id"])
    other, _ = await store.create_prompt(PromptIn(agent="other", content="o"))
    with pytest.raises(InvalidInput, match="belongs to agent 'other'"):
        await store.set_label("bot", "staging", other["id"])
    with pytest.raises(NotFound):
        await store.resolve_prompt("bot", label="nowhere")
    moved = (await store.list_markers(agent="bot", kind="prompt.label_moved")).items
    assert [marker["after"]["prompt_id"] for marker in moved] == [v2["id"], v1["id"]]
    assert moved[0]["before"] == {"label": "staging", "prompt_id": v1["id"]}
