"""`/api/v1/reports` through the real app, on SQLite and Postgres: stored reports newest first
by their summaries, one whole as JSON, Markdown or HTML, 404 for an unknown report or a
rendering it lacks, API keys, and no 500 on bad input."""

from __future__ import annotations

import pytest

API = "/api/v1"


async def seed(store) -> list[dict]:
    return [
        await store.save_report(
            kind="analysis",
            agent=None,
            summary={"executions": 10, "success_rate": 0.8},
            body={"executions": 10, "opportunities": [{"kind": "slow_step"}]},
            markdown="# Analysis\n\n10 executions",
            html="<!doctype html><title>Analysis</title><p>10 executions</p>",
            window=(1_700_000_000_000_000_000, 1_700_086_400_000_000_000),
        ),
        await store.save_report(
            kind="patterns", agent="support", summary={"patterns": 2}, body={"patterns": []}
        ),
    ]


async def test_reports_are_listed_newest_first_by_summary(api_client, store):
    analysis, patterns = await seed(store)
    body = (await api_client.get(f"{API}/reports")).json()
    assert [item["id"] for item in body["items"]] == [patterns["id"], analysis["id"]]
    assert body["next_cursor"] is None
    assert body["items"][1]["summary"] == {"executions": 10, "success_rate": 0.8}
    assert "body" not in body["items"][1] and body["items"][1]["has_html"] is True
    kind = await api_client.get(f"{API}/reports", params={"kind": "analysis"})
    assert [item["id"] for item in kind.json()["items"]] == [analysis["id"]]
    agent = await api_client.get(f"{API}/reports", params={"agent": "support"})
    assert [item["id"] for item in agent.json()["items"]] == [patterns["id"]]
    first = (await api_client.get(f"{API}/reports", params={"limit": 1})).json()
    rest = await api_client.get(
        f"{API}/reports", params={"limit": 1, "cursor": first["next_cursor"]}
    )
    assert [item["id"] for item in rest.json()["items"]] == [analysis["id"]]


async def test_one_report_as_json_markdown_and_html(api_client, store):
    analysis, patterns = await seed(store)
    whole = await api_client.get(f"{API}/reports/{analysis['id']}")
    assert whole.status_code == 200
    assert whole.json()["body"] == {"executions": 10, "opportunities": [{"kind": "slow_step"}]}
    assert whole.json()["window"] == {
        "start": "2023-11-14T22:13:20Z",
        "end": "2023-11-15T22:13:20Z",
    }
    markdown = await api_client.get(
        f"{API}/reports/{analysis['id']}", params={"format": "markdown"}
    )
    assert markdown.status_code == 200 and markdown.text == "# Analysis\n\n10 executions"
    assert markdown.headers["content-type"].startswith("text/markdown")
    html = await api_client.get(f"{API}/reports/{analysis['id']}", params={"format": "html"})
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert "<p>10 executions</p>" in html.text

    lacking = await api_client.get(f"{API}/reports/{patterns['id']}", params={"format": "html"})
    assert lacking.status_code == 404 and "without html" in lacking.json()["detail"]
    missing = await api_client.get(f"{API}/reports/0000000000000000")
    assert missing.status_code == 404 and missing.json()["type"] == "not_found"


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 0}, "limit"), ({"cursor": "not-a-cursor"}, "cursor"), ({"kind": ""}, "kind")],
)
async def test_bad_filters_are_422_naming_the_field(api_client, params, field):
    response = await api_client.get(f"{API}/reports", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_a_bad_format_is_422(api_client, store):
    analysis, _ = await seed(store)
    response = await api_client.get(f"{API}/reports/{analysis['id']}", params={"format": "pdf"})
    assert response.status_code == 422 and response.json()["field"] == "format"


async def test_reports_need_a_key_when_keys_are_set(make_client, store):
    analysis, _ = await seed(store)
    async with make_client(api_keys="writer-key,reader-key:ro") as client:
        assert (await client.get(f"{API}/reports")).status_code == 401
        read = {"Authorization": "Bearer reader-key"}
        response = await client.get(f"{API}/reports/{analysis['id']}", headers=read)
        assert response.status_code == 200
