"""`span_writes`: span batches applied in the writer's transaction, on SQLite and Postgres —
owners created on the fly, sequence numbers, duplicates, root outcomes, spans rejected alone.

`test_store.py` covers the basics (idempotency across calls, trace ids as tasks, attempts);
this file the rules `span_writes` adds, through `EvolutionStore.ingest` or by calling
`apply_span_batches` as the writer does.
"""

from __future__ import annotations

from typing import Any

import pytest
from factories import span_id, span_record, trace_id

from evolution_store import EvolutionStore, NotFound
from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from evolution_store.queries import SpanQuery
from evolution_store.span_rows import PreparedBatch, prepare_spans
from evolution_store.span_writes import IngestResult, apply_span_batches


def named(task: str | None = None, execution: str | None = None, **overrides: Any) -> SpanRecord:
    """A span naming its task and/or execution in its attributes."""
    attributes = dict(overrides.pop("attributes", {}))
    if task:
        attributes["evolution.task.id"] = task
    if execution:
        attributes["evolution.execution.id"] = execution
    return span_record(attributes=attributes, **overrides)


async def sequences(store: EvolutionStore, task_id: str) -> dict[str, int]:
    page = await store.list_spans(SpanQuery(task_id=task_id, limit=1000))
    return {span["span_id"]: span["sequence"] for span in page.items}


def prepared(store: EvolutionStore, records: list[SpanRecord]) -> PreparedBatch:
    return prepare_spans(records, store.prices, store.indexed_keys)


# -- owners -------------------------------------------------------------------------------------


async def test_a_named_task_is_created_with_its_span_count(store: EvolutionStore) -> None:
    trace = trace_id()
    root = named("t-fly", trace_id=trace, name="solve")
    children = [
        named("t-fly", trace_id=trace, parent_span_id=root.span_id, name=f"step-{i}")
        for i in range(2)
    ]
    await store.ingest([*children, root])
    task = await store.get_task("t-fly")
    assert (task["name"], task["span_count"], task["status"]) == ("solve", 3, "succeeded")
    [execution] = await store.list_executions("t-fly")
    assert (execution["attempt"], execution["status"]) == (1, "succeeded")
    assert {span["execution_id"] for span in (await store.list_spans()).items} == {execution["id"]}
    more = [named("t-fly", parent_span_id=root.span_id) for _ in range(2)]
    await store.ingest(more)
    assert (await store.get_task("t-fly"))["span_count"] == 5
    assert len(await store.list_executions("t-fly")) == 1  # the latest execution, joined


async def test_a_task_created_by_the_api_counts_the_spans_that_join_it(
    store: EvolutionStore,
) -> None:
    await store.create_task(TaskIn(id="t-api", name="from the api"))
    await store.ingest([named("t-api") for _ in range(3)])
    task = await store.get_task("t-api")
    assert (task["name"], task["span_count"]) == ("from the api", 3)


async def test_an_unknown_execution_named_alone_becomes_its_own_task(
    store: EvolutionStore,
) -> None:
    record = named(execution="ex-alone")
    await store.ingest([record])
    execution = await store.get_execution("ex-alone")
    assert execution["task_id"] == "ex-alone"
    span = await store.get_span(record.span_id)
    assert (span["task_id"], span["execution_id"]) == ("ex-alone", "ex-alone")


async def test_a_known_execution_named_alone_brings_its_task(store: EvolutionStore) -> None:
    await store.create_task(TaskIn(id="t-owner"))
    first = await store.start_execution("t-owner", ExecutionIn(id="ex-first"))
    await store.start_execution("t-owner", ExecutionIn(id="ex-second"))
    record = named(execution=first["id"])
    await store.ingest([record])
    span = await store.get_span(record.span_id)
    assert (span["task_id"], span["execution_id"]) == ("t-owner", "ex-first")


async def test_a_new_execution_of_a_stored_task_is_its_next_attempt(
    store: EvolutionStore,
) -> None:
    await store.ingest([named("t-attempts", "a-1")])
    await store.ingest([named("t-attempts", "a-2"), named("t-attempts", "a-3")])
    attempts = {e["id"]: e["attempt"] for e in await store.list_executions("t-attempts")}
    assert attempts["a-1"] == 1
    assert sorted([attempts["a-2"], attempts["a-3"]]) == [2, 3]
    assert (await store.get_task("t-attempts"))["span_count"] == 3


