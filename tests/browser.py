"""Headless Chromium for the browser tests, like `factories.py` for rows: importable helpers,
no fixtures. Playwright drives Debian's system Chromium (`.ci/run` installs it); nothing is
downloaded at run time.

    from browser import chromium, open_page, screenshot

    def test_page(live_server):
        server = live_server()
        with chromium() as browser:
            page, console = open_page(browser)
            page.goto(server.url + "/")
            screenshot(page, "overview")       # prints where it went
            assert console.errors == []

Playwright's sync API refuses to run inside an event loop, so browser tests are plain `def`
tests. Without Playwright or Chromium the test skips saying why; with `CI=true` it fails.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("EVOLUTION_TEST_CHROMIUM", "/usr/bin/chromium")
#: where `screenshot` saves; printed with every file so a person can look
SCREENSHOT_DIR = Path(
    os.environ.get(
        "EVOLUTION_TEST_SCREENSHOTS", Path(tempfile.gettempdir()) / "evolution-ui-screenshots"
    )
)
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if _IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@contextmanager
def chromium(**launch: Any) -> Iterator[Any]:
    """A headless Chromium `Browser` (Playwright, system executable), closed on exit."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    # Running as root (containers, CI) needs --no-sandbox; the browser only opens loopback pages.
    options = {"headless": True, "args": ["--no-sandbox"], **launch}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, **options)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Console:
    """What a page reported while it ran: console errors, uncaught exceptions, requests."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> Console:
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda request: self.requests.append(request.url))
        return self

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")


def open_page(browser: Any, **context: Any) -> tuple[Any, Console]:
    """A new page in a fresh context (its own cookies), with a `Console` listening to it."""
    page = browser.new_context(**context).new_page()
    return page, Console().attach(page)


def screenshot(page: Any, name: str, *, full_page: bool = True) -> Path:
    """Save a PNG of `page` as `SCREENSHOT_DIR/<name>.png` and print its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOT_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) + ".png")
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


async def seed_dashboard(store: Any) -> dict[str, Any]:
    """What the dashboard tests walk through: agent `planner` with a task of two attempts
    (the first trace has an LLM span with a reward, and a failed tool span), a production
    prompt with a candidate and a draft of one optimisation run, and an active pattern
    whose evidence is the LLM span. Returns the ids."""
    import time

    from factories import pattern, reward_in, span_id, span_record, task_in, trace_id

    from evolution_store.models import ExecutionIn
    from evolution_store.registry_models import ApproveIn, PromptIn

    task, _ = await store.create_task(task_in(name="plan a trip", tags=["demo"]))
    first = await store.start_execution(task["id"], ExecutionIn(config={"prompt_id": "p1"}))
    retry = await store.start_execution(task["id"], ExecutionIn(config={"prompt_id": "p2"}))
    now = time.time_ns()
    ids: dict[str, Any] = {"task": task["id"], "executions": [first["id"], retry["id"]]}
    for attempt, execution in enumerate((first, retry)):
        trace, root, llm, tool = trace_id(), span_id(), span_id(), span_id()
        base = now + attempt * 50_000_000
        common = {
            "gen_ai.agent.name": "planner",
            "evolution.task.id": task["id"],
            "evolution.execution.id": execution["id"],
        }
        await store.ingest(
            [
                span_record(
                    trace_id=trace,
                    span_id=root,
                    name="plan",
                    start_time=base,
                    end_time=base + 40_000_000,
                    attributes=common,
                    status_code="error" if attempt == 0 else "ok",
                ),
                span_record(
                    trace_id=trace,
                    span_id=llm,
                    parent_span_id=root,
                    name="chat",
                    start_time=base + 1_000_000,
                    end_time=base + 30_000_000,
                    attributes={
                        **common,
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": "gpt-test",
                        "gen_ai.usage.input_tokens": 120,
                        "gen_ai.usage.output_tokens": 45,
                    },
                ),
                span_record(
                    trace_id=trace,
                    span_id=tool,
                    parent_span_id=root,
                    name="tool.search",
                    start_time=base + 31_000_000,
                    end_time=base + 39_000_000,
                    attributes=common,
                    status_code="error" if attempt == 0 else "ok",
                    status_message="search timed out" if attempt == 0 else "",
                ),
            ]
        )
        ids.setdefault("traces", []).append(
            {"trace": trace, "root": root, "llm": llm, "tool": tool}
        )
    await store.set_execution_status(first["id"], "failed")
    await store.set_execution_status(retry["id"], "succeeded")
    llm0 = ids["traces"][0]
    await store.add_reward(
        reward_in(
            0.25,
            name="quality",
            span_id=llm0["llm"],
            trace_id=llm0["trace"],
            feedback="missed the budget",
            source="human",
        )
    )
    seed, _ = await store.create_prompt(
        PromptIn(agent="planner", content="Plan a trip to {{ city }}.", status="candidate")
    )
    await store.approve_prompt(seed["id"], ApproveIn(note="first"), approved_by="anonymous")
    # One optimisation run's offspring of the seed: a candidate, and a draft on the far side
    # of the Pareto front (more tokens, less success).
    offspring = {}
    for name, content, status, success, tokens in (
        ("candidate", "Plan a cheap trip to {{ city }}.", "candidate", 0.8, 150),
        ("draft", "Plan a long trip to {{ city }}, in detail.", "draft", 0.7, 400),
    ):
        offspring[name], _ = await store.create_prompt(
            PromptIn(
                agent="planner",
                content=content,
                parent_ids=[seed["id"]],
                status=status,
                created_by="apo",
                note=f"apo run run1: {name}",
                fitness={"success": success, "tokens": tokens, "n": 20},
            )
        )
    candidate, draft = offspring["candidate"], offspring["draft"]
    ids["prompts"] = {"seed": seed["id"], "candidate": candidate["id"], "draft": draft["id"]}
    found = pattern("config.temperature <= 0.3", agent="planner")
    found["evidence"]["sample_span_ids"] = {"with": [llm0["llm"]], "without": []}
    await store.save_patterns([found], scope={"agent": "planner"})
    ids["pattern"] = found["id"]
    return ids
