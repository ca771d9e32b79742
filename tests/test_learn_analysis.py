"""The lab technician's computations, with no store: message normalisation and error
grouping, the success figures, low-success groups, the regression test, the priority rule, and
the Markdown and HTML renderings."""

from __future__ import annotations

from array import array

import orjson
import pytest
from scipy import stats

from evolution_store.learn.analysis import (
    AnalysisReport,
    OperationStats,
    SpanFold,
    execution_summary,
    low_success_groups,
    rank_opportunities,
    regression_check,
    slowest_steps,
)
from evolution_store.learn.analysis_errors import ErrorGroups, error_of, normalise_message


def exception_events(kind: str, message: str) -> str:
    event = {
        "name": "exception",
        "attributes": {"exception.type": kind, "exception.message": message},
    }
    return orjson.dumps([event]).decode()


# -- messages and error groups --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("user 1234 not found", "user 98 not found"),
        ("task task-17 failed at step 3", "task task-9000 failed at step 12"),
        ("span 00f067aa0ba902b7 missing", "span 4bf92f3577b34da6 missing"),
        ("id 0x1f3 bad", "id 0xdeadbeef bad"),
        (
            "request 1b4e28ba-2fa1-11d2-883f-0016d3cca427 refused",
            "request 6fa459ea-ee8a-3ca4-894e-db77e160355e refused",
        ),
        ("cannot open /var/data/a.json", "cannot open /tmp/x/y/z.txt"),
        ("key 'alpha' is unknown", 'key "beta" is unknown'),
        ("took 1.5 s", "took 30 s"),
        ("request req-4f2a91c0 failed", "request req-123 failed"),
        ("GET https://api.example.com/v1/x?id=3 failed", "GET http://h:8080/y failed"),
    ],
)
def test_messages_that_differ_only_in_what_varies_normalise_alike(first, second):
    assert normalise_message(first) == normalise_message(second)


def test_normalising_keeps_the_words_that_say_what_happened():
    assert normalise_message("user 1234 not found") == "user <n> not found"
    assert normalise_message("span 00f067aa0ba902b7 at 0x1f") == "span <hex> at <hex>"
    assert normalise_message("order-77 of 'x' in /a/b") == "<id> of <str> in <path>"
    assert normalise_message("  rate   limit\nexceeded ") == "rate limit exceeded"
    assert normalise_message("timeout") != normalise_message("refused")


def test_error_type_and_message_come_from_the_exception_event_else_the_status():
    assert error_of("boom", exception_events("KeyError", "'x'")) == ("KeyError", "'x'")
    assert error_of("boom", None) == ("error", "boom")
    assert error_of(None, "[]") == ("error", "")
    assert error_of("boom", 'not json but names "exception"') == ("error", "boom")


def test_error_groups_merge_messages_differing_only_in_ids_and_numbers():
    groups = ErrorGroups()
    rows = [
        (f"{i:016x}", "tool.fetch", "support", "ignored", exception_events("TimeoutError", message))
        for i, message in enumerate(
            [
                "fetch of order-7781 timed out after 30 s",
                "fetch of order-12 timed out after 5 s",
                "fetch of order-3 timed out after 120 s",
                "fetch of order-4 timed out after 1 s",
            ]
        )
    ]
    rows.append(("00000000000000ff", "run", "support", "quota 5 exceeded", None))
    groups.add_rows(rows[:2])  # folded a partition at a time, like the stream
    groups.add_rows(rows[2:])
    top = groups.top()
    assert [(g["type"], g["message"], g["count"]) for g in top] == [
        ("TimeoutError", "fetch of <id> timed out after <n> s", 4),
        ("error", "quota <n> exceeded", 1),
    ]
    assert top[0]["example_span_ids"] == [f"{i:016x}" for i in range(3)]
    assert top[0]["span_names"] == ["tool.fetch"] and top[0]["agent"] == "support"
    assert groups.total == 5


# -- figures --------------------------------------------------------------------------------------


