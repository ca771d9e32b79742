"""Rewards and their links: every target kind, before and after the span, on both backends."""

from __future__ import annotations

import re

import pytest
from factories import span_record, trace_id
from pydantic import ValidationError

from evolution_store import Conflict, EvolutionStore
from evolution_store.models import ExecutionIn, RewardIn, TaskIn
from evolution_store.queries import RewardQuery


def pair(**attributes: object):
    trace = trace_id()
    root = span_record(trace_id=trace, name="agent", attributes=dict(attributes))
    child = span_record(
        trace_id=trace, parent_span_id=root.span_id, name="chat", attributes=dict(attributes)
    )
    return root, child


async def test_reward_before_its_span_is_pending_then_resolved(store: EvolutionStore) -> None:
    root, child = pair()
    early, created = await store.add_reward(RewardIn(value=1, span_id=child.span_id))
    assert created and not early["resolved"] and early["span_ids"] == []
    assert (await store.list_rewards(RewardQuery(resolved=False))).items[0]["id"] == early["id"]
    await store.ingest([child, root])
    late = await store.get_reward(early["id"])
    assert late["resolved"] and late["span_ids"] == [child.span_id]
    assert (await store.list_rewards(RewardQuery(resolved=False))).items == []


@pytest.mark.parametrize("before", [True, False], ids=["reward-first", "span-first"])
@pytest.mark.parametrize("kind", ["span", "trace", "execution", "task", "links", "id-links"])
async def test_every_target_kind_links_in_either_order(
    store: EvolutionStore, kind: str, before: bool
) -> None:
    root, child = pair(**{"gen_ai.conversation.id": "conv-1", "custom.key": 7})
    task_id = execution_id = root.trace_id  # a trace without ids is its own task
    target, expected = {
        "span": ({"span_id": child.span_id, "trace_id": child.trace_id}, {child.span_id}),
        "trace": ({"trace_id": root.trace_id}, {root.span_id}),
        "execution": ({"execution_id": execution_id}, {root.span_id}),
        "task": ({"task_id": task_id}, {root.span_id}),
        "links": ({"links": {"custom.key": 7, "gen_ai.conversation.id": "conv-1"}},
                  {root.span_id, child.span_id}),
        "id-links": ({"links": {"trace_id": root.trace_id}}, {root.span_id, child.span_id}),
    }[kind]  # fmt: skip
    if not before:
        await store.ingest([child, root])
    reward, _ = await store.add_reward(RewardIn(value=0.5, **target))
    if before:
        assert not reward["resolved"]
        await store.ingest([child, root])
    stored = await store.get_reward(reward["id"])
    assert stored["resolved"]
    assert set(stored["span_ids"]) == expected


async def test_selector_needs_every_key_to_match(store: EvolutionStore) -> None:
    a = span_record(attributes={"session.id": "s1", "user.id": "u1"})
    b = span_record(attributes={"session.id": "s1", "user.id": "u2"})
    reward, _ = await store.add_reward(
        RewardIn(value=1, links={"session.id": "s1", "user.id": "u2"})
    )
    await store.ingest([a, b])
    assert (await store.get_reward(reward["id"]))["span_ids"] == [b.span_id]


async def test_new_selector_key_is_backfilled_from_stored_spans(store: EvolutionStore) -> None:
    old = span_record(attributes={"ticket.id": "T-1", "flag": True})
    await store.ingest([old])
    reward, _ = await store.add_reward(RewardIn(value=1, links={"ticket.id": "T-1", "flag": True}))
    assert reward["span_ids"] == [old.span_id]
    new = span_record(attributes={"ticket.id": "T-1", "flag": True})
    await store.ingest([new])
    assert set((await store.get_reward(reward["id"]))["span_ids"]) == {old.span_id, new.span_id}


async def test_task_reward_links_roots_of_every_execution(store: EvolutionStore) -> None:
    await store.create_task(TaskIn(id="t-many"))
    roots = []
    for _ in range(2):
        execution = await store.start_execution("t-many", ExecutionIn())
        root = span_record(attributes={"evolution.execution.id": execution["id"]})
        await store.ingest([root])
        roots.append(root.span_id)
    reward, _ = await store.add_reward(RewardIn(value=1, task_id="t-many"))
    assert set(reward["span_ids"]) == set(roots)


async def test_reward_id_is_an_idempotency_key(store: EvolutionStore) -> None:
    trace = trace_id()
    sent = RewardIn(id="r-1", value=1, trace_id=trace, tags=["a", "b"], metadata={"x": 1, "y": 2})
    first, created = await store.add_reward(sent)
    same = RewardIn(id="r-1", value=1, trace_id=trace, tags=["a", "b"], metadata={"y": 2, "x": 1})
    again, created_again = await store.add_reward(same)
    assert created and not created_again
    assert again == first
    assert len((await store.list_rewards()).items) == 1


