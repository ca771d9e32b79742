"""EvolutionStore's write path and records, on SQLite and Postgres (the `store` fixture)."""

from __future__ import annotations

import asyncio

import pytest
from factories import span_id, span_record, task_in, trace_id

from evolution_store import EvolutionStore, InvalidInput, NotFound
from evolution_store.models import ExecutionIn, SpanRecord, TaskIn
from evolution_store.promote import unique_tags
from evolution_store.queries import SpanQuery


def trace_records(count: int = 3, **attributes: object) -> list[SpanRecord]:
    trace = trace_id()
    root = span_record(trace_id=trace, name="agent", attributes=dict(attributes))
    children = [
        span_record(
            trace_id=trace,
            parent_span_id=root.span_id,
            name=f"step-{i}",
            start_time=root.start_time + i,
            attributes=dict(attributes),
        )
        for i in range(1, count)
    ]
    return [*reversed(children), root]  # children first, as exporters send them


async def test_ingest_is_idempotent_on_trace_and_span_id(store: EvolutionStore) -> None:
    batch = trace_records(5)
    first = await store.ingest(batch)
    again = await store.ingest(batch)
    assert (first.accepted, first.duplicates) == (5, 0)
    assert (again.accepted, again.duplicates) == (0, 5)
    page = await store.list_spans(SpanQuery(trace_id=batch[0].trace_id))
    assert len(page.items) == 5


async def test_duplicates_inside_one_group_are_stored_once(store: EvolutionStore) -> None:
    batch = trace_records(4)
    results = await asyncio.gather(*(store.ingest(batch) for _ in range(6)))
    assert sum(result.accepted for result in results) == 4
    assert sum(result.duplicates for result in results) == 20


async def test_a_group_that_meets_a_stored_span_is_applied_again_with_lookups(
    store: EvolutionStore,
) -> None:
    # A writer starts out assuming spans new (`WriteContext.optimistic`): the insert meets
    # the stored ones, and the writer rolls back and applies the whole group again, with
    # lookups: the task created beside the spans once, each span numbered once.
    stored = trace_records(3)
    await store.ingest(stored)
    new = trace_records(3)
    mixed, (_, created) = await asyncio.gather(
        store.ingest([*stored[:2], *new]), store.create_task(task_in())
    )
    assert (mixed.accepted, mixed.duplicates, created) == (3, 2, True)
    assert store.writer.conflicts == 1
    for batch in (stored, new):
        page = await store.list_spans(SpanQuery(task_id=batch[0].trace_id))
        assert sorted(span["sequence"] for span in page.items) == [1, 2, 3]
    # For `LOOKUP_SECONDS` after a conflict, groups look their spans up first.
    again = await store.ingest(new)
    assert (again.accepted, again.duplicates) == (0, 3)
    assert store.writer.conflicts == 1


async def test_span_without_ids_gets_a_task_and_execution_from_its_trace(
    store: EvolutionStore,
) -> None:
    batch = trace_records(3)
    await store.ingest(batch)
    trace = batch[0].trace_id
    task = await store.get_task(trace)
    assert task["name"] == "agent"  # the root span's name
    assert task["status"] == "succeeded"  # the root span ended without error
    executions = await store.list_executions(trace)
    assert [execution["attempt"] for execution in executions] == [1]


async def test_sequence_is_per_task_and_follows_start_time(store: EvolutionStore) -> None:
    batch = trace_records(4)
    await store.ingest(batch[:2])
    await store.ingest(batch[2:])
    page = await store.list_spans(SpanQuery(task_id=batch[0].trace_id))
    assert [span["sequence"] for span in page.items] == [1, 2, 3, 4]
    assert {span["span_id"] for span in page.items} == {span.span_id for span in batch}


async def test_ids_from_resource_and_agent_lightning_attributes(store: EvolutionStore) -> None:
    ours = span_record(resource={"evolution.task.id": "task-r", "evolution.execution.id": "ex-r"})
    theirs = span_record(
        attributes={"agentlightning.rollout_id": "ro-1", "agentlightning.attempt_id": "at-1"}
    )
    await store.ingest([ours, theirs])
    assert (await store.get_execution("ex-r"))["task_id"] == "task-r"
    assert (await store.get_execution("at-1"))["task_id"] == "ro-1"
    assert (await store.get_span(theirs.span_id))["execution_id"] == "at-1"