def test_execution_summary_judges_finished_executions_only():
    summary = execution_summary({"succeeded": 14, "failed": 5, "timeout": 1, "running": 3})
    assert summary["total"] == 23 and summary["finished"] == 20
    assert summary["success_rate"] == 0.7
    expected = stats.binomtest(14, 20).proportion_ci(method="wilson")
    assert summary["ci95"] == pytest.approx([expected.low, expected.high])
    empty = execution_summary({})
    assert empty["success_rate"] is None and empty["total"] == 0


def test_operation_stats_are_exact_percentiles_in_ms():
    fold = OperationStats()
    durations = [15_000_000 * (i + 1) for i in range(12)]
    fold("tool.search", array("q", durations))
    fold("chat", array("q", [20_000_000] * 3))
    search, chat = fold.ranked()
    assert search["operation"] == "tool.search" and chat["operation"] == "chat"
    assert search["count"] == 12
    assert search["p50_ms"] == pytest.approx(97.5)
    assert search["p95_ms"] == pytest.approx(165 + 0.45 * 15)  # between the 11th and 12th
    assert search["max_ms"] == 180 and search["total_ms"] == 1170


def test_the_span_fold_keeps_operations_apart_across_partitions():
    ms = 1_000_000
    rows = [
        ("chat", "llm.chat", "a", False, "c1", 10 * ms),
        ("chat", "llm.chat", "a", False, "c2", 30 * ms),
        ("run", "run", "a", True, "r1", 100 * ms),  # a partition ends inside "run"
        ("run", "run", "a", True, "r2", 300 * ms),
        ("tool", "search", "a", False, "s1", 50 * ms),
    ]
    fold = SpanFold()
    fold.add_rows(rows[:3])
    fold.add_rows(rows[3:])
    totals = fold.totals()
    assert totals["run_ns"] == 400 * ms and totals["run_agents"] == {"a": 2}
    assert sorted(totals["steps"]) == [
        ("llm.chat", "a", 2, 40 * ms, 30 * ms, "c2"),
        ("search", "a", 1, 50 * ms, 50 * ms, "s1"),
    ]
    figures = {row["operation"]: (row["count"], row["max_ms"]) for row in fold.operations.rows}
    assert figures == {"chat": (2, 30), "run": (2, 300), "tool": (1, 50)}


def test_slowest_steps_rank_by_total_and_share_the_runs_time():
    totals = {
        "run_ns": 4_000_000_000,
        "steps": [
            ("llm.chat", "a", 12, 240_000_000, 20_000_000, "s1"),
            ("tool.search", "a", 12, 1_170_000_000, 180_000_000, "s2"),
        ],
    }
    first, second = slowest_steps(totals)
    assert first["step"] == "tool.search" and first["share"] == pytest.approx(0.2925)
    assert first["mean_ms"] == 97.5 and first["slowest_span_id"] == "s2"
    assert second["share"] == pytest.approx(0.06)
    assert slowest_steps({"run_ns": 0, "steps": totals["steps"]})[0]["share"] is None


def test_low_success_needs_enough_runs_and_an_interval_wholly_below_the_rate():
    outcomes = [
        ("task", "lookup", 8, 2),  # 25 %, upper bound 59 % < 70 %
        ("task", "answer", 12, 12),
        ("tag", "tiny", 4, 0),  # too few to judge
        ("tag", "close", 10, 5),  # 50 %, but its interval reaches 70 %
    ]
    found = low_success_groups(outcomes, 0.7)
    assert [(g["kind"], g["name"]) for g in found] == [("task", "lookup")]
    assert found[0]["n"] == 8 and found[0]["success_rate"] == 0.25
    assert low_success_groups(outcomes, None) == []


MARKER = {"id": "m1", "kind": "prompt.promoted", "agent": "support", "time": "t"}


