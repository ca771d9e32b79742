"""Experiment reads (evolution_store/experiment_queries.py) and their statistics
(evolution_store/experiment_stats.py): A/B results computed live from the rewards of the
variants' executions, checked against a hand computation with `statistics` and `scipy.stats`;
lists and pages; the pure statistics on their own."""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass

import pytest
from factories import span_record
from scipy import stats

from evolution_store import EvolutionStore, NotFound
from evolution_store.experiment_stats import (
    ab_results,
    describe,
    regression_results,
    success,
    welch_p_value,
)
from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from evolution_store.registry_models import ExperimentIn, ExperimentStopIn, PromptIn

MS = 1_000_000
BASE = 1_700_000_000_000_000_000


async def new_prompt(store: EvolutionStore, content: str, agent: str = "bot") -> str:
    prompt, _ = await store.create_prompt(
        PromptIn(agent=agent, content=content, status="candidate")
    )
    return prompt["id"]


async def start_ab(
    store: EvolutionStore, a: str, b: str, *, agent: str = "bot", metric: str | None = None
) -> dict:
    return await store.create_experiment(
        ExperimentIn(
            agent=agent,
            kind="ab",
            metric=metric,
            variants=[{"prompt_id": a, "weight": 0.5}, {"prompt_id": b, "weight": 0.5}],
        )
    )


@dataclass
class Run:
    """One execution of the agent: a root span and an LLM child span under it."""

    execution_id: str
    root: SpanRecord
    child: SpanRecord


async def run(
    store: EvolutionStore,
    prompt_id: str | None,
    *,
    duration_ms: int = 100,
    tokens: tuple[int, int] = (10, 5),
) -> Run:
    """An execution with `prompt_id` in its config: a root span of `duration_ms` and an LLM
    child using `tokens` (input, output)."""
    task, _ = await store.create_task(TaskIn())
    config = {} if prompt_id is None else {"prompt_id": prompt_id}
    execution = await store.start_execution(task["id"], ExecutionIn(config=config))
    owner = {"evolution.task.id": task["id"], "evolution.execution.id": execution["id"]}
    root = span_record(
        name="agent", attributes=owner, start_time=BASE, end_time=BASE + duration_ms * MS
    )
    child = span_record(
        trace_id=root.trace_id,
        parent_span_id=root.span_id,
        name="chat",
        start_time=BASE + MS,
        end_time=BASE + 2 * MS,
        attributes={
            **owner,
            "gen_ai.operation.name": "chat",
            "gen_ai.usage.input_tokens": tokens[0],
            "gen_ai.usage.output_tokens": tokens[1],
        },
    )
    result = await store.ingest([root, child])
    assert result.accepted == 2
    return Run(execution["id"], root, child)


async def reward(store: EvolutionStore, value: float, name: str = "quality", **target) -> None:
    await store.add_reward(RewardIn(name=name, value=value, **target))


def t_interval(values: list[float]) -> list:
    n = len(values)
    mean, stdev = statistics.mean(values), statistics.stdev(values)
    half = stats.t.ppf(0.975, n - 1) * stdev / math.sqrt(n)
    return [pytest.approx(mean - half), pytest.approx(mean + half)]


# -- A/B results against a hand computation -------------------------------------------------------


