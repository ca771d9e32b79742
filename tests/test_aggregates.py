"""`aggregates`: reward summaries and agent stats through the store on both backends, and the
statistics helpers they use (pure)."""

from __future__ import annotations

import math

import pytest
from factories import span_record, trace_id
from scipy import stats

from evolution_store import EvolutionStore, InvalidInput
from evolution_store.aggregates import describe, percentile, t95
from evolution_store.models import ExecutionIn, RewardIn, TaskIn

MS = 1_000_000

# -- pure helpers -------------------------------------------------------------------------------


def test_t95() -> None:
    assert math.isnan(t95(0)) and math.isnan(t95(-3))
    assert (t95(1), t95(2), t95(30)) == pytest.approx((12.706, 4.303, 2.042), abs=1e-3)
    assert t95(31) == pytest.approx(2.0395, abs=1e-4)
    assert t95(10_000) == pytest.approx(1.96, abs=1e-3)
    quantiles = [t95(df) for df in range(1, 200)]
    assert quantiles == sorted(quantiles, reverse=True)  # narrower with more samples


def test_describe_one_value() -> None:
    assert describe(1, 0.7, 0.49) == {"count": 1, "mean": 0.7, "stdev": None, "ci95": [0.7, 0.7]}


def test_describe_from_running_sums() -> None:
    values = [0.2, 0.4, 0.6]
    summary = describe(3, sum(values), sum(v * v for v in values))
    assert summary["mean"] == pytest.approx(0.4)
    assert summary["stdev"] == pytest.approx(0.2)
    half = stats.t.ppf(0.975, 2) * 0.2 / math.sqrt(3)
    assert summary["ci95"] == [pytest.approx(0.4 - half), pytest.approx(0.4 + half)]


def test_describe_never_takes_the_root_of_a_rounding_error() -> None:
    # Equal values: sum of squares minus n * mean² may come out a hair below zero.
    values = [0.7] * 7
    summary = describe(7, sum(values), sum(v * v for v in values))
    assert summary["stdev"] == 0.0
    assert summary["ci95"] == [summary["mean"], summary["mean"]]


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([], 0.5, None),
        ([5], 0.99, 5),
        ([1, 2, 3, 4], 0.5, 2.5),
        ([1, 2, 3, 4], 0.0, 1),
        ([1, 2, 3, 4], 1.0, 4),
        (list(range(1, 11)), 0.95, 9.55),
        (list(range(1, 11)), 0.99, 9.91),
        ([10, 20], 0.25, 12.5),
    ],
)
def test_percentile_interpolates_between_ranks(
    values: list[int], fraction: float, expected: float | None
) -> None:
    assert percentile(values, fraction) == (None if expected is None else pytest.approx(expected))


# -- rewards_summary ----------------------------------------------------------------------------


async def test_an_empty_store_has_no_groups(store: EvolutionStore) -> None:
    for group_by in ("name", "tag", "agent", "config:prompt"):
        assert await store.rewards_summary(group_by) == []