async def test_a_trace_joins_the_task_one_of_its_spans_names(store: EvolutionStore) -> None:
    # Apps often set the task id on the root only; the children of its trace follow it, in
    # the same batch or in later ones, whatever their order.
    trace = trace_id()
    root = named("t-root-only", "ex-root-only", trace_id=trace, name="root")
    early_child = span_record(trace_id=trace, parent_span_id=root.span_id)
    await store.ingest([early_child, root])
    late_child = span_record(trace_id=trace, parent_span_id=root.span_id)
    await store.ingest([late_child])
    for record in (early_child, late_child):
        span = await store.get_span(record.span_id)
        assert (span["task_id"], span["execution_id"]) == ("t-root-only", "ex-root-only")
    assert (await store.get_task("t-root-only"))["span_count"] == 3
    with pytest.raises(NotFound):  # no task was made of the trace id
        await store.get_task(trace)


# -- sequence numbers ---------------------------------------------------------------------------


async def test_sequences_follow_start_time_within_each_task(store: EvolutionStore) -> None:
    starts_a = [50, 10, 30, 20, 40]
    starts_b = [3, 1, 2]
    batch = [named("t-a", start_time=t) for t in starts_a] + [
        named("t-b", start_time=t) for t in starts_b
    ]
    batch = batch[::2] + batch[1::2]  # the two tasks interleaved, in no order
    await store.ingest(batch)
    for task, starts in (("t-a", starts_a), ("t-b", starts_b)):
        numbers = await sequences(store, task)
        by_start = {r.start_time: numbers[r.span_id] for r in batch if r.span_id in numbers}
        assert [by_start[t] for t in sorted(starts)] == list(range(1, len(starts) + 1))


async def test_equal_start_times_keep_the_batch_order(store: EvolutionStore) -> None:
    records = [named("t-ties", start_time=1_000) for _ in range(4)]
    await store.ingest(records)
    numbers = await sequences(store, "t-ties")
    assert [numbers[record.span_id] for record in records] == [1, 2, 3, 4]


async def test_a_later_batch_numbers_after_the_stored_spans(store: EvolutionStore) -> None:
    # Sequence numbers are handed out in arrival order across batches: a span that started
    # earlier but arrived later comes after the stored ones.
    first = [named("t-later", start_time=t) for t in (100, 200)]
    second = [named("t-later", start_time=t) for t in (50, 10)]
    await store.ingest(first)
    await store.ingest(second)
    numbers = await sequences(store, "t-later")
    assert [numbers[r.span_id] for r in first] == [1, 2]
    assert [numbers[r.span_id] for r in second] == [4, 3]


# -- duplicates ---------------------------------------------------------------------------------


async def test_a_span_repeated_in_one_batch_is_stored_once(store: EvolutionStore) -> None:
    record = named("t-dup")
    again = span_record(trace_id=record.trace_id, span_id=record.span_id, name="repeat")
    other = named("t-dup")
    result = await store.ingest([record, again, other])
    assert (result.accepted, result.duplicates, result.rejected) == (2, 1, 0)
    assert (await store.get_span(record.span_id))["name"] == record.name  # the first wins
    assert (await store.get_task("t-dup"))["span_count"] == 2
    assert sorted((await sequences(store, "t-dup")).values()) == [1, 2]


async def test_the_same_span_id_in_two_traces_is_two_spans(store: EvolutionStore) -> None:
    shared = span_id()
    result = await store.ingest([span_record(span_id=shared), span_record(span_id=shared)])
    assert (result.accepted, result.duplicates) == (2, 0)


async def test_batches_applied_together_count_their_own_duplicates(store: EvolutionStore) -> None:
    first = [named("t-pair") for _ in range(2)]
    second = [first[1], named("t-pair")]
    results = await store.writer.submit(
        lambda conn, ctx: apply_span_batches(
            conn, ctx, [prepared(store, first), prepared(store, second)]
        )
    )
    assert results == [IngestResult(accepted=2), IngestResult(accepted=1, duplicates=1)]
    assert (await store.get_task("t-pair"))["span_count"] == 3


async def test_carried_rewards_are_counted_once(store: EvolutionStore) -> None:
    agent = span_record(name="agent")
    carrier = span_record(
        trace_id=agent.trace_id,
        parent_span_id=agent.span_id,
        name="agentlightning.annotation",
        attributes={"agentlightning.reward.0.value": 0.5},
    )
    first = await store.ingest([agent, carrier])
    assert (first.accepted, first.rewards) == (2, 1)
    again = await store.ingest([agent, carrier])
    assert (again.accepted, again.duplicates, again.rewards) == (0, 2, 0)
    [reward] = await store.span_rewards(agent.span_id)
    assert (reward["value"], reward["span_ids"]) == (0.5, [agent.span_id])


# -- root outcomes ------------------------------------------------------------------------------