def test_regression_is_a_one_sided_fisher_test_after_the_marker():
    found = regression_check(MARKER, {"succeeded": 10}, {"succeeded": 2, "failed": 8})
    expected = stats.fisher_exact([[2, 8], [10, 0]], alternative="less").pvalue
    assert found["p_value"] == pytest.approx(expected)
    assert found["regressed"] and found["difference"] == pytest.approx(-0.8)
    better = regression_check(MARKER, {"succeeded": 2, "failed": 8}, {"succeeded": 10})
    assert not better["regressed"]
    assert regression_check(MARKER, {}, {"succeeded": 1})["p_value"] is None


# -- the priority rule ----------------------------------------------------------------------------


def test_opportunities_rank_by_the_share_of_executions_they_cost():
    executions = execution_summary({"succeeded": 14, "failed": 6})
    errors = [
        {"type": "TimeoutError", "message": "m", "count": 6, "agent": "a"},  # 6/20 = 0.3
        {"type": "error", "message": "once", "count": 1, "agent": "a"},  # not recurring
    ]
    steps = [
        {"step": "search", "agent": "a", "share": 0.6, "mean_ms": 1.0, "count": 3},  # 0.3 (tie)
        {"step": "chat", "agent": "a", "share": 0.1, "mean_ms": 1.0, "count": 3},  # under 20 %
    ]
    low = [{"kind": "task", "name": "lookup", "n": 8, "succeeded": 2, "success_rate": 0.25}]
    regression = regression_check(MARKER, {"succeeded": 10}, {"succeeded": 2, "failed": 8})
    ranked = rank_opportunities(executions, errors, steps, low, regression)
    # regression: 0.8 * 10 / 20 = 0.4; low success: 0.45 * 8 / 20 = 0.18; the error's 0.3
    # and the slow step's 0.6 * 0.5 = 0.3 tie, and a failure ranks before slowness.
    assert [(o["kind"], o["score"]) for o in ranked] == [
        ("regression", 0.4),
        ("error", 0.3),
        ("slow_step", 0.3),
        ("low_success", 0.18),
    ]
    assert [o["rank"] for o in ranked] == [1, 2, 3, 4]
    assert ranked[0]["agent"] == "support"  # the marker's agent
    assert ranked[1]["evidence"]["count"] == 6
    again = rank_opportunities(executions, errors, steps, low, regression)
    assert [o["id"] for o in again] == [o["id"] for o in ranked]  # stable ids


def test_no_regression_means_no_regression_opportunity():
    executions = execution_summary({"succeeded": 10})
    regression = regression_check(MARKER, {"succeeded": 5}, {"succeeded": 5})
    assert rank_opportunities(executions, [], [], [], regression) == []


# -- renderings -----------------------------------------------------------------------------------


def _report() -> AnalysisReport:
    executions = execution_summary({"succeeded": 1, "failed": 2})
    errors = [
        {
            "type": "ValueError",
            "message": "bad <n> | <script>",
            "count": 2,
            "example_message": "bad 1",
            "example_span_ids": ["a1", "b2"],
            "span_names": ["x"],
            "agent": "a",
        }
    ]
    return AnalysisReport(
        id="r1",
        generated_at=1_700_000_000 * 10**9,
        window={"since": "s", "until": "u", "agent": None},
        executions=executions,
        operations=[],
        slowest_steps=[],
        errors=errors,
        low_success=[],
        patterns=[],
        regression=None,
        opportunities=rank_opportunities(executions, errors, [], [], None),
        notes=["a note"],
    )


def test_markdown_and_html_show_the_figures_escaped():
    report = _report()
    text = report.to_markdown()
    assert "# Lab report r1" in text and "success rate 33.3%" in text
    assert "| 2 | ValueError | bad \\<n> \\| \\<script> | a1, b2 |" in text
    assert "- a note" in text
    page = report.to_html()
    assert page.startswith("<!doctype html>") and "<script>" not in page
    assert "&lt;script&gt;" in page and "http" not in page  # self-contained
    assert orjson.loads(orjson.dumps(report.to_dict()))["errors"][0]["count"] == 2
