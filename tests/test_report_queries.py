"""The static report's reads (evolution_store/report_queries.py) through the store, on both
backends: which tasks a selection holds, executions with their spans' sums and each linked
reward counted once, waterfalls capped per execution with the rewards on their spans, and the
rewards that judge a selection, pending ones included."""

from __future__ import annotations

import pytest
from factories import span_record

from evolution_store import EvolutionStore, NotFound, RewardIn
from evolution_store.models import TaskIn

T0 = 1_750_000_000 * 10**9


def span(task: str, agent: str, name: str, offset: int, **overrides):
    attributes = {"evolution.task.id": task, "gen_ai.agent.name": agent}
    return span_record(
        name=name,
        start_time=T0 + offset,
        end_time=T0 + offset + 1_000,
        attributes=attributes | overrides.pop("attributes", {}),
        **overrides,
    )


@pytest.fixture
async def runs(store: EvolutionStore) -> dict:
    """Task a (agent alpha): a root and three LLM children, one child failed; task b (agent
    beta): one span; task c: no spans. A reward judges every span of a (a link selector on
    its trace id), another judges b's span, a third waits for c's."""
    root = span("a", "alpha", "root", 0)
    children = [
        span(
            "a",
            "alpha",
            f"child-{index}",
            100 * (index + 1),
            trace_id=root.trace_id,
            parent_span_id=root.span_id,
            status_code="error" if index == 2 else "ok",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "m",
                "gen_ai.usage.input_tokens": 10,
                "gen_ai.usage.output_tokens": 5,
            },
        )
        for index in range(3)
    ]
    other = span("b", "beta", "other", 5_000)
    await store.ingest([root, *children, other])
    await store.create_task(TaskIn(id="c", name="idle"))
    both = {"trace_id": root.trace_id}
    await store.add_reward(RewardIn(name="judge", value=0.5, links=both))
    await store.add_reward(
        RewardIn(name="judge", value=1.0, span_id=other.span_id, trace_id=other.trace_id)
    )
    await store.add_reward(RewardIn(name="late", value=0.25, task_id="c"))
    return {"root": root, "children": children, "other": other}


async def test_report_tasks_select_one_an_agents_or_all(store, runs):
    assert [t["id"] for t in await store.report_tasks(task_id="b")] == ["b"]
    assert [t["id"] for t in await store.report_tasks(agent="alpha")] == ["a"]
    assert {t["id"] for t in await store.report_tasks()} == {"a", "b", "c"}
    assert await store.report_tasks(since=2**62) == []
    assert len(await store.report_tasks(limit=2)) == 2
    with pytest.raises(NotFound):
        await store.report_tasks(task_id="missing")


async def test_report_tasks_leave_out_the_agents_marker_tasks(store, runs):
    await store.add_marker(agent="alpha", kind="prompt.promoted")
    assert {t["id"] for t in await store.report_tasks()} == {"a", "b", "c"}
    assert [t["id"] for t in await store.report_tasks(agent="alpha")] == ["a"]


async def test_execution_summaries_sum_spans_and_count_each_reward_once(store, runs):
    summaries = {s["task_id"]: s for s in await store.execution_summaries(["a", "b", "c"])}
    assert set(summaries) == {"a", "b"}  # c has no execution
    a = summaries["a"]
    assert (a["span_count"], a["error_count"]) == (4, 1)
    assert (a["input_tokens"], a["output_tokens"]) == (30, 15)
    assert (a["start_ns"], a["end_ns"]) == (T0, T0 + 300 + 1_000)
    assert a["agent"] == "alpha"
    # the reward linked to all four spans of a counts once
    assert (a["reward_count"], a["reward_mean"]) == (1, 0.5)
    assert (summaries["b"]["reward_count"], summaries["b"]["reward_mean"]) == (1, 1.0)
    assert await store.execution_summaries([]) == []


async def test_waterfall_spans_are_capped_per_execution_and_carry_their_rewards(store, runs):
    ids = {s["task_id"]: s["id"] for s in await store.execution_summaries(["a", "b"])}
    traces = await store.waterfall_spans([ids["a"], ids["b"]], cap=2)
    a, b = traces[ids["a"]], traces[ids["b"]]
    assert [s["name"] for s in a["spans"]] == ["root", "child-0"]
    assert a["capped"] and not b["capped"]
    assert [[r["value"] for r in s["rewards"]] for s in a["spans"]] == [[0.5], [0.5]]
    assert a["spans"][1]["attributes"]["gen_ai.request.model"] == "m"
    assert [r["name"] for r in b["spans"][0]["rewards"]] == ["judge"]
    await store.ingest([span("d", "alpha", "unjudged", 9_000)])
    (d,) = await store.execution_summaries(["d"])
    assert (await store.waterfall_spans([d["id"]]))[d["id"]]["spans"][0]["rewards"] == []
    full = await store.waterfall_spans([ids["a"]], cap=10)
    assert len(full[ids["a"]]["spans"]) == 4 and not full[ids["a"]]["capped"]
    assert await store.waterfall_spans([]) == {}


async def test_selection_rewards_summarise_and_list_linked_and_pending_rewards(store, runs):
    found = await store.selection_rewards(["a", "c"])
    assert {g["key"]: g["count"] for g in found["summary"]} == {"judge": 1, "late": 1}
    assert found["total"] == 2
    by_name = {r["name"]: r for r in found["items"]}
    assert by_name["late"]["pending"] and not by_name["judge"]["pending"]
    everything = await store.selection_rewards(["a", "b", "c"], limit=1)
    assert everything["total"] == 3 and len(everything["items"]) == 1
    judge = next(g for g in everything["summary"] if g["key"] == "judge")
    assert judge["count"] == 2 and judge["mean"] == pytest.approx(0.75)
    assert await store.selection_rewards([]) == {"summary": [], "items": [], "total": 0}