@pytest.mark.parametrize("error_first", [True, False])
async def test_any_failed_root_fails_its_execution(
    store: EvolutionStore, error_first: bool
) -> None:
    roots = [named("t-two-roots", "ex-two-roots", status_code=s) for s in ("ok", "error")]
    await store.ingest(roots[::-1] if error_first else roots)
    assert (await store.get_execution("ex-two-roots"))["status"] == "failed"
    assert (await store.get_task("t-two-roots"))["status"] == "failed"


async def test_a_root_still_open_leaves_its_execution_running(store: EvolutionStore) -> None:
    await store.ingest([named("t-open", "ex-open", end_time=None)])
    execution = await store.get_execution("ex-open")
    assert (execution["status"], execution["ended_at"]) == ("running", None)
    assert (await store.get_task("t-open"))["status"] == "running"


async def test_an_explicit_status_wins_over_a_later_root(store: EvolutionStore) -> None:
    child = named("t-explicit", "ex-explicit", parent_span_id=span_id())
    await store.ingest([child])
    await store.set_execution_status("ex-explicit", "timeout")
    await store.ingest([named("t-explicit", "ex-explicit", trace_id=child.trace_id)])
    assert (await store.get_execution("ex-explicit"))["status"] == "timeout"
    assert (await store.get_task("t-explicit"))["status"] == "failed"


async def test_a_cancelled_task_stays_cancelled(store: EvolutionStore) -> None:
    child = named("t-cancel", "ex-cancel", parent_span_id=span_id())
    await store.ingest([child])
    await store.set_task_status("t-cancel", "cancelled")
    await store.ingest([named("t-cancel", "ex-cancel", trace_id=child.trace_id)])
    assert (await store.get_execution("ex-cancel"))["status"] == "succeeded"
    assert (await store.get_task("t-cancel"))["status"] == "cancelled"


# -- spans the database refuses -----------------------------------------------------------------


@pytest.mark.parametrize("start_time", [2**63, 2**64], ids=["2**63", "2**64"])
async def test_a_span_the_database_refuses_is_rejected_alone(
    store: EvolutionStore, start_time: int
) -> None:
    trace = trace_id()
    good = [named("t-refused", trace_id=trace, start_time=1_000 + i) for i in range(4)]
    bad = SpanRecord(
        trace_id=trace, span_id=span_id(), name="bad", start_time=start_time, end_time=None
    )
    batch = prepared(store, [*good[:2], bad, *good[2:]])
    batch.rewards.append(RewardIn(value=1.0, span_id=good[0].span_id))
    result = await store.ingest_prepared(batch)
    assert (result.accepted, result.rejected, result.duplicates, result.rewards) == (4, 1, 0, 1)
    assert batch.report.rejected == 1
    assert bad.span_id in batch.report.error_message
    stored = await sequences(store, "t-refused")
    assert set(stored) == {record.span_id for record in good}
    assert sorted(stored.values()) == [1, 2, 3, 4]
    assert (await store.get_task("t-refused"))["span_count"] == 4
    assert len(await store.span_rewards(good[0].span_id)) == 1


async def test_ingest_reports_the_rejected_span_in_its_result(store: EvolutionStore) -> None:
    good = span_record()
    bad = span_record(start_time=2**64, end_time=2**64 + 1)
    result = await store.ingest([good, bad])
    assert (result.accepted, result.rejected) == (1, 1)
    assert (await store.get_span(good.span_id))["span_id"] == good.span_id
    with pytest.raises(NotFound):  # nothing of it was stored
        await store.get_span(bad.span_id)


# -- statements ---------------------------------------------------------------------------------


async def test_spans_into_stored_tasks_take_statements_per_group_not_per_span(
    store_url: str,
) -> None:
    statements: list[str] = []
    store = await EvolutionStore.open(
        store_url, statement_hook=lambda sql, _: statements.append(" ".join(sql.split()))
    )
    try:
        children = [
            named(f"t-{i}", f"ex-{i}", parent_span_id=span_id(), attributes={"session.id": "s"})
            for i in range(50)
        ]
        await store.ingest(children)  # 50 stored tasks, their executions running
        roots = [
            named(f"t-{i}", f"ex-{i}", trace_id=child.trace_id) for i, child in enumerate(children)
        ]
        more = [named(f"t-{i % 50}") for i in range(150)]
        statements.clear()
        result = await store.ingest([*roots, *more])
        assert (result.accepted, result.rejected) == (200, 0)
        counts = [(await store.get_task(f"t-{i}"))["span_count"] for i in (0, 49)]
        assert counts == [5, 5]  # a child, its root, three more
        assert (await store.get_execution("ex-7"))["status"] == "succeeded"
    finally:
        await store.close()
    settling = [sql for sql in statements if sql.upper().startswith("UPDATE EXECUTIONS")]
    assert len(settling) <= 2  # one per outcome
    assert len(statements) <= 40, statements