async def test_ab_results_match_a_hand_computation_from_the_rewards(
    store: EvolutionStore,
) -> None:
    a = await new_prompt(store, "A {{ q }}")
    b = await new_prompt(store, "B {{ q }}")
    # Before the experiment: an execution of A whose rewards do not count.
    early = await run(store, a)
    await reward(store, 100.0, span_id=early.root.span_id)
    experiment = await start_ab(store, a, b, metric="quality")

    a_runs = [
        await run(store, a, duration_ms=d, tokens=t)
        for d, t in [(100, (10, 5)), (300, (20, 10)), (200, (0, 0))]
    ]
    b_runs = [
        await run(store, b, duration_ms=d, tokens=t) for d, t in [(50, (40, 2)), (150, (8, 8))]
    ]
    unrelated = await run(store, None)  # no prompt in its config
    await reward(store, 42.0, span_id=unrelated.root.span_id)

    # A: rewards on a span, on the execution (found before and through its root span), by
    # trace (linked to both of its spans: one reward), and one of another name (not the metric).
    a_values = [0.9, 0.7, 0.8, 0.4, 0.75]
    await reward(store, a_values[0], span_id=a_runs[0].root.span_id)
    await reward(store, a_values[1], span_id=a_runs[0].child.span_id)
    await reward(store, a_values[2], execution_id=a_runs[1].execution_id)
    await reward(store, a_values[3], links={"trace_id": a_runs[2].root.trace_id})
    await reward(store, a_values[4], span_id=a_runs[2].child.span_id)
    await reward(store, -5.0, name="cost", span_id=a_runs[1].root.span_id)
    b_values = [0.3, 0.5, 0.2, 0.6]
    await reward(store, b_values[0], span_id=b_runs[0].root.span_id)
    await reward(store, b_values[1], links={"trace_id": b_runs[0].root.trace_id})
    await reward(store, b_values[2], execution_id=b_runs[1].execution_id)
    await reward(store, b_values[3], span_id=b_runs[1].child.span_id)

    got = await store.get_experiment(experiment["id"])
    first, second = got["results"]
    assert (first["prompt_id"], first["weight"]) == (a, 0.5)
    assert (second["prompt_id"], second["weight"]) == (b, 0.5)
    for row, values in ((first, a_values), (second, b_values)):
        assert row["n"] == len(values)
        assert row["mean"] == pytest.approx(statistics.mean(values))
        assert row["stdev"] == pytest.approx(statistics.stdev(values))
        assert row["ci95"] == t_interval(values)
    assert first["p_value"] is None
    welch = stats.ttest_ind(b_values, a_values, equal_var=False)
    assert second["p_value"] == pytest.approx(welch.pvalue)
    # Per execution: tokens are input + output over its spans, latency its root's duration.
    assert first["executions"] == 3 and second["executions"] == 2
    assert first["tokens"] == pytest.approx(statistics.mean([15, 30, 0]))
    assert first["latency_ms"] == pytest.approx(statistics.mean([100, 300, 200]))
    assert second["tokens"] == pytest.approx(statistics.mean([42, 16]))
    assert second["latency_ms"] == pytest.approx(statistics.mean([50, 150]))

    # Stopped: executions started later no longer count; rewards for earlier ones still do.
    await store.stop_experiment(experiment["id"], ExperimentStopIn(), approved_by="local")
    late = await run(store, b)
    await reward(store, 1.0, span_id=late.root.span_id)
    await reward(store, 0.1, span_id=b_runs[1].root.span_id)
    after = await store.get_experiment(experiment["id"])
    b_values.append(0.1)
    assert after["results"][0] == first
    assert after["results"][1]["n"] == len(b_values) and after["results"][1]["executions"] == 2
    assert after["results"][1]["mean"] == pytest.approx(statistics.mean(b_values))
    welch = stats.ttest_ind(b_values, a_values, equal_var=False)
    assert after["results"][1]["p_value"] == pytest.approx(welch.pvalue)


async def test_without_a_metric_every_reward_counts(store: EvolutionStore) -> None:
    a = await new_prompt(store, "A")
    b = await new_prompt(store, "B")
    experiment = await start_ab(store, a, b)
    done = await run(store, a)
    await reward(store, 1.0, name="quality", span_id=done.root.span_id)
    await reward(store, 3.0, name="speed", span_id=done.root.span_id)
    first, second = (await store.get_experiment(experiment["id"]))["results"]
    assert (first["n"], first["mean"]) == (2, 2.0)
    assert first["ci95"] == t_interval([1.0, 3.0])
    # B has no executions yet: nothing to report, and no test against A.
    assert second == {
        "prompt_id": b,
        "weight": 0.5,
        "n": 0,
        "mean": None,
        "stdev": None,
        "ci95": None,
        "executions": 0,
        "tokens": None,
        "latency_ms": None,
        "p_value": None,
    }


