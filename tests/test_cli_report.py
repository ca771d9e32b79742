"""`evolution-store report`: the static report written from a real store (both backends) — what
each selection holds and leaves out, the caps on waterfalls, escaping, no reference to
anything outside the file — and the one-line errors for bad flags and unknown tasks."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from factories import pattern, span_record

from evolution_store import EvolutionStore, RewardIn
from evolution_store.cli import cli
from evolution_store.models import TaskIn

#: any reference a browser would fetch from elsewhere: src/href/url()/@import to a URL
EXTERNAL = re.compile(
    r"""(?:\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//)|url\(\s*["']?(?:https?:)?//|@import""",
    re.IGNORECASE,
)
HOSTILE = "<script>alert('x')</script>"


def run_span(task: str, agent: str, name: str, start: int, **overrides: Any):
    attributes = {"evolution.task.id": task, "gen_ai.agent.name": agent}
    return span_record(
        name=name,
        start_time=start,
        end_time=start + 400_000_000,
        attributes=attributes | overrides.pop("attributes", {}),
        **overrides,
    )


async def seed(url: str, *, extra_tasks: int = 0) -> dict[str, Any]:
    """Three tasks with spans (support: one succeeded, one failed; planner: one), a task with
    no spans that a pending reward waits for, a reward linked to an LLM span, a support
    marker and a support pattern; `extra_tasks` more support tasks of two spans each."""
    store = await EvolutionStore.open(url)
    start = time.time_ns() - 60 * 10**9
    ok_root = run_span("t-ok", "support", "support-ok-run", start)
    chat = run_span(
        "t-ok",
        "support",
        "support-ok-chat",
        start + 10**8,
        trace_id=ok_root.trace_id,
        parent_span_id=ok_root.span_id,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "model-one",
            "gen_ai.usage.input_tokens": 120,
            "gen_ai.usage.output_tokens": 30,
        },
    )
    failed = run_span(
        "t-fail",
        "support",
        "support-failing-run",
        start + 2 * 10**9,
        status_code="error",
        status_message="tool timed out",
    )
    planner = run_span("t-plan", "planner", "planner-only-run", start + 3 * 10**9)
    extra = []
    for index in range(extra_tasks):
        root = run_span(f"t-extra-{index}", "support", "extra-run", start + index * 10**6)
        child = run_span(
            f"t-extra-{index}",
            "support",
            "extra-step",
            start + index * 10**6 + 1,
            trace_id=root.trace_id,
            parent_span_id=root.span_id,
        )
        extra += [root, child]
    try:
        await store.ingest([ok_root, chat, failed, planner, *extra])
        await store.create_task(TaskIn(id="t-wait", name="waiting-task"))
        await store.add_reward(
            RewardIn(
                name="verdict",
                value=0.9,
                span_id=chat.span_id,
                trace_id=chat.trace_id,
                feedback="late verdict " + HOSTILE,
                source="human",
            )
        )
        await store.add_reward(RewardIn(name="pending-grade", value=0.1, task_id="t-wait"))
        await store.add_marker(agent="support", kind="prompt.promoted", after={"version": 2})
        await store.save_patterns(
            [pattern("config.temperature <= 0.3")], scope={"agent": "support"}
        )
    finally:
        await store.close()
    return {"chat": chat, "ok_root": ok_root, "failed": failed}


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, ["report", *args])


def write(tmp_path: Path, store_url: str, *args: str) -> str:
    out = tmp_path / "report.html"
    result = invoke("--db", store_url, "-o", str(out), *args)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stderr
    return out.read_text(encoding="utf-8")


def embedded(html: str) -> dict[str, Any]:
    """The report's JSON block, its tables ({columns, rows}) as lists of dicts."""
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html)
    assert match, "no embedded data"
    data = json.loads(match.group(1))
    for name in ("tasks", "executions"):
        table = data[name]
        data[name] = [dict(zip(table["columns"], row, strict=True)) for row in table["rows"]]
    return data


@pytest.fixture
def seeded(store_url: str) -> dict[str, Any]:
    return asyncio.run(seed(store_url))


def test_a_task_report_holds_its_spans_rewards_and_charts_and_nothing_else(
    tmp_path, store_url, seeded
):
    html = write(tmp_path, store_url, "--task", "t-ok")
    chat = seeded["chat"]
    assert "support-ok-run" in html and "support-ok-chat" in html
    assert chat.span_id in html and chat.trace_id in html
    assert "model-one" in html
    # the reward shows on the span it judges, and in the rewards section
    detail = html[html.index(f'id="span-detail-{chat.trace_id}-{chat.span_id}"') :]
    detail = detail[: detail.index("</details>")]
    assert "verdict" in detail and "late verdict" in detail
    assert html.count('role="img"') >= 6  # timeline, four metrics charts, rewards, sparkline
    assert 'class="chart timeline"' in html and 'class="chart interval-chart"' in html
    for other in ("support-failing-run", "planner-only-run", "waiting-task"):
        assert other not in html
    data = embedded(html)
    assert [run["task_id"] for run in data["executions"]] == ["t-ok"]
    assert data["executions"][0]["span_count"] == 2
    assert data["rewards"][0]["key"] == "verdict"


