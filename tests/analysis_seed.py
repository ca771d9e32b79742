"""A store seeded with known failures and slow steps, for the lab technician's tests
(`test_analysis_queries.py`, `test_cli_analyze.py`). Every figure the report should show
follows from the constants here, so a test can compute it by hand.

Agent "support". 12 runs of task "answer" (tag "prod"), all succeeded: root `run` 200 ms,
`llm.chat` (operation chat) 20 ms, `tool.search` 15, 30, …, 180 ms. 8 runs of task "lookup"
(tag "beta"): the first 6 fail — their `tool.fetch` (90 ms) raises a TimeoutError whose
message differs only in a uuid, a path and a number, and their root's status message only in a
number — the last 2 succeed with a 50 ms `tool.fetch`.
"""

from __future__ import annotations

import uuid
from typing import Any

from factories import span_id, span_record, trace_id, unique_name

from evolution_store.models import TaskIn

AGENT = "support"
MS = 1_000_000
ROOT_MS = 200
CHAT_MS = 20
SEARCH_MS = [15 * (i + 1) for i in range(12)]
FETCH_FAIL_MS = 90
FETCH_OK_MS = 50
ANSWER_RUNS = 12
LOOKUP_FAILS = 6
LOOKUP_OKS = 2


def _span(task: str, execution: str, trace: str, **fields: Any) -> Any:
    attributes = {
        "gen_ai.agent.name": AGENT,
        "evolution.task.id": task,
        "evolution.execution.id": execution,
        **fields.pop("attributes", {}),
    }
    return span_record(trace_id=trace, attributes=attributes, **fields)


def run_spans(
    task: str, *, start: int, children: list[tuple[str, int, dict[str, Any]]], failed: bool, n: int
) -> list[Any]:
    """One execution of `task`: a root `run` of ROOT_MS and its children (name, ms, fields)."""
    trace, root = trace_id(), span_id()
    execution = f"{task}-e1"
    made = [
        _span(task, execution, trace, span_id=root, name="run", start_time=start,
              end_time=start + ROOT_MS * MS, status_code="error" if failed else "ok",
              status_message=f"run {n} failed" if failed else "")
    ]  # fmt: skip
    for offset, (name, ms, fields) in enumerate(children, 1):
        made.append(
            _span(task, execution, trace, parent_span_id=root, name=name,
                  start_time=start + offset * 1000, end_time=start + offset * 1000 + ms * MS,
                  **fields)
        )  # fmt: skip
    return made


async def seed(store: Any, *, start: int = 1_700_000_000 * 10**9) -> dict[str, Any]:
    """Store the runs the module describes; returns the failing fetch spans' ids."""
    spans: list[Any] = []
    failing_fetches: list[str] = []
    for i in range(ANSWER_RUNS):
        task = unique_name("answer")
        await store.create_task(TaskIn(id=task, name="answer", tags=["prod"]))
        chat = {"attributes": {"gen_ai.operation.name": "chat"}}
        children = [("llm.chat", CHAT_MS, chat), ("tool.search", SEARCH_MS[i], {})]
        spans += run_spans(task, start=start + i * 10**9, children=children, failed=False, n=i)
    for i in range(LOOKUP_FAILS + LOOKUP_OKS):
        task = unique_name("lookup")
        await store.create_task(TaskIn(id=task, name="lookup", tags=["beta"]))
        failed = i < LOOKUP_FAILS
        fetch: dict[str, Any] = {}
        if failed:
            fetch_id = span_id()
            failing_fetches.append(fetch_id)
            message = f"request {uuid.uuid4()} to /srv/data/{i}.json timed out after {i * 10 + 5} s"
            event = {
                "name": "exception",
                "time_unix_nano": start,
                "attributes": {"exception.type": "TimeoutError", "exception.message": message},
            }
            fetch = {"span_id": fetch_id, "status_code": "error", "status_message": message,
                     "events": [event]}  # fmt: skip
        ms = FETCH_FAIL_MS if failed else FETCH_OK_MS
        spans += run_spans(
            task, start=start + (100 + i) * 10**9, children=[("tool.fetch", ms, fetch)],
            failed=failed, n=i,
        )  # fmt: skip
    result = await store.ingest(spans)
    assert result.rejected == 0
    return {"failing_fetches": failing_fetches}