async def test_a_reward_on_a_task_counts_for_each_variant_it_reached(
    store: EvolutionStore,
) -> None:
    # Two executions of one task, one per variant: a reward on the task is linked to both
    # roots, and is evidence for each variant once.
    a = await new_prompt(store, "A")
    b = await new_prompt(store, "B")
    experiment = await start_ab(store, a, b)
    await store.create_task(TaskIn(id="shared"))
    for prompt_id in (a, b):
        execution = await store.start_execution(
            "shared", ExecutionIn(config={"prompt_id": prompt_id})
        )
        owner = {"evolution.task.id": "shared", "evolution.execution.id": execution["id"]}
        await store.ingest([span_record(attributes=owner)])
    await reward(store, 0.5, task_id="shared")
    first, second = (await store.get_experiment(experiment["id"]))["results"]
    assert (first["n"], first["mean"], second["n"], second["mean"]) == (1, 0.5, 1, 0.5)
    assert first["stdev"] is None and first["ci95"] is None and second["p_value"] is None


# -- get and list ---------------------------------------------------------------------------------


async def test_an_unknown_experiment_is_not_found(store: EvolutionStore) -> None:
    with pytest.raises(NotFound, match="'nope'"):
        await store.get_experiment("nope")


async def test_lists_are_newest_first_filtered_and_paged(store: EvolutionStore) -> None:
    made = []
    for agent in ("one", "two", "three"):
        a = await new_prompt(store, "A", agent)
        b = await new_prompt(store, "B", agent)
        made.append(await start_ab(store, a, b, agent=agent))
    await store.stop_experiment(made[1]["id"], ExperimentStopIn(), approved_by="x")
    everything = await store.list_experiments()
    assert [e["id"] for e in everything.items] == [e["id"] for e in reversed(made)]
    assert everything.next_cursor is None
    # List items carry no results; `get_experiment` computes them.
    listed = everything.items[-1]
    assert "results" not in listed
    assert listed == {k: v for k, v in made[0].items() if k != "results"}
    assert [e["id"] for e in (await store.list_experiments(agent="two")).items] == [made[1]["id"]]
    running = await store.list_experiments(status="running")
    assert [e["id"] for e in running.items] == [made[2]["id"], made[0]["id"]]
    assert (await store.list_experiments(status="completed")).items == []
    page = await store.list_experiments(limit=2)
    assert [e["id"] for e in page.items] == [made[2]["id"], made[1]["id"]]
    rest = await store.list_experiments(limit=2, cursor=page.next_cursor)
    assert [e["id"] for e in rest.items] == [made[0]["id"]] and rest.next_cursor is None


# -- the statistics, pure -------------------------------------------------------------------------


def test_describe_small_samples() -> None:
    assert describe([]) == {"n": 0, "mean": None, "stdev": None, "ci95": None}
    assert describe([0.25]) == {"n": 1, "mean": 0.25, "stdev": None, "ci95": None}
    constant = describe([0.5, 0.5, 0.5])
    assert constant == {"n": 3, "mean": 0.5, "stdev": 0.0, "ci95": [0.5, 0.5]}


def test_describe_matches_scipy() -> None:
    values = [0.1, 0.4, 0.35, 0.8, 0.2, 0.95, 0.6]
    summary = describe(values)
    low, high = stats.t.interval(
        0.95, len(values) - 1, loc=statistics.mean(values), scale=stats.sem(values)
    )
    assert summary["mean"] == pytest.approx(statistics.mean(values))
    assert summary["stdev"] == pytest.approx(statistics.stdev(values))
    assert summary["ci95"] == [pytest.approx(low), pytest.approx(high)]