async def test_a_reward_id_reused_with_other_content_is_a_conflict(store: EvolutionStore) -> None:
    trace = trace_id()
    await store.add_reward(RewardIn(id="r-1", value=1, trace_id=trace))
    with pytest.raises(Conflict) as raised:
        await store.add_reward(RewardIn(id="r-1", value=0.5, trace_id=trace))
    # Both values are named, so the caller sees what differs.
    assert "value: stored 1.0, sent 0.5" in str(raised.value)
    with pytest.raises(Conflict, match="task_id: stored None, sent 'x'"):
        await store.add_reward(RewardIn(id="r-1", value=1, task_id="x"))
    stored = await store.get_reward("r-1")
    assert stored["value"] == 1 and stored["target"]["trace_id"] == trace
    # Selectors with a new key: the conflict is found before the key is back-filled.
    await store.add_reward(RewardIn(id="r-2", value=1, links={"a.key": "v"}))
    with pytest.raises(Conflict, match="links: stored"):
        await store.add_reward(RewardIn(id="r-2", value=1, links={"b.key": "v"}))


async def test_rewards_by_tag_on_reward_or_on_its_spans(store: EvolutionStore) -> None:
    tagged_span = span_record(attributes={"evolution.tags": ["prod"]})
    plain_span = span_record()
    await store.ingest([tagged_span, plain_span])
    on_span, _ = await store.add_reward(RewardIn(value=1, span_id=tagged_span.span_id))
    own, _ = await store.add_reward(RewardIn(value=0, span_id=plain_span.span_id, tags=["prod"]))
    assert await ids_for(store, "any") == {on_span["id"], own["id"]}
    assert await ids_for(store, "reward") == {own["id"]}
    assert await ids_for(store, "span") == {on_span["id"]}


async def ids_for(store: EvolutionStore, scope: str) -> set[str]:
    page = await store.list_rewards(RewardQuery(tag="prod", tag_scope=scope))
    return {reward["id"] for reward in page.items}


async def test_span_tags_reach_rewards_linked_before_or_after(store: EvolutionStore) -> None:
    # A reward that arrives before its tagged span, and a span tagged after its reward linked.
    early_span = span_record(attributes={"evolution.tags": ["prod"]})
    early, _ = await store.add_reward(RewardIn(value=1, span_id=early_span.span_id))
    assert await ids_for(store, "span") == set()
    await store.ingest([early_span])
    later_span = span_record()
    await store.ingest([later_span])
    later, _ = await store.add_reward(RewardIn(value=1, span_id=later_span.span_id))
    assert await ids_for(store, "span") == {early["id"]}
    await store.add_span_tags(later_span.span_id, ["prod"])
    assert await ids_for(store, "span") == {early["id"], later["id"]}


async def test_summary_groups_with_confidence_intervals(store: EvolutionStore) -> None:
    await store.create_task(TaskIn(id="t-ab"))
    for prompt, values in (("v1", [0.2, 0.4, 0.6]), ("v2", [0.9, 1.0])):
        execution = await store.start_execution("t-ab", ExecutionIn(config={"prompt": prompt}))
        for value in values:
            await store.add_reward(
                RewardIn(value=value, execution_id=execution["id"], name="score", tags=[prompt])
            )
    by_prompt = {g["key"]: g for g in await store.rewards_summary("config:prompt")}
    assert by_prompt["v1"]["count"] == 3
    assert by_prompt["v1"]["mean"] == pytest.approx(0.4)
    assert by_prompt["v1"]["stdev"] == pytest.approx(0.2)
    low, high = by_prompt["v1"]["ci95"]
    assert low == pytest.approx(0.4 - 4.303 * 0.2 / 3**0.5, rel=1e-3) and high > 0.4
    by_name = await store.rewards_summary("name", RewardQuery(tag="v2"))
    [group] = by_name
    assert (group["key"], group["count"]) == ("score", 2)
    assert group["mean"] == pytest.approx(0.95)
    assert group["stdev"] == pytest.approx(0.0707, rel=1e-2)
    assert group["ci95"] == [pytest.approx(0.3147, rel=1e-2), pytest.approx(1.5853, rel=1e-2)]


async def test_summary_by_agent_counts_each_reward_once(store: EvolutionStore) -> None:
    root, child = pair(**{"gen_ai.agent.name": "solver"})
    await store.ingest([root, child])
    await store.add_reward(RewardIn(value=1, links={"trace_id": root.trace_id}))
    groups = await store.rewards_summary("agent")
    assert groups == [{"key": "solver", "count": 1, "mean": 1.0, "stdev": None, "ci95": [1.0, 1.0]}]


