"""What the pattern learner reads (evolution_store/pattern_facts.py) through the store, on both
backends: every field of `ExecutionFacts`, rewards linked each way, the agent, since and limit
filters, and a statement count that grows with chunks, not with executions."""

from __future__ import annotations

import time
from typing import Any

import pytest
from factories import span_id, trace_id

from evolution_store import EvolutionStore, InvalidInput, pattern_facts
from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from evolution_store.pattern_facts import ExecutionFacts


async def new_execution(
    store: EvolutionStore,
    *,
    name: str = "solve",
    tags: list[str] | None = None,
    config: dict[str, Any] | None = None,
    task_id: str | None = None,
) -> dict[str, Any]:
    """An execution of a new task (or a retry of `task_id`)."""
    if task_id is None:
        task, _ = await store.create_task(TaskIn(name=name, tags=tags or []))
        task_id = task["id"]
    return await store.start_execution(task_id, ExecutionIn(config=config or {}))


def span(execution: dict[str, Any], name: str, **fields: Any) -> SpanRecord:
    """A span of `execution`: 1 ms long from `start` (default: now), a child unless told."""
    start = fields.pop("start", None) or time.time_ns()
    return SpanRecord(
        trace_id=fields.pop("trace", None) or trace_id(),
        span_id=fields.pop("span", None) or span_id(),
        name=name,
        start_time=start,
        end_time=fields.pop("end", start + 1_000_000),
        task_id=execution["task_id"],
        execution_id=execution["id"],
        **fields,
    )


async def facts_of(store: EvolutionStore, execution_id: str, **filters: Any) -> ExecutionFacts:
    found = {fact.execution_id: fact for fact in await store.execution_facts(**filters)}
    return found[execution_id]


async def test_every_field_of_an_execution(store: EvolutionStore) -> None:
    before = time.time_ns()
    execution = await new_execution(
        store, name="triage", tags=["vip"], config={"temperature": 0.2, "model": "x"}
    )
    after = time.time_ns()
    trace, root = trace_id(), span_id()
    t0 = 1_700_000_000_000_000_000
    parent = {"trace": trace, "parent_span_id": root}
    spans = [
        span(
            execution,
            "agent",
            trace=trace,
            span=root,
            start=t0,
            end=t0 + 40_000_000,
            attributes={"gen_ai.agent.name": "support"},
            tags=["beta"],
        ),
        span(
            execution,
            "chat",
            start=t0 + 1,
            end=t0 + 2,
            **parent,
            attributes={
                "gen_ai.agent.name": "support",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 100,
                "gen_ai.usage.output_tokens": 20,
                "llm.cost.total": 0.5,
                "evolution.prompt.id": "p-7",
            },
        ),
        # A tool by its attribute (the span's name is not the tool's)
        span(
            execution,
            "call",
            start=t0 + 3,
            end=t0 + 4,
            **parent,
            attributes={"gen_ai.tool.name": "search"},
            tags=["beta", "alpha"],
        ),
        # by operation (no tool attribute): the span's name is the tool
        span(
            execution,
            "lookup",
            start=t0 + 5,
            end=t0 + 6,
            **parent,
            attributes={"gen_ai.operation.name": "execute_tool"},
        ),
        # OpenInference's span kind TOOL
        span(
            execution,
            "fetch",
            start=t0 + 7,
            end=t0 + 8,
            **parent,
            attributes={"openinference.span.kind": "TOOL"},
        ),
        # by name
        span(execution, "tool.answer", start=t0 + 9, end=t0 + 10, **parent),
        span(
            execution,
            "call",
            start=t0 + 11,
            end=t0 + 12,
            **parent,
            attributes={"gen_ai.tool.name": "search"},
        ),
        # errors: an exception event, and a message with no event
        span(
            execution,
            "chat",
            start=t0 + 13,
            end=t0 + 14,
            **parent,
            status_code="error",
            status_message="boom",
            events=[
                {
                    "name": "exception",
                    "time_unix_nano": t0,
                    "attributes": {"exception.type": "TimeoutError"},
                }
            ],
            attributes={
                "gen_ai.agent.name": "helper",
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "mini",
                "gen_ai.usage.input_tokens": 5,
            },
        ),
        span(
            execution,
            "parse",
            start=t0 + 15,
            end=t0 + 50_000_000,
            **parent,
            status_code="error",
            status_message="x" * 100,
        ),
        # an exception event on a span that did not fail is not an error type
        span(
            execution,
            "retry",
            start=t0 + 17,
            end=t0 + 18,
            **parent,
            events=[{"name": "exception", "attributes": {"exception.type": "Ignored"}}],
        ),
    ]
    await store.ingest(spans)
    await store.set_execution_status(execution["id"], "failed")
    facts = await facts_of(store, execution["id"])
    assert facts.task_id == execution["task_id"] and facts.task_name == "triage"
    assert facts.agent == "support"  # two spans against helper's one
    assert facts.status == "failed"
    assert facts.config == {"temperature": 0.2, "model": "x"}
    assert facts.tags == ("alpha", "beta", "vip")
    assert facts.models == ("gpt-4o", "mini")
    assert facts.tools == ("search", "lookup", "fetch", "tool.answer", "search")
    assert facts.span_names == tuple(
        sorted({"agent", "chat", "call", "lookup", "fetch", "tool.answer", "parse", "retry"})
    )
    assert facts.error_types == ("TimeoutError", "error: " + "x" * 80)
    assert facts.prompt_id == "p-7"  # no config prompt_id: the span attribute
    assert facts.tokens == 125.0
    assert facts.cost == 0.5
    assert facts.latency_ms == pytest.approx(50.0)
    assert facts.reward is None
    assert before <= facts.started_at <= after
    assert facts.sample_span_ids[0] == root and len(facts.sample_span_ids) == 3
    assert set(facts.sample_span_ids) <= {s.span_id for s in spans}


