"""The static report opened from `file://` in headless Chromium, as a person would open a file
someone sent them: its charts render, it asks the network for nothing (the only request is the
file itself), the console stays clean, and a span's row opens the span's details with the
reward that judges it. Screenshots go to the folder `browser.screenshot` prints."""

from __future__ import annotations

import asyncio

from browser import chromium, open_page, screenshot
from click.testing import CliRunner
from test_cli_report import seed

from evolution_store.cli import cli


def test_the_report_renders_offline_with_no_request_and_no_console_error(tmp_path):
    url = f"sqlite:///{tmp_path}/report.db"
    spans = asyncio.run(seed(url, extra_tasks=3))
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--db", url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    file_url = out.as_uri()

    with chromium() as browser:
        page, console = open_page(browser, viewport={"width": 1280, "height": 900})
        page.goto(file_url)
        page.wait_for_load_state("load")

        charts = page.locator("svg[role=img]")
        assert charts.count() >= 7
        for selector in ("svg.timeline", "svg.line-chart", "svg.interval-chart", "svg.sparkline"):
            chart = page.locator(selector).first
            chart.scroll_into_view_if_needed()
            assert chart.is_visible(), selector
            box = chart.bounding_box()
            assert box and box["width"] > 50 and box["height"] > 20, selector
        assert page.locator("svg.timeline rect.bar").count() == 6
        screenshot(page, "report-top", full_page=False)

        chat = spans["chat"]
        detail = page.locator(f"#span-detail-{chat.trace_id}-{chat.span_id}")
        assert not detail.evaluate("element => element.open")
        row = page.locator(f"a.wf-label[href='#span-detail-{chat.trace_id}-{chat.span_id}']")
        row.click()
        assert detail.evaluate("element => element.open")
        assert "late verdict" in detail.inner_text()
        screenshot(page, "report-span-detail", full_page=False)
        screenshot(page, "report-full")

        assert console.errors == []
        assert console.requests == [file_url]
