"""The lab technician on a real store (both backends): a store seeded with known failures and
slow steps (`analysis_seed`) gives the report a hand computation gives; the window, the agent
filter and markers' own executions; a regression after a marker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from analysis_seed import (
    AGENT,
    ANSWER_RUNS,
    CHAT_MS,
    FETCH_FAIL_MS,
    FETCH_OK_MS,
    LOOKUP_FAILS,
    LOOKUP_OKS,
    ROOT_MS,
    SEARCH_MS,
    run_spans,
    seed,
)
from factories import pattern, unique_name
from scipy import stats

from evolution_store.learn import analyze
from evolution_store.models import TaskIn
from evolution_store.registry_models import PromptIn


def wilson(successes: int, n: int) -> list[float]:
    interval = stats.binomtest(successes, n).proportion_ci(method="wilson")
    return [interval.low, interval.high]


async def test_the_report_matches_a_hand_computation(store):
    seeded = await seed(store)
    report = (await analyze(store)).to_dict()

    runs = ANSWER_RUNS + LOOKUP_FAILS + LOOKUP_OKS
    succeeded = ANSWER_RUNS + LOOKUP_OKS
    executions = report["executions"]
    assert executions["total"] == executions["finished"] == runs
    assert executions["by_status"] == {"failed": LOOKUP_FAILS, "succeeded": succeeded}
    assert executions["success_rate"] == pytest.approx(succeeded / runs)
    assert executions["ci95"] == pytest.approx(wilson(succeeded, runs))

    operations = {row["operation"]: row for row in report["operations"]}
    assert set(operations) == {"run", "chat", "tool.search", "tool.fetch"}
    fetch = [FETCH_FAIL_MS] * LOOKUP_FAILS + [FETCH_OK_MS] * LOOKUP_OKS
    for name, values in [
        ("run", [ROOT_MS] * runs),
        ("chat", [CHAT_MS] * ANSWER_RUNS),
        ("tool.search", SEARCH_MS),
        ("tool.fetch", fetch),
    ]:
        row = operations[name]
        assert row["count"] == len(values), name
        assert row["p50_ms"] == pytest.approx(np.percentile(values, 50)), name
        assert row["p95_ms"] == pytest.approx(np.percentile(values, 95)), name
        assert row["max_ms"] == max(values) and row["total_ms"] == sum(values), name
    assert [row["operation"] for row in report["operations"]][0] == "run"  # most time first

    run_ms = ROOT_MS * runs
    steps = report["slowest_steps"]
    assert [step["step"] for step in steps] == ["tool.search", "tool.fetch", "llm.chat"]
    assert steps[0]["share"] == pytest.approx(sum(SEARCH_MS) / run_ms)
    assert steps[1]["share"] == pytest.approx(sum(fetch) / run_ms)
    assert steps[0]["count"] == ANSWER_RUNS and steps[0]["max_ms"] == max(SEARCH_MS)

    timeout, root_errors = report["errors"]
    assert timeout["type"] == "TimeoutError" and timeout["count"] == LOOKUP_FAILS
    assert timeout["message"] == "request <uuid> to <path> timed out after <n> s"
    assert set(timeout["example_span_ids"]) <= set(seeded["failing_fetches"])
    assert len(timeout["example_span_ids"]) == 3
    assert (root_errors["message"], root_errors["count"]) == ("run <n> failed", LOOKUP_FAILS)

    low = {(group["kind"], group["name"]): group for group in report["low_success"]}
    assert set(low) == {("task", "lookup"), ("tag", "beta")}
    assert low["task", "lookup"]["n"] == LOOKUP_FAILS + LOOKUP_OKS
    assert low["task", "lookup"]["ci95"] == pytest.approx(wilson(LOOKUP_OKS, 8))

    rate = succeeded / runs
    kinds = [(o["kind"], o["score"]) for o in report["opportunities"]]
    assert kinds == [
        ("error", pytest.approx(LOOKUP_FAILS / runs)),
        ("error", pytest.approx(LOOKUP_FAILS / runs)),
        ("low_success", pytest.approx((rate - 0.25) * 8 / runs)),
        ("low_success", pytest.approx((rate - 0.25) * 8 / runs)),
        ("slow_step", pytest.approx(sum(SEARCH_MS) / run_ms * 0.5)),
    ]
    assert report["regression"] is None and report["proposals"] == []


async def test_the_window_and_the_agent_choose_the_executions(store):
    before = datetime.now(UTC)
    await seed(store)
    task = unique_name("other")
    await store.create_task(TaskIn(id=task, name="other"))
    spans = run_spans(task, start=10**18, children=[], failed=True, n=0)
    for span in spans:
        span.attributes["gen_ai.agent.name"] = "billing"
    await store.ingest(spans)
    await store.add_marker(agent=AGENT, kind="prompt.promoted", after={"version": 2})

    everything = await analyze(store)
    assert everything.executions["total"] == 21  # the marker's own execution is not work
    assert "evolution.marker" not in {row["operation"] for row in everything.operations}
    support = await analyze(store, agent=AGENT)
    assert support.executions["total"] == 20
    assert support.window["agent"] == AGENT
    billing = await analyze(store, agent="billing")
    assert billing.executions["by_status"] == {"failed": 1}
    assert [o["kind"] for o in billing.opportunities] == []  # one error is not recurring
    earlier = await analyze(store, since=before - timedelta(hours=1), until=before)
    assert earlier.executions["total"] == 0 and earlier.operations == []
    assert earlier.notes == ["no execution in the window"]
    with pytest.raises(ValueError, match="since must be before until"):
        await analyze(store, since=before, until=before)


async def test_a_drop_after_the_newest_marker_is_the_top_opportunity(store):
    async def runs(count: int, failures: int) -> None:
        spans = []
        for index in range(count):
            task = unique_name("t")
            await store.create_task(TaskIn(id=task, name="answer"))
            spans += run_spans(task, start=10**18, children=[], failed=index < failures, n=index)
        await store.ingest(spans)

    await runs(10, 0)
    await store.add_marker(agent="someone-else", kind="prompt.promoted")
    await store.add_marker(agent=AGENT, kind="prompt.promoted", after={"version": 2})
    await runs(10, 8)
    report = await analyze(store, agent=AGENT)
    regression = report.regression
    assert regression["marker"]["agent"] == AGENT
    assert regression["before"]["n"] == 10 and regression["before"]["success_rate"] == 1.0
    assert regression["after"]["n"] == 10 and regression["after"]["success_rate"] == 0.2
    expected = stats.fisher_exact([[2, 8], [10, 0]], alternative="less").pvalue
    assert regression["p_value"] == pytest.approx(expected) and regression["regressed"]
    top = report.opportunities[0]
    assert top["kind"] == "regression" and top["score"] == pytest.approx(0.8 * 10 / 20)
    assert top["agent"] == AGENT and top["evidence"]["marker"]["id"] == regression["marker"]["id"]


async def test_active_patterns_are_listed(store):
    await store.save_patterns([pattern(agent=AGENT)], scope={"agent": AGENT})
    report = await analyze(store, agent=AGENT)
    assert [p["condition"] for p in report.patterns] == ["config.temperature <= 0.3"]
    assert report.patterns[0]["q_value"] == 0.001


class Revisions:
    """An LLM client as `analyze(llm=...)` takes one: the first reply repeats the prompt (no
    change), the others revise it."""

    def __init__(self) -> None:
        self.asked: list[list[dict]] = []

    def complete(self, messages: list[dict]) -> str:
        self.asked.append(messages)
        current = messages[-1]["content"].split("<current_prompt>\n")[1].split("\n</current")[0]
        if len(self.asked) == 1:
            return f"```\n{current}\n```"
        return f"```\n{current}\nRevision {len(self.asked)}.\n```"


async def test_propose_with_a_client_object_skips_a_reply_with_no_change(store):
    await seed(store)
    made, _ = await store.create_prompt(PromptIn(agent=AGENT, content="Be brief."))
    llm = Revisions()
    report = await analyze(store, agent=AGENT, propose=True, llm=llm, max_proposals=2)
    assert len(llm.asked) == 3 and len(report.proposals) == 2
    first = report.opportunities[0]["id"]
    assert report.notes == [f"{first}: the LLM proposed no change"]
    # With --agent, every opportunity names the agent, low success included.
    assert [p["opportunity"] for p in report.proposals] == [
        o["id"] for o in report.opportunities[1:3]
    ]
    for proposal in report.proposals:
        draft = await store.get_prompt(proposal["prompt_id"])
        assert draft["created_by"] == "lab" and draft["parent_ids"] == [made["id"]]
    with pytest.raises(ValueError, match="max_proposals"):
        await analyze(store, propose=True, llm=llm, max_proposals=4)
