"""`EvolutionStore.decision_steps` (evolution_store/decision_queries.py) on both backends: steps
in `sequence` order per execution, rewards linked to a step's span on that step, run-level
rewards (execution, task, trace, root span) on the last step once each, the agent / name /
since filters, malformed decisions left out, and a statement count independent of the number
of executions."""

from __future__ import annotations

from typing import Any

import pytest
from factories import span_id, trace_id

from evolution_store import EvolutionStore
from evolution_store.learn.ppo import episodes_from_steps
from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn

AGENT = "router"
BASE = 1_700_000_000_000_000_000


async def new_execution(store: EvolutionStore) -> dict[str, Any]:
    task, _ = await store.create_task(TaskIn(name="route"))
    return await store.start_execution(task["id"], ExecutionIn())


def decision(
    execution: dict[str, Any],
    *,
    trace: str,
    at: int,
    action: str = "a",
    actions: Any = ("a", "b"),
    prob: Any = 0.5,
    name: str = "route",
    agent: str = AGENT,
    parent: str | None = None,
    **state: Any,
) -> SpanRecord:
    attributes: dict[str, Any] = {
        "gen_ai.agent.name": agent,
        "evolution.decision.name": name,
        "evolution.decision.action": action,
        "evolution.decision.actions": list(actions) if not isinstance(actions, str) else actions,
        **{f"evolution.decision.state.{k}": v for k, v in state.items()},
    }
    if prob is not None:
        attributes["evolution.decision.prob"] = prob
    return SpanRecord(
        trace_id=trace,
        span_id=span_id(),
        parent_span_id=parent,
        name="evolution.decision",
        start_time=BASE + at,
        end_time=BASE + at + 1,
        task_id=execution["task_id"],
        execution_id=execution["id"],
        attributes=attributes,
    )


def root(execution: dict[str, Any], *, trace: str, at: int) -> SpanRecord:
    return SpanRecord(
        trace_id=trace,
        span_id=span_id(),
        name="agent.run",
        start_time=BASE + at,
        end_time=BASE + at + 100,
        task_id=execution["task_id"],
        execution_id=execution["id"],
        attributes={"gen_ai.agent.name": AGENT},
    )


async def test_steps_in_sequence_with_rewards_credited(store: EvolutionStore) -> None:
    first = await new_execution(store)
    second = await new_execution(store)
    trace1, trace2 = trace_id(), trace_id()
    run1 = root(first, trace=trace1, at=0)
    # Ingested in this order, so `sequence` runs step0, step1, step2 even though step1 starts
    # last: the order is the store's sequence, not the clock.
    step0 = decision(first, trace=trace1, at=10, parent=run1.span_id, action="b", intent="x")
    step1 = decision(first, trace=trace1, at=30, parent=run1.span_id, prob=None, turn=2)
    step2 = decision(first, trace=trace1, at=20, parent=run1.span_id, prob=0.25, vip=True)
    await store.ingest([run1])
    await store.ingest([step0])
    await store.ingest([step1])
    await store.ingest([step2])
    other_name = decision(first, trace=trace1, at=40, parent=run1.span_id, name="other")
    other_agent = decision(first, trace=trace1, at=41, parent=run1.span_id, agent="someone")
    bad_action = decision(first, trace=trace1, at=42, parent=run1.span_id, action="zzz")
    no_actions = decision(first, trace=trace1, at=43, parent=run1.span_id, actions="oops")
    bad_prob = decision(second, trace=trace2, at=5, prob=1.5)  # the root of its trace
    await store.ingest([other_name, other_agent, bad_action, no_actions, bad_prob])

    async def reward(value: float, **target: Any) -> None:
        await store.add_reward(RewardIn(value=value, **target))

    await reward(1.0, span_id=step0.span_id, trace_id=trace1)
    await reward(0.5, span_id=step0.span_id, trace_id=trace1)  # summed with the first
    await reward(2.0, span_id=step1.span_id, trace_id=trace1)
    await reward(10.0, execution_id=first["id"])
    await reward(20.0, task_id=first["task_id"])
    await reward(40.0, trace_id=trace1)
    await reward(80.0, span_id=run1.span_id, trace_id=trace1)  # linked to the root
    await reward(3.0, span_id=bad_prob.span_id, trace_id=trace2)  # a step's and the root's
    await reward(-1.0, execution_id=second["id"])
    await reward(99.0, span_id=other_name.span_id, trace_id=trace1)  # another decision's

    found = await store.decision_steps(agent=AGENT, decision="route")
    assert [e["execution_id"] for e in found] == [second["id"], first["id"]]  # by first start
    late, early = found
    assert late["task_id"] == second["task_id"]
    assert [s["span_id"] for s in early["steps"]] == [step0.span_id, step1.span_id, step2.span_id]
    s0, s1, s2 = early["steps"]
    assert s0["state"] == {"intent": "x"} and s0["action"] == "b" and s0["prob"] == 0.5
    assert s0["actions"] == ["a", "b"] and s0["trace_id"] == trace1
    assert s1["state"] == {"turn": 2} and s1["prob"] is None
    assert s2["state"] == {"vip": True} and s2["prob"] == 0.25
    assert s0["reward"] == pytest.approx(1.5)
    assert s1["reward"] == pytest.approx(2.0)
    assert early["terminal_reward"] == pytest.approx(150.0)
    assert s2["reward"] == pytest.approx(150.0)
    # The decision is its trace's root: the execution's reward, resolved to that root, is
    # linked to the step's own span, and counts once, there.
    (only,) = late["steps"]
    assert only["prob"] is None  # 1.5 is no probability
    assert late["terminal_reward"] == 0.0
    assert only["reward"] == pytest.approx(2.0)

    episodes = episodes_from_steps(found)
    assert [len(e.steps) for e in episodes] == [1, 3]
    assert episodes[1].steps[2].reward == pytest.approx(150.0)
    assert episodes[1].steps[0].actions == ("a", "b")

    assert await store.decision_steps(agent=AGENT, decision="nothing") == []
    assert await store.decision_steps(agent="nobody", decision="route") == []
    since = await store.decision_steps(agent=AGENT, decision="route", since=BASE + 6)
    assert [e["execution_id"] for e in since] == [first["id"]]


async def test_statements_do_not_grow_with_executions(store_url: str) -> None:
    statements: list[str] = []
    store = await EvolutionStore.open(
        store_url, statement_hook=lambda sql, _: statements.append(sql)
    )
    try:
        for index in range(12):
            execution = await new_execution(store)
            trace = trace_id()
            await store.ingest(
                [decision(execution, trace=trace, at=index * 10 + k, step=k) for k in range(3)]
            )
            await store.add_reward(RewardIn(value=float(index), execution_id=execution["id"]))
        statements.clear()
        found = await store.decision_steps(agent=AGENT, decision="route")
        assert len(statements) == 3, statements  # spans, linked rewards, run-level rewards
        assert len(found) == 12
        assert [e["steps"][-1]["reward"] for e in found] == [float(i) for i in range(12)]
        assert all([s["state"]["step"] for s in e["steps"]] == [0, 1, 2] for e in found)
        statements.clear()
        assert await store.decision_steps(agent="nobody", decision="route") == []
        assert len(statements) == 1
    finally:
        await store.close()