@pytest.mark.parametrize("group_by", ["colour", "config:", "", "Name"])
async def test_unknown_groupings_are_invalid_input(store: EvolutionStore, group_by: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        await store.rewards_summary(group_by)
    assert refused.value.field == "group_by"


async def test_by_tag_counts_own_and_span_tags_once_each(store: EvolutionStore) -> None:
    span = span_record(tags=["both", "span-only"])
    untagged = span_record()
    await store.ingest([span, untagged])
    await store.add_reward(RewardIn(value=1.0, span_id=span.span_id, tags=["own", "both"]))
    await store.add_reward(RewardIn(value=0.0, span_id=untagged.span_id))
    groups = {group["key"]: group for group in await store.rewards_summary("tag")}
    assert set(groups) == {"both", "own", "span-only"}
    assert all((group["count"], group["mean"]) == (1, 1.0) for group in groups.values())


async def test_by_agent_puts_spans_without_an_agent_last(store: EvolutionStore) -> None:
    named = [span_record(attributes={"gen_ai.agent.name": "solver"}) for _ in range(2)]
    anonymous = span_record()
    await store.ingest([*named, anonymous])
    for span, value in zip([*named, anonymous], [0.0, 1.0, 0.25], strict=True):
        await store.add_reward(RewardIn(value=value, span_id=span.span_id))
    groups = await store.rewards_summary("agent")
    assert [group["key"] for group in groups] == ["solver", None]
    assert (groups[0]["count"], groups[0]["mean"]) == (2, 0.5)
    assert groups[0]["stdev"] == pytest.approx(math.sqrt(0.5))
    assert (groups[1]["count"], groups[1]["mean"]) == (1, 0.25)


async def test_by_config_counts_a_reward_reached_two_ways_once(store: EvolutionStore) -> None:
    # A reward on an execution is linked to its root span too: found through the execution
    # and through the span, it is one reward.
    await store.create_task(TaskIn(id="t-cfg"))
    execution = await store.start_execution("t-cfg", ExecutionIn(config={"prompt": "v1"}))
    root = span_record(
        attributes={"evolution.task.id": "t-cfg", "evolution.execution.id": execution["id"]}
    )
    await store.ingest([root])
    stored, _ = await store.add_reward(RewardIn(value=0.5, execution_id=execution["id"]))
    assert stored["span_ids"] == [root.span_id]
    await store.add_reward(RewardIn(value=1.0, span_id=root.span_id))
    [group] = await store.rewards_summary("config:prompt")
    assert (group["key"], group["count"], group["mean"]) == ("v1", 2, 0.75)


async def test_config_values_group_under_the_same_text_on_every_backend(
    store: EvolutionStore,
) -> None:
    await store.create_task(TaskIn(id="t-types"))
    for value in ("text", 2, 0.5, True):
        execution = await store.start_execution("t-types", ExecutionIn(config={"knob": value}))
        await store.add_reward(RewardIn(value=1.0, execution_id=execution["id"]))
    keys = sorted(group["key"] for group in await store.rewards_summary("config:knob"))
    assert keys == sorted(["text", "2", "0.5", "true"])


async def test_many_rewards_use_the_exact_t_quantile(store: EvolutionStore) -> None:
    values = [i / 40 for i in range(40)]
    for value in values:
        await store.add_reward(RewardIn(name="wide", value=value, task_id="t"))
    [group] = await store.rewards_summary("name")
    mean = sum(values) / 40
    stdev = math.sqrt(sum((v - mean) ** 2 for v in values) / 39)
    half = stats.t.ppf(0.975, 39) * stdev / math.sqrt(40)
    assert (group["key"], group["count"]) == ("wide", 40)
    assert group["mean"] == pytest.approx(mean)
    assert group["ci95"] == [pytest.approx(mean - half), pytest.approx(mean + half)]


async def test_tiny_values_do_not_underflow(store: EvolutionStore) -> None:
    for value in (1e-300, 2e-300, 5e-324):
        await store.add_reward(RewardIn(name="tiny", value=value, task_id="t"))
    [group] = await store.rewards_summary("name")
    assert group["count"] == 3
    assert group["mean"] == pytest.approx(1e-300, abs=1e-299)


# -- agent_stats --------------------------------------------------------------------------------


async def test_latency_percentiles_over_root_spans(store: EvolutionStore) -> None:
    agent = {"gen_ai.agent.name": "timer"}
    roots = [
        span_record(attributes=agent, start_time=1_000 * MS + i, end_time=1_000 * MS + i + d * MS)
        for i, d in enumerate(range(1, 11))
    ]
    child = span_record(
        trace_id=roots[0].trace_id,
        parent_span_id=roots[0].span_id,
        attributes=agent,
        start_time=2_000 * MS,
        end_time=2_500 * MS,  # not a run: its 500 ms does not count
    )
    await store.ingest([*roots, child])
    stats = await store.agent_stats("timer")
    assert (stats["spans"], stats["runs"], stats["errors"], stats["success_rate"]) == (
        11,
        10,
        0,
        1.0,
    )
    assert stats["latency_ms"] == {
        "p50": pytest.approx(5.5),
        "p95": pytest.approx(9.55),
        "p99": pytest.approx(9.91),
    }
    assert stats["time_range"] == {
        "start": "1970-01-01T00:00:01Z",
        "end": "1970-01-01T00:00:02.500000Z",
    }


async def test_an_agent_without_roots_is_measured_over_all_its_spans(
    store: EvolutionStore,
) -> None:
    parent = span_record(attributes={"gen_ai.agent.name": "boss"})
    helpers = [
        span_record(
            trace_id=parent.trace_id,
            parent_span_id=parent.span_id,
            attributes={"gen_ai.agent.name": "helper", "llm.cost.total": 0.25},
            status_code=status,
            start_time=parent.start_time + 1,
            end_time=parent.start_time + 1 + 2 * MS,
        )
        for status in ("ok", "error", "ok", "ok")
    ]
    await store.ingest([parent, *helpers])
    stats = await store.agent_stats("helper")
    assert (stats["runs"], stats["errors"], stats["success_rate"]) == (4, 1, 0.75)
    assert stats["latency_ms"]["p50"] == pytest.approx(2.0)
    assert stats["cost"] == pytest.approx(1.0)


async def test_the_window_bounds_start_times(store: EvolutionStore) -> None:
    agent = {"gen_ai.agent.name": "windowed"}
    spans = [span_record(attributes=agent, start_time=t, end_time=t + MS) for t in (100, 200, 300)]
    await store.ingest(spans)
    inside = await store.agent_stats("windowed", start_after=200, start_before=300)
    assert inside["spans"] == 1  # start_after is inclusive, start_before exclusive
    assert (await store.agent_stats("windowed", start_after=101))["spans"] == 2
    assert (await store.agent_stats("windowed", start_before=101))["spans"] == 1


async def test_an_unknown_agent_has_empty_stats(store: EvolutionStore) -> None:
    assert await store.agent_stats("nobody") == {
        "agent": "nobody",
        "spans": 0,
        "runs": 0,
        "errors": 0,
        "success_rate": None,
        "latency_ms": {"p50": None, "p95": None, "p99": None},
        "tokens": {"input": 0, "output": 0},
        "cost": 0.0,
        "reward": {"count": 0, "mean": None},
        "time_range": {"start": None, "end": None},
    }


async def test_rewards_count_once_per_agent(store: EvolutionStore) -> None:
    trace = trace_id()
    agent = {"gen_ai.agent.name": "linked"}
    root = span_record(trace_id=trace, attributes=agent)
    child = span_record(trace_id=trace, parent_span_id=root.span_id, attributes=agent)
    await store.ingest([root, child])
    await store.add_reward(RewardIn(value=0.5, links={"trace_id": trace}))  # both spans
    await store.add_reward(RewardIn(value=1.0, span_id=child.span_id))
    stats = await store.agent_stats("linked")
    assert stats["reward"]["count"] == 2
    assert stats["reward"]["mean"] == pytest.approx(0.75)