async def test_an_execution_without_spans_has_empty_facts(store: EvolutionStore) -> None:
    execution = await new_execution(store, config={"prompt_id": "p-1", "k": [1, 2]})
    facts = await facts_of(store, execution["id"])
    assert facts.agent is None and facts.prompt_id == "p-1"
    assert (facts.tags, facts.models, facts.tools, facts.span_names) == ((), (), (), ())
    assert facts.error_types == () and facts.sample_span_ids == ()
    assert (facts.tokens, facts.latency_ms, facts.cost, facts.reward) == (None,) * 4


async def test_shared_config_values_keep_their_types(store: EvolutionStore) -> None:
    # Values are shared across executions to save memory; True, 1 and 1.0 must not merge.
    configs = [{"flag": 1, "t": 1.0}, {"flag": True, "t": 1}, {"flag": 1.0, "t": True}]
    executions = [await new_execution(store, config=config) for config in configs]
    for execution, config in zip(executions, configs, strict=True):
        found = (await facts_of(store, execution["id"])).config
        assert [(type(v), v) for v in found.values()] == [(type(v), v) for v in config.values()]


async def test_rewards_linked_each_way_are_averaged_once_each(store: EvolutionStore) -> None:
    first = await new_execution(store)
    retry = await new_execution(store, task_id=first["task_id"])
    other = await new_execution(store)
    trace, root, child = trace_id(), span_id(), span_id()
    await store.ingest(
        [
            span(first, "agent", trace=trace, span=root, attributes={"session.id": "s-9"}),
            span(first, "step", trace=trace, span=child, parent_span_id=root),
            span(other, "agent"),
        ]
    )
    for reward in (
        RewardIn(value=1.0, span_id=child),  # to one of its spans
        RewardIn(value=0.0, trace_id=trace),  # to its trace
        RewardIn(value=0.5, execution_id=first["id"]),  # to the execution
        RewardIn(value=0.2, links={"session.id": "s-9"}),  # to its spans by a selector
        RewardIn(value=0.9, task_id=first["task_id"]),  # to its task: both executions
        RewardIn(value=5.0, name="other", execution_id=first["id"]),  # another name
        RewardIn(value=3.0, execution_id=other["id"], name="quality"),
    ):
        await store.add_reward(reward)
    found = {fact.execution_id: fact for fact in await store.execution_facts()}
    assert found[first["id"]].reward == pytest.approx((1.0 + 0.0 + 0.5 + 0.2 + 0.9) / 5)
    assert found[retry["id"]].reward == pytest.approx(0.9)  # the task's, and no span of it
    assert found[other["id"]].reward is None
    named = {f.execution_id: f for f in await store.execution_facts(reward_name="quality")}
    assert named[other["id"]].reward == 3.0 and named[first["id"]].reward is None


