"""`task_writes`: tasks, executions, their statuses and span tags, on SQLite and Postgres.

`test_store.py` covers attempts numbered in order and a task following its latest execution;
this file the adoption of rows a span created first, idempotency, and the status rules.
"""

from __future__ import annotations

import pytest
from factories import span_id, span_record

from evolution_store import EvolutionStore, InvalidInput, NotFound
from evolution_store.models import ExecutionIn, RewardIn, TaskIn
from evolution_store.queries import RewardQuery, SpanQuery


async def test_create_task_is_idempotent_on_its_id(store: EvolutionStore) -> None:
    task, created = await store.create_task(
        TaskIn(id="t-once", name="first", input={"q": 1}, metadata={"m": 1}, tags=["a"])
    )
    assert created
    assert (task["status"], task["span_count"], task["tags"]) == ("queued", 0, ["a"])
    again, created = await store.create_task(
        TaskIn(id="t-once", name="second", input=None, tags=["b"])
    )
    assert not created
    assert (again["name"], again["input"], again["metadata"], again["tags"]) == (
        "first",
        {"q": 1},
        {"m": 1},
        ["a"],
    )
    assert [t["id"] for t in (await store.list_tasks(tag="b")).items] == []


async def test_a_task_without_an_id_gets_a_fresh_one(store: EvolutionStore) -> None:
    first, _ = await store.create_task(TaskIn(name="anonymous"))
    second, _ = await store.create_task(TaskIn(name="anonymous"))
    assert len(first["id"]) == 32 and first["id"] != second["id"]


async def test_create_task_adopts_a_task_a_span_created(store: EvolutionStore) -> None:
    ids = {"evolution.task.id": "t-adopt"}
    root = span_record(name="from-span", attributes=ids)
    child = span_record(trace_id=root.trace_id, parent_span_id=root.span_id, attributes=ids)
    await store.ingest([root, child])
    before = await store.get_task("t-adopt")
    assert (before["name"], before["status"], before["span_count"]) == (
        "from-span",
        "succeeded",
        2,
    )
    task, created = await store.create_task(
        TaskIn(id="t-adopt", name="named", input=[1], metadata={"k": "v"}, tags=["exp"])
    )
    assert created
    assert (task["name"], task["input"], task["metadata"], task["tags"]) == (
        "named",
        [1],
        {"k": "v"},
        ["exp"],
    )
    # what the spans made stays: their count, and the status their root gave it
    assert (task["status"], task["span_count"]) == ("succeeded", 2)
    assert [t["id"] for t in (await store.list_tasks(tag="exp")).items] == ["t-adopt"]
    _, created = await store.create_task(TaskIn(id="t-adopt", name="third"))
    assert not created  # adopted once: now it is the API's
    assert (await store.get_task("t-adopt"))["name"] == "named"


async def test_start_execution_adopts_an_execution_a_span_created(store: EvolutionStore) -> None:
    ids = {"evolution.task.id": "t-ex", "evolution.execution.id": "ex-span"}
    await store.ingest([span_record(attributes=ids, parent_span_id=span_id())])
    execution = await store.start_execution("t-ex", ExecutionIn(id="ex-span", config={"p": 2}))
    assert (execution["id"], execution["attempt"], execution["config"]) == ("ex-span", 1, {"p": 2})
    assert len(await store.list_executions("t-ex")) == 1
    # The API's own execution, started again with the same id: left as it was.
    again = await store.start_execution("t-ex", ExecutionIn(id="ex-span", config={"p": 3}))
    assert (again["attempt"], again["config"]) == (1, {"p": 2})
    following = await store.start_execution("t-ex", ExecutionIn())
    assert following["attempt"] == 2


async def test_an_execution_of_another_task_is_refused(store: EvolutionStore) -> None:
    await store.create_task(TaskIn(id="t-one"))
    await store.create_task(TaskIn(id="t-two"))
    await store.start_execution("t-one", ExecutionIn(id="ex-shared"))
    with pytest.raises(InvalidInput) as refused:
        await store.start_execution("t-two", ExecutionIn(id="ex-shared"))
    assert refused.value.field == "id"
    assert (await store.get_execution("ex-shared"))["task_id"] == "t-one"


async def test_starting_an_execution_makes_the_task_run(store: EvolutionStore) -> None:
    await store.create_task(TaskIn(id="t-run"))
    execution = await store.start_execution("t-run", ExecutionIn(config={"model": "m"}))
    assert (execution["status"], execution["ended_at"], execution["config"]) == (
        "running",
        None,
        {"model": "m"},
    )
    assert (await store.get_task("t-run"))["status"] == "running"


# -- statuses -----------------------------------------------------------------------------------


async def test_execution_status_sets_ended_at_and_the_task_follows_the_latest(
    store: EvolutionStore,
) -> None:
    await store.create_task(TaskIn(id="t-status"))
    older = await store.start_execution("t-status", ExecutionIn())
    newer = await store.start_execution("t-status", ExecutionIn())
    ended = await store.set_execution_status(newer["id"], "timeout")
    assert ended["ended_at"] is not None
    assert (await store.get_task("t-status"))["status"] == "failed"  # timeout means failed
    await store.set_execution_status(older["id"], "succeeded")  # not the latest: no change
    assert (await store.get_task("t-status"))["status"] == "failed"
    running = await store.set_execution_status(newer["id"], "running")
    assert running["ended_at"] is None
    assert (await store.get_task("t-status"))["status"] == "running"


