"""The dashboard's own reads (`ui_queries` through `EvolutionStore.ui_*`), on SQLite and
Postgres: what each returns, that the bounded ones stop at their bound, and that each costs
a fixed number of statements however many spans are stored."""

from __future__ import annotations

import time

from factories import reward_in, span_id, span_record, task_in, trace_id

from evolution_store import ui_queries
from evolution_store.models import ExecutionIn
from evolution_store.registry_models import ApproveIn, PromptIn


def spans_of(agent: str, count: int, *, start: int, errors: int = 0, **attributes):
    """`count` root spans of `agent`, 1 ms apart, the first `errors` of them failed."""
    return [
        span_record(
            trace_id=trace_id(),
            span_id=span_id(),
            start_time=start + index * 1_000_000,
            end_time=start + index * 1_000_000 + (index + 1) * 1_000,
            status_code="error" if index < errors else "ok",
            attributes={"gen_ai.agent.name": agent, **attributes},
        )
        for index in range(count)
    ]


async def test_agents_are_listed_in_order_without_repeats(store):
    now = time.time_ns()
    await store.ingest(spans_of("b-agent", 3, start=now) + spans_of("a-agent", 2, start=now))
    await store.ingest([span_record()])  # no agent
    assert await store.ui_agents() == ["a-agent", "b-agent"]
    assert await store.ui_agents(limit=1) == ["a-agent"]


async def test_agent_summary_counts_runs_errors_latency_and_rewards(store):
    now = time.time_ns()
    runs = spans_of("planner", 10, start=now, errors=3)
    await store.ingest(runs)
    await store.add_reward(reward_in(0.5, span_id=runs[0].span_id, trace_id=runs[0].trace_id))
    await store.add_reward(reward_in(1.0, span_id=runs[1].span_id, trace_id=runs[1].trace_id))
    summary = await store.ui_agent_summary("planner")
    assert summary["runs"] == 10 and summary["errors"] == 3
    assert summary["success_rate"] == 0.7
    assert summary["latency_ms"]["p50"] == 0.0055  # durations 1..10 µs
    assert summary["reward"] == {"count": 2, "mean": 0.75}
    assert not summary["capped"]
    assert sum(bucket["runs"] for bucket in summary["series"]) == 10
    later = await store.ui_agent_summary("planner", since=now + 5_000_000)
    assert later["runs"] == 5 and later["errors"] == 0


async def test_agent_summary_reads_at_most_the_cap_newest_spans(store):
    now = time.time_ns()
    await store.ingest(spans_of("busy", 30, start=now, errors=10))
    recent = await store._read(ui_queries.agent_recent, "busy", cap=20)
    assert recent["capped"] and len(recent["rows"]) == 20
    summary = ui_queries.summarise_recent(recent, agent="busy")
    assert summary["errors"] == 0  # the ten failed spans are the oldest


async def test_agent_summary_leaves_markers_out(store):
    await store.ingest(spans_of("planner", 2, start=time.time_ns()))
    prompt, _ = await store.create_prompt(
        PromptIn(agent="planner", content="hi", status="candidate")
    )
    await store.approve_prompt(prompt["id"], ApproveIn(), approved_by="test")
    assert (await store.ui_agent_summary("planner"))["runs"] == 2
    markers = await store.ui_recent_markers()
    assert [m["kind"] for m in markers] == ["prompt.promoted"]
    assert [m["kind"] for m in await store.ui_recent_markers(agent="planner")] == [
        "prompt.promoted"
    ]
    assert await store.ui_recent_markers(agent="other") == []