async def test_an_execution_reward_counts_before_any_span_arrives(store: EvolutionStore) -> None:
    execution = await new_execution(store)
    await store.add_reward(RewardIn(value=0.25, execution_id=execution["id"]))
    assert (await facts_of(store, execution["id"])).reward == 0.25
    await store.ingest([span(execution, "agent")])  # now linked to its root as well
    assert (await facts_of(store, execution["id"])).reward == 0.25


async def test_the_config_prompt_id_wins_over_the_span_attribute(store: EvolutionStore) -> None:
    execution = await new_execution(store, config={"prompt_id": 42})
    await store.ingest([span(execution, "chat", attributes={"evolution.prompt.id": "p-2"})])
    assert (await facts_of(store, execution["id"])).prompt_id == "42"


async def test_agent_ties_go_to_the_smallest_name(store: EvolutionStore) -> None:
    execution = await new_execution(store)
    await store.ingest(
        [
            span(execution, "a", attributes={"gen_ai.agent.name": name})
            for name in ("zeta", "alpha", "zeta", "alpha", "mid")
        ]
    )
    assert (await facts_of(store, execution["id"])).agent == "alpha"


async def test_agent_since_and_limit_filters(store: EvolutionStore) -> None:
    older = await new_execution(store)
    await store.ingest([span(older, "run", attributes={"gen_ai.agent.name": "support"})])
    # A sub-agent's spans do not make an execution the sub-agent's: the most frequent wins.
    mixed = await new_execution(store)
    await store.ingest(
        [span(mixed, "run", attributes={"gen_ai.agent.name": "billing"}) for _ in range(2)]
        + [span(mixed, "sub", attributes={"gen_ai.agent.name": "support"})]
    )
    cutoff = time.time_ns()
    newer = await new_execution(store)
    await store.ingest([span(newer, "run", attributes={"gen_ai.agent.name": "support"})])

    def ids(facts: list[ExecutionFacts]) -> list[str]:
        return [fact.execution_id for fact in facts]

    assert ids(await store.execution_facts()) == [newer["id"], mixed["id"], older["id"]]
    assert ids(await store.execution_facts(agent="support")) == [newer["id"], older["id"]]
    assert ids(await store.execution_facts(agent="billing")) == [mixed["id"]]
    assert ids(await store.execution_facts(agent="nobody")) == []
    assert ids(await store.execution_facts(since=cutoff)) == [newer["id"]]
    assert ids(await store.execution_facts(agent="support", since=cutoff)) == [newer["id"]]
    assert ids(await store.execution_facts(limit=2)) == [newer["id"], mixed["id"]]
    assert ids(await store.execution_facts(agent="support", limit=1)) == [newer["id"]]
    with pytest.raises(InvalidInput, match="limit"):
        await store.execution_facts(limit=0)


async def test_statements_grow_with_chunks_not_executions(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pattern_facts, "FACTS_CHUNK", 4)
    statements: list[str] = []
    store = await EvolutionStore.open(
        store_url, statement_hook=lambda sql, _: statements.append(sql)
    )
    try:
        made = []
        for index in range(10):
            execution = await new_execution(store, config={"i": index})
            made.append(execution["id"])
            await store.ingest([span(execution, "run"), span(execution, "tool.x")])
            await store.add_reward(RewardIn(value=index / 10, execution_id=execution["id"]))
        statements.clear()
        facts = await store.execution_facts()
        # three chunks (4, 4, 2): executions, their spans, their rewards
        assert len(statements) == 9, statements
        assert [fact.execution_id for fact in facts] == made[::-1]
        assert [fact.reward for fact in facts] == pytest.approx([i / 10 for i in range(10)][::-1])
        assert all(fact.tools == ("tool.x",) for fact in facts)
        statements.clear()
        assert len(await store.execution_facts(agent="nobody", limit=3)) == 0
        assert len(statements) == 1  # no execution has a span of that agent
    finally:
        await store.close()