async def test_a_cancelled_task_stays_cancelled(store: EvolutionStore) -> None:
    await store.create_task(TaskIn(id="t-cancelled"))
    execution = await store.start_execution("t-cancelled", ExecutionIn())
    cancelled = await store.set_task_status("t-cancelled", "cancelled")
    assert cancelled["status"] == "cancelled"
    await store.set_execution_status(execution["id"], "succeeded")
    await store.start_execution("t-cancelled", ExecutionIn())
    assert (await store.get_task("t-cancelled"))["status"] == "cancelled"
    reopened = await store.set_task_status("t-cancelled", "queued")  # explicitly, it can be
    assert reopened["status"] == "queued"


@pytest.mark.parametrize("status", ["timeout", "paused", ""])
async def test_task_status_must_be_a_task_status(store: EvolutionStore, status: str) -> None:
    await store.create_task(TaskIn(id="t-bad-status"))
    with pytest.raises(InvalidInput) as refused:
        await store.set_task_status("t-bad-status", status)
    assert refused.value.field == "status"


@pytest.mark.parametrize("status", ["queued", "cancelled", "done"])
async def test_execution_status_must_be_an_execution_status(
    store: EvolutionStore, status: str
) -> None:
    await store.create_task(TaskIn(id="t-ex-status"))
    execution = await store.start_execution("t-ex-status", ExecutionIn())
    with pytest.raises(InvalidInput) as refused:
        await store.set_execution_status(execution["id"], status)
    assert refused.value.field == "status"


async def test_statuses_of_unknown_rows_are_not_found(store: EvolutionStore) -> None:
    with pytest.raises(NotFound):
        await store.set_task_status("nope", "cancelled")
    with pytest.raises(NotFound):
        await store.set_execution_status("nope", "running")


# -- span tags ----------------------------------------------------------------------------------


async def test_added_tags_merge_with_the_span_s_own(store: EvolutionStore) -> None:
    record = span_record(attributes={"evolution.tags": ["a", "b"]})
    await store.ingest([record])
    tagged = await store.add_span_tags(record.span_id, ["b", "c", "c"])
    assert tagged["tags"] == ["a", "b", "c"]
    again = await store.add_span_tags(record.span_id, ["a", "d"])
    assert again["tags"] == ["a", "b", "c", "d"]
    for tag in "abcd":
        page = await store.list_spans(SpanQuery(tag=tag))
        assert [span["span_id"] for span in page.items] == [record.span_id], tag


async def test_linked_rewards_inherit_added_tags_once(store: EvolutionStore) -> None:
    record = span_record(attributes={"evolution.tags": ["prod"]})
    await store.ingest([record])
    first, _ = await store.add_reward(RewardIn(value=1.0, span_id=record.span_id))
    second, _ = await store.add_reward(RewardIn(value=0.0, links={"trace_id": record.trace_id}))
    # "prod" is inherited already: adding it again must not duplicate the reward's tag row
    await store.add_span_tags(record.span_id, ["prod", "reviewed"])
    for tag in ("prod", "reviewed"):
        page = await store.list_rewards(RewardQuery(tag=tag, tag_scope="span"))
        assert sorted(r["id"] for r in page.items) == sorted([first["id"], second["id"]]), tag
    assert (await store.list_rewards(RewardQuery(tag="reviewed", tag_scope="reward"))).items == []
    [group] = [g for g in await store.rewards_summary("tag") if g["key"] == "reviewed"]
    assert group["count"] == 2


async def test_tags_of_a_span_id_shared_by_two_traces(store: EvolutionStore) -> None:
    shared = span_id()
    one, two = span_record(span_id=shared), span_record(span_id=shared)
    await store.ingest([one, two])
    with pytest.raises(InvalidInput) as refused:
        await store.add_span_tags(shared, ["x"])
    assert refused.value.field == "trace_id"
    tagged = await store.add_span_tags(shared, ["x"], trace_id=two.trace_id)
    assert (tagged["trace_id"], tagged["tags"]) == (two.trace_id, ["x"])
    assert (await store.get_span(shared, trace_id=one.trace_id))["tags"] == []


async def test_tags_of_an_unknown_span_are_not_found(store: EvolutionStore) -> None:
    with pytest.raises(NotFound):
        await store.add_span_tags(span_id(), ["x"])


async def test_added_tags_are_cleaned_like_every_stored_text(store: EvolutionStore) -> None:
    # The Python API takes a plain list: a NUL must become U+FFFD on both backends, in the
    # span's tag list and in the tag index alike, as it does for tags given at ingest.
    record = span_record()
    await store.ingest([record])
    tagged = await store.add_span_tags(record.span_id, ["a\x00b"])
    assert tagged["tags"] == ["a\ufffdb"]
    page = await store.list_spans(SpanQuery(tag="a\ufffdb"))
    assert [span["span_id"] for span in page.items] == [record.span_id]