async def test_tasks_filter_by_agent_status_tag_and_time(store):
    tagged, _ = await store.create_task(task_in(tags=["blue"]))
    plain, _ = await store.create_task(task_in())
    now = time.time_ns()
    await store.ingest(spans_of("coder", 1, start=now, **{"evolution.task.id": tagged["id"]}))
    await store.ingest(spans_of("writer", 1, start=now, **{"evolution.task.id": plain["id"]}))

    async def ids(**filters):
        return [task["id"] for task in (await store.list_tasks(**filters)).items]

    assert await ids(agent="coder") == [tagged["id"]]
    assert await ids(agent="writer") == [plain["id"]]
    assert await ids(agent="nobody") == []
    assert await ids(tag="blue") == [tagged["id"]]
    assert set(await ids(since=now - 60 * 10**9)) == {tagged["id"], plain["id"]}
    assert await ids(until=now - 60 * 10**9) == []
    first = await store.list_tasks(limit=1)
    second = await store.list_tasks(limit=1, cursor=first.next_cursor)
    assert {first.items[0]["id"], second.items[0]["id"]} == {tagged["id"], plain["id"]}


async def test_trace_spans_carry_their_rewards_and_stop_at_the_cap(store):
    trace = trace_id()
    now = time.time_ns()
    spans = [
        span_record(trace_id=trace, span_id=span_id(), start_time=now + i, end_time=now + i + 5)
        for i in range(4)
    ]
    await store.ingest(spans)
    for value in (0.2, 0.4):
        await store.add_reward(reward_in(value, span_id=spans[1].span_id, trace_id=trace))
    read = await store.ui_trace(trace)
    assert [s["span_id"] for s in read["spans"]] == [s.span_id for s in spans]
    judged = read["spans"][1]
    assert judged["reward_count"] == 2 and abs(judged["reward_mean"] - 0.3) < 1e-9
    assert read["spans"][0]["reward_count"] == 0 and not read["capped"]
    capped = await store._read(ui_queries.trace_spans, trace, cap=3)
    assert capped["capped"] and len(capped["spans"]) == 3
    assert (await store.ui_trace(trace_id()))["spans"] == []


async def test_task_traces_and_rewards_by_execution(store):
    task, _ = await store.create_task(task_in())
    first = await store.start_execution(task["id"], ExecutionIn())
    second = await store.start_execution(task["id"], ExecutionIn())
    now = time.time_ns()
    placed = {}
    for execution in (first, second):
        span = span_record(
            start_time=now,
            attributes={"evolution.task.id": task["id"], "evolution.execution.id": execution["id"]},
        )
        await store.ingest([span])
        placed[execution["id"]] = span
    judged = placed[second["id"]]
    await store.add_reward(reward_in(0.9, span_id=judged.span_id, trace_id=judged.trace_id))
    await store.add_reward(reward_in(0.1, execution_id=first["id"]))
    await store.add_reward(reward_in(0.5, task_id=task["id"]))
    traces = await store.ui_task_traces(task["id"])
    assert [t["execution_id"] for t in traces] == [first["id"], second["id"]]
    assert all(t["spans"] == 1 for t in traces)
    rewards = {r["value"]: r["execution_id"] for r in await store.ui_task_rewards(task["id"])}
    assert rewards == {0.9: second["id"], 0.1: first["id"], 0.5: None}


async def test_prompt_agents(store):
    for agent in ("zeta", "alpha", "zeta"):
        await store.create_prompt(PromptIn(agent=agent, content=f"{agent} {time.time_ns()}"))
    assert await store.ui_prompt_agents() == ["alpha", "zeta"]


async def test_reads_cost_the_same_statements_at_any_size(store_url):
    """A page's reads are a fixed number of statements, whatever the number of spans."""
    from evolution_store import EvolutionStore

    statements: list[str] = []
    store = await EvolutionStore.open(
        store_url, statement_hook=lambda sql, _: statements.append(sql)
    )
    try:
        counts = []
        for size in (5, 50):
            await store.ingest(spans_of("grower", size, start=time.time_ns()))
            statements.clear()
            await store.ui_agent_summary("grower")
            await store.ui_agents()
            counts.append(len(statements))
        assert counts[0] == counts[1]
    finally:
        await store.close()