async def test_task_id_alone_joins_the_latest_execution(store: EvolutionStore) -> None:
    task, _ = await store.create_task(task_in())
    first = await store.start_execution(task["id"], ExecutionIn())
    second = await store.start_execution(task["id"], ExecutionIn())
    record = span_record(attributes={"evolution.task.id": task["id"]})
    await store.ingest([record])
    span = await store.get_span(record.span_id)
    assert span["execution_id"] == second["id"] != first["id"]


async def test_retries_number_attempts_and_task_status_follows_latest(
    store: EvolutionStore,
) -> None:
    task, created = await store.create_task(TaskIn(id="t-retry", name="solve", input={"q": 2}))
    assert created and task["status"] == "queued"
    first = await store.start_execution("t-retry", ExecutionIn(config={"prompt": "v1"}))
    assert (await store.get_task("t-retry"))["status"] == "running"
    await store.set_execution_status(first["id"], "failed")
    assert (await store.get_task("t-retry"))["status"] == "failed"
    second = await store.start_execution("t-retry", ExecutionIn(config={"prompt": "v2"}))
    assert (first["attempt"], second["attempt"]) == (1, 2)
    await store.set_execution_status(second["id"], "succeeded")
    assert (await store.get_task("t-retry"))["status"] == "succeeded"
    again, created = await store.create_task(TaskIn(id="t-retry", name="other"))
    assert not created and again["name"] == "solve"


async def test_root_spans_settle_new_and_stored_executions_alike(store: EvolutionStore) -> None:
    # A root's outcome ends its execution, whether the execution was created by this very
    # batch (then it starts ended) or stored before; the task follows its latest execution.
    ids = {"evolution.task.id": "t-roots"}
    first = span_record(attributes={**ids, "evolution.execution.id": "e-1"}, status_code="error")
    await store.ingest([first])
    ended = await store.get_execution("e-1")
    assert (ended["status"], ended["attempt"]) == ("failed", 1)
    assert ended["ended_at"] is not None
    assert (await store.get_task("t-roots"))["status"] == "failed"

    retry = {**ids, "evolution.execution.id": "e-2"}
    child = span_record(attributes=retry, parent_span_id=span_id())
    await store.ingest([child])  # no root yet: the new attempt runs
    assert (await store.get_execution("e-2"))["status"] == "running"
    assert (await store.get_task("t-roots"))["status"] == "running"
    root = span_record(attributes=retry, trace_id=child.trace_id)
    await store.ingest([root])
    assert (await store.get_execution("e-2"))["status"] == "succeeded"
    assert (await store.get_task("t-roots"))["status"] == "succeeded"

    third = span_record(attributes={**ids, "evolution.execution.id": "e-3"})
    await store.ingest([third])  # a new attempt of a stored task, ended in one batch
    settled = await store.get_execution("e-3")
    assert (settled["status"], settled["attempt"]) == ("succeeded", 3)
    assert (await store.get_execution("e-1"))["status"] == "failed"


async def test_explicit_create_fills_in_a_task_made_by_a_span(store: EvolutionStore) -> None:
    record = span_record(attributes={"evolution.task.id": "late-task"})
    await store.ingest([record])
    task, created = await store.create_task(TaskIn(id="late-task", name="named", input=[1]))
    assert created
    assert (task["name"], task["input"]) == ("named", [1])


async def test_unknown_records_raise_not_found(store: EvolutionStore) -> None:
    with pytest.raises(NotFound):
        await store.get_task("nope")
    with pytest.raises(NotFound):
        await store.start_execution("nope", ExecutionIn())
    with pytest.raises(NotFound):
        await store.set_execution_status("nope", "failed")
    with pytest.raises(NotFound):
        await store.get_span(span_id())
    with pytest.raises(InvalidInput):
        await store.set_task_status("nope", "exploded")