def test_describe_is_exact_far_from_zero() -> None:
    # A naive sum of squares loses every digit of this variance; two exact passes keep it.
    values = [1e9 + 0.1, 1e9 + 0.2, 1e9 + 0.3]
    assert describe(values)["stdev"] == pytest.approx(0.1, rel=1e-6)


# The reference call below warns of lost precision on a constant side; ours does not.
@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
def test_welch_p_value() -> None:
    a, b = [0.9, 0.7, 0.8, 0.85], [0.3, 0.5, 0.2]
    assert welch_p_value(b, a) == pytest.approx(stats.ttest_ind(b, a, equal_var=False).pvalue)
    assert welch_p_value([1.0], a) is None and welch_p_value(a, [1.0]) is None
    assert welch_p_value([1.0, 1.0], [0.0, 0.0]) is None  # no variance on either side
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one_sided = welch_p_value([1.0, 1.0, 1.0], [0.0, 0.5, 1.0])
    assert one_sided == pytest.approx(
        stats.ttest_ind([1.0, 1.0, 1.0], [0.0, 0.5, 1.0], equal_var=False).pvalue
    )


def test_success_uses_wilson_for_pass_fail_and_t_otherwise() -> None:
    assert success([]) == {"n": 0, "success": None, "ci95": None}
    passed = success([1, 1, 0, 1])
    ci = stats.binomtest(3, 4).proportion_ci(0.95, method="wilson")
    assert passed == {
        "n": 4,
        "success": 0.75,
        "ci95": [pytest.approx(ci.low), pytest.approx(ci.high)],
    }
    all_passed = success([1.0] * 5)
    assert all_passed["success"] == 1.0 and 0 < all_passed["ci95"][0] < 1.0
    assert all_passed["ci95"][1] == pytest.approx(1.0)
    graded = success([0.5, 0.75, 1.0])
    assert graded["success"] == pytest.approx(0.75)
    assert graded["ci95"] == t_interval([0.5, 0.75, 1.0])
    assert success([0.5]) == {"n": 1, "success": 0.5, "ci95": None}


def test_ab_results_compare_with_the_first_variant() -> None:
    variants = [{"prompt_id": "a", "weight": 0.5}, {"prompt_id": "b", "weight": 0.5}]
    values = {"a": [1.0, 2.0, 3.0], "b": [2.0, 4.0, 6.0]}
    usage = {"a": {"executions": 3, "tokens": 10.0, "latency_ms": 5.0}}
    first, second = ab_results(variants, values, usage)
    assert first["p_value"] is None and first["executions"] == 3 and first["tokens"] == 10.0
    assert second["p_value"] == pytest.approx(
        stats.ttest_ind(values["b"], values["a"], equal_var=False).pvalue
    )
    assert (second["executions"], second["tokens"], second["latency_ms"]) == (0, None, None)
    # The same numbers give the same results: no clock, no randomness.
    assert ab_results(variants, values, usage) == [first, second]


def test_regression_results_split_target_and_control() -> None:
    rows = [
        {"prompt_id": "p", "example_id": "t", "score": 1.0, "tokens": 10.0, "latency_ms": None},
        {"prompt_id": "p", "example_id": "c", "score": 0.0, "tokens": None, "latency_ms": 4.0},
        {
            "prompt_id": "p",
            "example_id": "elsewhere",
            "score": 1.0,
            "tokens": 30.0,
            "latency_ms": None,
        },
    ]
    [only] = regression_results([{"prompt_id": "p", "weight": 1.0}], rows, ["t"], ["c"])
    assert only["target"]["n"] == 1 and only["target"]["success"] == 1.0
    assert only["control"]["n"] == 1 and only["control"]["success"] == 0.0
    assert (only["tokens"], only["latency_ms"]) == (20.0, 4.0)