def test_an_agent_report_holds_its_tasks_markers_and_patterns(tmp_path, store_url, seeded):
    html = write(tmp_path, store_url, "--agent", "support")
    assert "support-ok-run" in html and "support-failing-run" in html
    assert "planner-only-run" not in html and "waiting-task" not in html
    assert "prompt.promoted" in html
    assert "config.temperature &lt;= 0.3" in html
    assert "tool timed out" in html
    data = embedded(html)
    assert sorted(run["task_id"] for run in data["executions"]) == ["t-fail", "t-ok"]
    assert [agent["agent"] for agent in data["agents"]] == ["support"]
    assert data["agents"][0]["runs"] == 2
    assert data["agents"][0]["success_rate"] == 0.5


def test_the_full_report_holds_every_task_and_pending_rewards_but_no_marker_task(
    tmp_path, store_url, seeded
):
    html = write(tmp_path, store_url)
    for name in ("support-ok-run", "support-failing-run", "planner-only-run", "waiting-task"):
        assert name in html
    assert "pending-grade" in html
    assert "still pending" in html
    data = embedded(html)
    assert "markers:support" not in {run["task_id"] for run in data["executions"]}
    assert {agent["agent"] for agent in data["agents"]} == {"support", "planner"}
    assert {group["key"]: group["count"] for group in data["rewards"]} == {
        "pending-grade": 1,
        "verdict": 1,
    }


def test_the_report_refers_to_nothing_outside_itself(tmp_path, store_url, seeded):
    html = write(tmp_path, store_url)
    assert not EXTERNAL.findall(html)
    assert "http://" not in html and "https://" not in html
    hrefs = re.findall(r'\bhref="([^"]*)"', html)
    assert hrefs
    assert all(href.startswith("#") or href.startswith("data:") for href in hrefs), hrefs
    assert not re.findall(r"\bsrc=", html)


def test_text_from_the_store_is_escaped(tmp_path, store_url, seeded):
    html = write(tmp_path, store_url, "--task", "t-ok")
    assert HOSTILE not in html
    assert "late verdict &lt;script&gt;" in html
    assert embedded(html)  # the JSON block is not closed early by a stored "</script>"


def test_waterfalls_are_capped_failed_first_and_the_rest_are_summary_rows(tmp_path, store_url):
    asyncio.run(seed(store_url, extra_tasks=5))
    html = write(tmp_path, store_url, "--agent", "support", "--waterfalls", "1")
    assert html.count('<article id="run-') == 1
    first = html[html.index('<article id="run-') :]
    assert "support-failing-run" in first[: first.index("</article>")]
    assert "Waterfalls of 1 of 7 executions" in html
    assert len(embedded(html)["executions"]) == 7


def test_spans_per_waterfall_caps_each_trace(tmp_path, store_url, seeded):
    html = write(tmp_path, store_url, "--task", "t-ok", "--spans-per-waterfall", "1")
    assert "the first 1 spans by start time" in html
    assert "support-ok-run" in html
    assert 'id="span-detail-' in html and "support-ok-chat</summary>" not in html
    assert html.count('class="span-detail"') == 1


def test_since_in_the_future_gives_an_empty_report(tmp_path, store_url, seeded):
    html = write(tmp_path, store_url, "--since", "2200-01-01")
    assert "No executions in this selection." in html
    assert embedded(html)["executions"] == []


def test_max_tasks_keeps_the_newest(tmp_path, store_url):
    asyncio.run(seed(store_url, extra_tasks=3))
    data = embedded(write(tmp_path, store_url, "--max-tasks", "2"))
    tasks = [task["id"] for task in data["tasks"]]
    assert len(tasks) == 2
    assert tasks[0] == "t-wait"  # created last
    assert "(the newest 2 tasks)" in data["selection"]


def test_an_unknown_task_is_one_line_and_no_file(tmp_path, store_url):
    out = tmp_path / "report.html"
    result = invoke("--db", store_url, "--task", "no-such-task", "-o", str(out))
    assert result.exit_code != 0
    assert result.stderr.strip().splitlines() == ["Error: task 'no-such-task' not found"]
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "a", "--agent", "b"], "give --task or --agent, not both"),
        (["--since", "yesterday"], "neither an ISO-8601 time"),
        (["--waterfalls", "-1"], "--waterfalls"),
    ],
)
def test_bad_flags_are_refused_in_one_line(tmp_path, args, message):
    result = invoke("--db", f"sqlite:///{tmp_path}/x.db", "-o", str(tmp_path / "r.html"), *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_output_is_required_and_an_unwritable_path_is_one_line(tmp_path, store_url, seeded):
    assert invoke("--db", store_url).exit_code == 2
    result = invoke("--db", store_url, "-o", str(tmp_path / "missing-dir" / "r.html"))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot write ")
    assert len(result.stderr.strip().splitlines()) == 1


def test_reads_do_not_grow_with_the_number_of_tasks_or_spans(tmp_path, store_url):
    """A report is a fixed number of statements (plus two per agent shown), however many
    tasks, executions and spans it covers."""
    from api.ui.report import ReportOptions, build_report

    async def count(extra: int) -> int:
        await seed(store_url, extra_tasks=extra)
        statements: list[str] = []
        store = await EvolutionStore.open(
            store_url, migrate=False, statement_hook=lambda sql, _: statements.append(sql)
        )
        try:
            await build_report(store, ReportOptions(agent="support"))
        finally:
            await store.close()
        return sum(sql.lstrip().upper().startswith(("SELECT", "WITH")) for sql in statements)

    few = asyncio.run(count(2))
    many = asyncio.run(count(25))
    assert few == many