async def test_promoted_columns(store: EvolutionStore) -> None:
    llm = span_record(
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-x",
            "gen_ai.usage.input_tokens": 12,
            "gen_ai.usage.output_tokens": 5,
            "llm.cost.total": 0.25,
        },
        resource={"service.name": "svc"},
    )
    agent = span_record(
        attributes={"gen_ai.agent.name": "planner", "gen_ai.usage.input_tokens": 99}
    )
    await store.ingest([llm, agent])
    row = await store.get_span(llm.span_id)
    assert (row["agent"], row["operation"], row["model"]) == ("svc", "chat", "gpt-x")
    assert (row["input_tokens"], row["output_tokens"], row["cost"]) == (12, 5, 0.25)
    assert row["duration_ns"] == llm.end_time - llm.start_time
    other = await store.get_span(agent.span_id)
    assert other["agent"] == "planner"
    assert other["input_tokens"] is None  # agent spans may repeat totals: not summed


async def test_span_tags_from_attributes_and_api(store: EvolutionStore) -> None:
    record = span_record(attributes={"evolution.tags": ["a", "b"], "agentlightning.tag.0": "c"})
    await store.ingest([record])
    tagged = await store.add_span_tags(record.span_id, ["d"])
    assert tagged["tags"] == ["a", "b", "c", "d"]
    page = await store.list_spans(SpanQuery(tag="d"))
    assert [span["span_id"] for span in page.items] == [record.span_id]


async def test_close_drains_queued_writes(store_url: str) -> None:
    store = await EvolutionStore.open(store_url)
    batches = [trace_records(3) for _ in range(20)]
    pending = [asyncio.create_task(store.ingest(batch)) for batch in batches]
    await asyncio.sleep(0)  # let them queue
    await store.close()
    results = await asyncio.gather(*pending)
    assert sum(result.accepted for result in results) == 60
    reopened = await EvolutionStore.open(store_url)
    try:
        for batch in batches:
            page = await reopened.list_spans(SpanQuery(trace_id=batch[0].trace_id))
            assert len(page.items) == 3
    finally:
        await reopened.close()


async def test_spans_join_the_task_their_trace_names(store: EvolutionStore) -> None:
    trace = trace_id()
    root = span_record(trace_id=trace, name="root", attributes={"evolution.task.id": "named"})
    child = span_record(trace_id=trace, parent_span_id=root.span_id, name="child")
    late = span_record(trace_id=trace, parent_span_id=root.span_id, name="late")
    await store.ingest([child, root])  # same group: the child inherits
    await store.ingest([late])  # later group: looked up from the stored spans
    page = await store.list_spans(SpanQuery(task_id="named"))
    assert [span["name"] for span in page.items] == ["root", "child", "late"]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["a", "b", "a"], ["a", "b"]),  # the usual tags: kept as they are, once each
        (["a", "", "b"], ["a", "b"]),
        (["x\x00", "x\ufffd", "é"], ["x\ufffd", "é"]),
        (["t" * 150, "t" * 50], ["t" * 150, "t" * 50]),  # 200 characters in all, none cut
        (["t" * 201, "t" * 200], ["t" * 200]),
    ],
)
def test_unique_tags(tags: list[str], expected: list[str]) -> None:
    assert unique_tags(tags) == expected


async def test_tags_that_become_one_after_cutting_and_cleaning(store: EvolutionStore) -> None:
    # 64+ spans: Postgres then COPYs the tag rows straight into their table, no conflict
    # handling; two tags that clean or cut to the same text must still make one row.
    long = "t" * 300
    trace = trace_id()
    records = [
        span_record(
            trace_id=trace,
            tags=["x\x00", "x\ufffd", long, long + "-other"],
            attributes={"evolution.tags": ["x\ufffd"]},
        )
        for _ in range(70)
    ]
    result = await store.ingest(records)
    assert result.accepted == 70
    page = await store.list_spans(SpanQuery(trace_id=trace, tag="t" * 200, limit=100))
    assert len(page.items) == 70
    assert sorted(page.items[0]["tags"]) == sorted(["x\ufffd", "t" * 200])
