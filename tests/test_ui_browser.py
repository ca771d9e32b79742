"""The dashboard in a real headless Chromium against `evolution-store serve`, walked as a
person would: overview → agent → task → trace → a span's rewards; a late reward showing up
after a reload; the Approve and Apply buttons; a key asked for, and a read-only key refused.
Every page is screenshotted (the folder is printed), checked for console errors, and for
controls without a name or out of the keyboard's reach."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium, open_page, screenshot, seed_dashboard

from evolution_store import EvolutionStore

KEYS = "writer-key,reader-key:ro"

# Every control on the page without an accessible name: inputs and selects need a label,
# buttons and links text, an aria-label or (links drawn in an SVG chart) a <title>.
CONTROLS = "a[href], button, input:not([type=hidden]), select, textarea"
UNLABELLED = f"""() => [...document.querySelectorAll('{CONTROLS}')]
  .filter(el => {{
    if (el.matches('input, select, textarea'))
      return !(el.labels.length || el.getAttribute('aria-label'));
    return !((el.textContent || '').trim() || el.getAttribute('aria-label')
             || el.getAttribute('title'));
  }})
  .map(el => el.outerHTML.slice(0, 120))"""

FOCUSABLE = f"""() => [...document.querySelectorAll('{CONTROLS}')]
  .filter(el => !el.closest('svg') && el.getClientRects().length).length"""


def _seed(url: str) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        store = await EvolutionStore.open(url)
        try:
            return await seed_dashboard(store)
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture
def dashboard(live_server, tmp_path: Path):
    """A served, seeded store: (server, ids)."""

    def start(**options: Any):
        url = f"sqlite:///{tmp_path / 'ui.db'}"
        ids = _seed(url)
        return live_server(url, otlp_http=False, **options), ids

    return start


def check_page(page: Any, name: str, console: Any) -> None:
    """Screenshot, then no console error and no unnamed control."""
    screenshot(page, name)
    assert console.errors == [], console.errors
    assert page.evaluate(UNLABELLED) == [], name


def test_walk_from_overview_to_a_span_and_its_rewards(dashboard):
    server, ids = dashboard()
    trace = ids["traces"][0]
    with chromium() as browser:
        page, console = open_page(browser, viewport={"width": 1280, "height": 900})
        page.goto(server.url + "/")
        page.get_by_role("heading", name="Overview").wait_for()
        check_page(page, "1-overview", console)

        page.get_by_role("link", name="planner", exact=True).first.click()
        page.get_by_role("heading", name="Agent planner").wait_for()
        check_page(page, "1-agent", console)

        page.get_by_role("link", name=ids["task"]).first.click()
        page.get_by_role("heading", name="Task plan a trip").wait_for()
        check_page(page, "2-task", console)
        assert page.locator("svg.timeline rect.bar").count() == 2

        page.get_by_role("link", name=f"trace {trace['trace'][:8]}").click()
        page.get_by_role("heading", name=f"Trace {trace['trace']}").wait_for()
        assert page.locator(".wf-row").count() == 3
        assert page.locator(".wf-row.is-error").count() == 2  # the root and the tool span

        # Clicking a span opens its detail beside the waterfall, without a reload.
        page.evaluate("window.__same_document = true")
        page.locator(f"#span-{trace['llm']} a.wf-label").click()
        detail = page.locator("#detail")
        detail.get_by_text("missed the budget").wait_for()
        assert page.evaluate("window.__same_document") is True
        assert "0.25" in detail.locator("table.rewards").inner_text()
        assert f"span={trace['llm']}" in page.url
        check_page(page, "3-trace-span-detail", console)

        # A reward arriving later is shown on its span after a reload.
        page.locator(f"#span-{trace['tool']} a.wf-label").click()
        detail.get_by_text("search timed out").wait_for()
        assert "arrived after the fact" not in detail.inner_text()
        posted = httpx.post(
            server.url + "/api/v1/rewards",
            json={
                "name": "review",
                "value": 0.1,
                "span_id": trace["tool"],
                "trace_id": trace["trace"],
                "feedback": "arrived after the fact",
                "source": "human",
            },
        )
        assert posted.status_code == 201, posted.text
        page.reload()
        page.locator("#detail").get_by_text("arrived after the fact").wait_for()
        check_page(page, "3-trace-late-reward", console)

        page.get_by_role("link", name="Rewards", exact=True).click()
        page.get_by_role("heading", name="Rewards", exact=True).wait_for()
        assert page.locator("svg.interval-chart").count() == 1
        check_page(page, "4-rewards", console)


def test_buttons_approve_a_prompt_and_apply_a_pattern(dashboard):
    server, ids = dashboard()
    with chromium() as browser:
        page, console = open_page(browser, viewport={"width": 1280, "height": 900})
        page.goto(server.url + "/agents/planner")
        before = page.locator("ul.markers li", has_text="prompt.promoted").count()

        page.goto(server.url + "/prompts?agent=planner")
        candidate = page.locator(f"#prompt-{ids['prompts']['candidate']}")
        assert "candidate" in candidate.locator(".prompt-status").inner_text()
        assert page.locator("svg.lineage-tree").count() == 1
        assert page.locator("svg.scatter circle.point").count() == 2
        check_page(page, "6-prompts", console)

        with page.expect_navigation():
            candidate.get_by_role("button", name="Approve version 2").click()
        candidate = page.locator(f"#prompt-{ids['prompts']['candidate']}")
        assert "production" in candidate.locator(".prompt-status").inner_text()
        seed = page.locator(f"#prompt-{ids['prompts']['seed']}")
        assert "archived" in seed.locator(".prompt-status").inner_text()
        seed.get_by_role("button", name="Roll back to version 1").wait_for()
        check_page(page, "6-prompts-approved", console)

        page.goto(server.url + "/agents/planner")
        after = page.locator("ul.markers li", has_text="prompt.promoted").count()
        assert after == before + 1

        page.goto(server.url + "/patterns")
        check_page(page, "5-patterns", console)
        with page.expect_navigation():
            page.get_by_role("button", name="Apply pattern config.temperature <= 0.3").click()
        assert page.locator(f"#pattern-{ids['pattern']} .status").inner_text() == "applied"
        check_page(page, "5-patterns-applied", console)


def test_with_keys_the_ui_asks_once_and_refuses_a_read_only_press(dashboard):
    server, ids = dashboard(api_keys=KEYS)
    with chromium() as browser:
        page, console = open_page(browser)
        page.goto(server.url + "/prompts?agent=planner")
        page.get_by_label("API key").fill("reader-key")
        check_page(page, "7-login", console)
        page.get_by_role("button", name="Log in").click()
        page.get_by_role("heading", name="Prompts of planner").wait_for()
        assert "read-only key" in page.locator("header").inner_text()

        # The key is asked once: other pages open with the cookie.
        page.goto(server.url + "/tasks")
        page.get_by_role("heading", name="Tasks", exact=True).wait_for()

        page.goto(server.url + "/prompts?agent=planner")
        with page.expect_response(lambda r: r.request.method == "POST") as pressed:
            page.get_by_role("button", name="Approve version 2").click()
        assert pressed.value.status == 403
        page.get_by_text("read-only").first.wait_for()
        screenshot(page, "7-read-only-refused")
    prompt = httpx.get(
        f"{server.url}/api/v1/prompts/{ids['prompts']['candidate']}",
        headers={"Authorization": "Bearer reader-key"},
    ).json()
    assert prompt["status"] == "candidate"


def test_every_control_is_reachable_by_keyboard(dashboard):
    server, ids = dashboard()
    trace = ids["traces"][0]
    with chromium() as browser:
        page, _ = open_page(browser, viewport={"width": 1280, "height": 900})
        for path in ("/", "/tasks", f"/traces/{trace['trace']}", "/prompts?agent=planner"):
            page.goto(server.url + path)
            wanted = page.evaluate(FOCUSABLE)
            reached = set()
            for _ in range(wanted + 10):
                page.keyboard.press("Tab")
                reached.add(page.evaluate("document.activeElement.outerHTML.slice(0, 200)"))
            assert len(reached) >= wanted, (path, wanted, len(reached))

        # A span's detail opens from the keyboard alone.
        page.goto(server.url + f"/traces/{trace['trace']}")
        page.locator(f"#span-{trace['llm']} a.wf-label").focus()
        page.keyboard.press("Enter")
        page.locator("#detail").get_by_text("missed the budget").wait_for()


def test_links_and_buttons_work_without_javascript(dashboard):
    server, ids = dashboard()
    trace = ids["traces"][0]
    with chromium() as browser:
        page, console = open_page(browser, java_script_enabled=False)
        page.goto(server.url + f"/traces/{trace['trace']}")
        page.locator(f"#span-{trace['llm']} a.wf-label").click()
        page.locator("#detail").get_by_text("missed the budget").wait_for()
        assert f"span={trace['llm']}" in page.url
        page.goto(server.url + "/prompts?agent=planner")
        with page.expect_navigation():
            page.get_by_role("button", name="Approve version 2").click()
        row = page.locator(f"#prompt-{ids['prompts']['candidate']} .prompt-status")
        assert "production" in row.inner_text()
        assert console.errors == []