def test_reward_validation() -> None:
    with pytest.raises(ValidationError, match="needs a target"):
        RewardIn(value=1)
    with pytest.raises(ValidationError, match="one target"):
        RewardIn(value=1, task_id="a", execution_id="b")
    with pytest.raises(ValidationError, match="value or dimensions"):
        RewardIn(task_id="a")
    with pytest.raises(ValidationError):
        RewardIn(value=float("nan"), task_id="a")
    with pytest.raises(ValidationError):
        RewardIn(value=1, span_id="0" * 16)
    multi = RewardIn(dimensions={"accuracy": 0.5, "cost": 0.1}, task_id="a")
    assert multi.value == 0.5


@pytest.mark.parametrize("before", [True, False], ids=["reward-first", "span-first"])
@pytest.mark.parametrize("kind", ["span", "trace", "execution", "task", "links", "id-links"])
async def test_new_reward_is_returned_as_it_reads_back(
    store: EvolutionStore, kind: str, before: bool
) -> None:
    # add_reward builds a new reward from what it wrote instead of reading it back: the two
    # must agree field for field, whatever the target, matched or pending.
    attributes = {"gen_ai.conversation.id": "conv-2", "custom.rank": 3, "evolution.tags": ["prod"]}
    root, child = pair(**attributes)
    second = span_record(trace_id=root.trace_id, attributes={"gen_ai.conversation.id": "conv-2"})
    target = {
        "span": {"span_id": child.span_id, "trace_id": child.trace_id},
        "trace": {"trace_id": root.trace_id},
        "execution": {"execution_id": root.trace_id},
        "task": {"task_id": root.trace_id},
        "links": {"links": {"gen_ai.conversation.id": "conv-2", "custom.rank": 3}},
        "id-links": {"links": {"trace_id": root.trace_id}},
    }[kind]
    if not before:
        await store.ingest([second, child, root])
    reward, created = await store.add_reward(
        RewardIn(
            value=0.25,
            dimensions={"quality": 0.25, "cost": -2.5},
            name="judge",
            feedback="fine — mostly ✓",
            source="llm",
            tags=["eval", "prod"],
            metadata={"model": "m-1", "nested": {"n": [1, 2.5, None, True]}},
            **target,
        )
    )
    assert created
    assert reward == await store.get_reward(reward["id"])
    assert reward["resolved"] is not before and (reward["span_count"] > 0) is not before
    if before:
        await store.ingest([second, child, root])
    assert await ids_for(store, "span") == {reward["id"]}  # it inherits its spans' tags


async def test_a_reused_id_writes_nothing(store: EvolutionStore) -> None:
    span = span_record(attributes={"ticket.id": "T-9"})
    await store.ingest([span])
    first, _ = await store.add_reward(RewardIn(id="r-same", value=1, span_id=span.span_id))
    again, created = await store.add_reward(RewardIn(id="r-same", value=1, span_id=span.span_id))
    assert not created and again == first == await store.get_reward("r-same")
    with pytest.raises(Conflict):
        await store.add_reward(
            RewardIn(id="r-same", value=0, links={"ticket.id": "T-9"}, tags=["late"])
        )
    assert await store.get_reward("r-same") == first
    assert (await store.list_rewards(RewardQuery(tag="late"))).items == []


async def test_a_reward_takes_a_few_statements_and_no_read_back(store_url: str) -> None:
    statements: list[str] = []
    store = await EvolutionStore.open(
        store_url, statement_hook=lambda sql, params: statements.append(" ".join(sql.split()))
    )
    try:
        span = span_record()
        await store.ingest([span])
        statements.clear()
        reward, _ = await store.add_reward(RewardIn(value=1, span_id=span.span_id))
        written = [sql for sql in statements if not _is_transaction_control(sql)]
        statements.clear()
        pending, _ = await store.add_reward(RewardIn(value=1, span_id=span_record().span_id))
        written_pending = [sql for sql in statements if not _is_transaction_control(sql)]
    finally:
        await store.close()
    assert reward["span_ids"] == [span.span_id] and pending["span_ids"] == []
    # the match (which also finds the spans' tags), the INSERT … RETURNING, the link; the
    # span has no tags, so nothing goes to reward_span_tags; and no read-back
    assert len(written) == 3, written
    reads = [sql for sql in written + written_pending if re.match(r"SELECT .* FROM rewards", sql)]
    assert reads == []
    assert len(written_pending) == 2, written_pending  # no link rows: no link statements


def _is_transaction_control(sql: str) -> bool:
    # BEGIN, and Postgres's writer lock taken at the start of every group
    return sql.upper().startswith(("BEGIN", "SELECT 1")) or "pg_advisory_xact_lock" in sql
