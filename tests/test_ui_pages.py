"""The dashboard's pages over the real app (ASGI, no socket), on SQLite and Postgres: every
page answers with HTML showing the stored data, keys are asked for once and kept in a
cookie only the UI reads, a read-only key cannot press a button, and no id or parameter a
person can type produces a 500."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from browser import seed_dashboard
from factories import reward_in

KEYS = "writer-key,reader-key:ro"


@pytest.fixture
async def seeded(store):
    return await seed_dashboard(store)


def html(response) -> str:
    assert response.headers["content-type"].startswith("text/html"), response.text[:200]
    return response.text


def pages(ids: dict) -> dict[str, str]:
    trace = ids["traces"][0]
    return {
        "/": "planner",
        "/agents/planner": "prompt.promoted",
        "/tasks": "plan a trip",
        "/tasks?agent=planner&status=succeeded&tag=demo&since=7d": "plan a trip",
        "/tasks?agent=nobody": "No tasks match",
        f"/tasks/{quote(ids['task'])}": "attempt 2",
        f"/traces/{trace['trace']}": "tool.search",
        f"/traces/{trace['trace']}?span={trace['llm']}": "missed the budget",
        f"/traces/{trace['trace']}/spans/{trace['llm']}": "gpt-test",
        "/rewards": "quality",
        "/rewards?group_by=config:prompt_id": "p1",
        "/rewards?group_by=agent&name=quality": "Rewards by agent, name quality",
        "/patterns": "config.temperature &lt;= 0.3",
        "/prompts": "planner",
        "/prompts?agent=planner": "Approve",
        "/login": "API key",
    }


async def test_every_page_shows_the_stored_data(api_client, seeded):
    for path, expected in pages(seeded).items():
        response = await api_client.get(path)
        assert response.status_code == 200, (path, response.text[:500])
        assert expected in html(response), path


async def test_pages_of_an_empty_store_say_nothing_yet(api_client):
    for path in ("/", "/tasks", "/rewards", "/patterns", "/prompts"):
        response = await api_client.get(path)
        assert response.status_code == 200, path
        assert re.search(r"No |Nothing yet", html(response)), path


async def test_the_api_docs_and_health_still_answer(api_client):
    assert (await api_client.get("/healthz")).status_code == 200
    assert (await api_client.get("/docs")).status_code == 200
    schema = (await api_client.get("/openapi.json")).json()
    assert not any(path in schema["paths"] for path in ("/", "/tasks", "/login"))
    assert (await api_client.get("/ui-static/ui.css")).status_code == 200


async def test_trace_waterfall_nests_spans_and_marks_errors_and_rewards(api_client, seeded):
    trace = seeded["traces"][0]
    page = html(await api_client.get(f"/traces/{trace['trace']}"))
    order = [page.index(f'id="span-{trace[key]}"') for key in ("root", "llm", "tool")]
    assert order == sorted(order)
    llm_row = page.split(f'id="span-{trace["llm"]}"')[1].split("</li>")[0]
    assert "reward 0.25" in llm_row
    assert "165 tok" in llm_row  # 120 in + 45 out
    tool_row = page.split(f'id="span-{trace["tool"]}"')[0].rsplit("<li", 1)[1]
    assert "is-error" in tool_row


async def test_a_late_reward_appears_on_its_span(api_client, store, seeded):
    trace = seeded["traces"][1]
    url = f"/traces/{trace['trace']}?span={trace['tool']}"
    assert "arrived late" not in html(await api_client.get(url))
    await store.add_reward(
        reward_in(
            0.9,
            name="late",
            span_id=trace["tool"],
            trace_id=trace["trace"],
            feedback="arrived late",
            dimensions={"late": 0.9, "speed": 0.4},
        )
    )
    page = html(await api_client.get(url))
    assert "arrived late" in page and "speed=0.4" in page


async def test_task_page_shows_executions_with_status_and_rewards(api_client, seeded):
    page = html(await api_client.get(f"/tasks/{quote(seeded['task'])}"))
    assert "attempt 1" in page and "attempt 2" in page
    assert "status-failed" in page and "status-succeeded" in page
    assert "quality 0.25" in page
    assert 'class="chart timeline"' in page


async def test_filters_and_cursor_paging_keep_the_query_string(api_client, store):
    from factories import task_in

    for index in range(55):
        await store.create_task(task_in(name=f"bulk-{index}", tags=["bulk"]))
    first = html(await api_client.get("/tasks?tag=bulk"))
    assert first.count("bulk-") == 50
    next_url = re.search(r'href="([^"]+)" rel="next"', first)[1].replace("&amp;", "&")
    assert "tag=bulk" in next_url and "cursor=" in next_url
    second = html(await api_client.get(next_url))
    assert second.count("bulk-") == 5


async def test_overview_lists_markers_and_agent_figures(api_client, seeded):
    page = html(await api_client.get("/"))
    assert "prompt.promoted" in page
    assert 'class="chart sparkline"' in page or "no data" in page
    assert "50.0 %" in page  # one failed root of two


async def test_approve_button_promotes_the_candidate_and_adds_a_marker(api_client, store, seeded):
    candidate = seeded["prompts"]["candidate"]
    response = await api_client.post(
        f"/prompts/{candidate}/approve", data={"next": "/prompts?agent=planner"}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/prompts?agent=planner"
    assert (await store.get_prompt(candidate))["status"] == "production"
    assert (await store.get_prompt(seeded["prompts"]["seed"]))["status"] == "archived"
    kinds = [m["kind"] for m in (await store.list_markers(agent="planner")).items]
    assert kinds.count("prompt.promoted") == 2
    page = html(await api_client.get("/prompts?agent=planner"))
    assert "Roll back to this" in page


async def test_prompts_page_shows_a_running_experiment_with_its_results(api_client, store, seeded):
    from evolution_store.registry_models import ExperimentIn

    prompts = seeded["prompts"]
    experiment = await store.create_experiment(
        ExperimentIn(
            agent="planner",
            variants=[
                {"prompt_id": prompts["seed"], "weight": 0.5},
                {"prompt_id": prompts["candidate"], "weight": 0.5},
            ],
        )
    )
    page = html(await api_client.get("/prompts?agent=planner"))
    section = page.split("Running experiments")[1].split("Optimisation runs")[0]
    assert experiment["id"] in section
    assert section.count('<tr><th scope="row">') == 2  # a row per variant


async def test_apply_button_applies_the_pattern(api_client, store, seeded):
    response = await api_client.post(f"/patterns/{seeded['pattern']}/apply", data={})
    assert response.status_code == 303, response.text
    assert (await store.get_pattern(seeded["pattern"]))["status"] == "applied"
    again = await api_client.post(f"/patterns/{seeded['pattern']}/apply", data={})
    assert again.status_code == 409 and "already" in html(again)


async def test_evidence_span_links_lead_to_the_span_in_its_trace(api_client, seeded):
    trace = seeded["traces"][0]
    response = await api_client.get(f"/spans/{trace['llm']}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/traces/{trace['trace']}?span={trace['llm']}#detail"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/tasks/no-such-task", 404),
        ("/traces/zz", 422),
        (f"/traces/{'a' * 32}", 404),
        (f"/traces/{'a' * 32}?span=zz", 404),
        (f"/traces/{'a' * 32}/spans/{'b' * 16}", 404),
        ("/tasks?status=bogus", 400),
        ("/tasks?since=yesterday", 400),
        ("/tasks?cursor=not-a-cursor", 422),
        ("/tasks?agent=" + "x" * 600, 400),
        ("/tasks?tag=%00", 400),
        ("/rewards?group_by=colour", 400),
        ("/rewards?group_by=config:", 400),
        ("/patterns?kind=odd", 400),
        ("/patterns?cursor=garbage", 422),
        ("/prompts?agent=planner&diff=nope&against=nope", 404),
        ("/spans/zz", 422),
        (f"/spans/{'c' * 16}", 404),
        ("/agents/%E2%80%8B?since=99999999d", 400),
        ("/?since=2026-13-45", 400),
        ("/tasks?since=9999-12-31", 400),
        ("/tasks?until=0001-01-01", 400),
    ],
)
async def test_bad_ids_and_parameters_get_a_page_not_a_500(api_client, path, status):
    response = await api_client.get(path)
    assert response.status_code == status, response.text[:300]
    assert "<h1>" in html(response)


async def test_unknown_ids_on_buttons_are_404_pages(api_client):
    for path in ("/prompts/nope/approve", "/patterns/nope/apply"):
        response = await api_client.post(path, data={})
        assert response.status_code == 404, path
        assert "not found" in html(response)


async def test_a_form_posted_from_another_site_is_refused(api_client, store, seeded):
    candidate = seeded["prompts"]["candidate"]
    response = await api_client.post(
        f"/prompts/{candidate}/approve", data={}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert (await store.get_prompt(candidate))["status"] == "candidate"


# -- keys ------------------------------------------------------------------------------------


async def test_with_keys_the_ui_asks_for_one_and_keeps_it_in_a_strict_cookie(make_client, seeded):
    async with make_client(api_keys=KEYS) as client:
        response = await client.get("/tasks?status=failed")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=" + quote("/tasks?status=failed", "")
        wrong = await client.post("/login", data={"key": "guess", "next": "/tasks"})
        assert wrong.status_code == 401 and "not one of this server" in html(wrong)
        login = await client.post("/login", data={"key": "reader-key", "next": "/tasks"})
        assert login.status_code == 303 and login.headers["location"] == "/tasks"
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = await client.get("/tasks")
        assert page.status_code == 200 and "read-only key" in html(page)


async def test_the_ui_cookie_opens_no_api_route(make_client, seeded):
    async with make_client(api_keys=KEYS) as client:
        await client.post("/login", data={"key": "writer-key", "next": "/"})
        assert (await client.get("/")).status_code == 200
        assert (await client.get("/api/v1/tasks")).status_code == 401


async def test_a_read_only_key_cannot_press_write_buttons(make_client, store, seeded):
    candidate = seeded["prompts"]["candidate"]
    async with make_client(api_keys=KEYS) as client:
        await client.post("/login", data={"key": "reader-key", "next": "/"})
        page = html(await client.get("/prompts?agent=planner"))
        assert "Approve" in page  # shown, and refused when pressed
        refused = await client.post(f"/prompts/{candidate}/approve", data={})
        assert refused.status_code == 403 and "read-only" in html(refused)
        applied = await client.post(f"/patterns/{seeded['pattern']}/apply", data={})
        assert applied.status_code == 403
    assert (await store.get_prompt(candidate))["status"] == "candidate"
    assert (await store.get_pattern(seeded["pattern"]))["status"] == "active"


async def test_a_write_key_approval_records_its_fingerprint(make_client, store, seeded):
    candidate = seeded["prompts"]["candidate"]
    async with make_client(api_keys=KEYS) as client:
        await client.post("/login", data={"key": "writer-key", "next": "/"})
        response = await client.post(f"/prompts/{candidate}/approve", data={"note": "ok"})
        assert response.status_code == 303
    approved = await store.get_prompt(candidate)
    assert approved["status"] == "production"
    assert approved["approved_by"] not in ("anonymous", "writer-key")
    assert len(approved["approved_by"]) == 16


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil", ""])
async def test_login_never_redirects_to_another_site(make_client, target):
    async with make_client(api_keys=KEYS) as client:
        response = await client.post("/login", data={"key": "writer-key", "next": target})
        assert response.headers["location"] == "/"


async def test_logout_forgets_the_key(make_client):
    async with make_client(api_keys=KEYS) as client:
        await client.post("/login", data={"key": "writer-key", "next": "/"})
        assert (await client.post("/logout")).status_code == 303
        assert (await client.get("/")).status_code == 303


async def test_a_bearer_header_opens_the_pages_too(make_client):
    async with make_client(api_keys=KEYS) as client:
        response = await client.get("/", headers={"Authorization": "Bearer reader-key"})
        assert response.status_code == 200


NASTY = [
    "",
    " ",
    "%00",
    "%FF",
    "'; drop table spans; --",
    "x" * 5000,
    "-1",
    "1e999",
    "../..",
    "%0A",
]
PARAMETERS = {
    "/": ["since"],
    "/agents/planner": ["since"],
    "/tasks": ["agent", "status", "tag", "since", "until", "cursor"],
    "/rewards": ["group_by", "tag", "name"],
    "/patterns": ["agent", "kind", "status", "cursor"],
    "/prompts": ["agent", "diff", "against", "run"],
    "/login": ["next"],
}


async def test_no_value_of_any_parameter_produces_a_500(api_client, seeded):
    paths = [
        f"{page}?{name}={value}"
        for page, names in PARAMETERS.items()
        for name in names
        for value in NASTY
    ]
    paths += [
        f"/prompts?agent=planner&diff={seeded['prompts']['seed']}&against={value}"
        for value in NASTY
    ]
    paths += [f"/traces/{value}" for value in NASTY[1:]] + [
        f"/tasks/{value}" for value in NASTY[1:]
    ]
    for path in paths:
        response = await api_client.get(path)
        assert response.status_code < 500, (path, response.text[:300])


async def test_reports_page_lists_stored_reports_and_asks_for_runs(api_client, store):
    empty = html(await api_client.get("/reports"))
    assert "Nothing yet" in empty
    analysis = await store.save_report(
        kind="analysis",
        agent="planner",
        summary={"executions": 12, "success_rate": 0.5},
        body={"executions": {"total": 12}},
        markdown="# Analysis\n12 executions",
        html="<!doctype html><title>analysis</title><h1>Analysis of planner</h1>",
    )
    mined = await store.save_report(
        kind="patterns", agent=None, summary={"patterns": 3}, body={}, markdown="3 patterns found"
    )
    listed = html(await api_client.get("/reports"))
    assert f"/reports/{analysis['id']}" in listed and "success_rate=0.5" in listed
    assert "every agent" in listed
    assert "Analysis of planner" in (await api_client.get(f"/reports/{analysis['id']}")).text
    assert "3 patterns found" in html(await api_client.get(f"/reports/{mined['id']}"))
    assert (await api_client.get("/reports/unknown")).status_code == 404
    assert (await api_client.get("/reports?kind=nonsense")).status_code == 400

    asked = await api_client.post("/jobs/analysis/run", data={"agent": "planner"})
    assert asked.status_code == 303 and asked.headers["location"] == "/reports"
    runs = (await store.list_job_runs(job="analysis")).items
    assert [(r["status"], r["agent"], r["trigger"]) for r in runs] == [
        ("requested", "planner", "manual")
    ]


async def test_a_read_only_key_cannot_ask_for_a_run(make_client, store):
    async with make_client(api_keys=KEYS) as client:
        await client.post("/login", data={"key": "reader-key", "next": "/"})
        assert "Run analysis now" in html(await client.get("/reports"))
        refused = await client.post("/jobs/analysis/run", data={})
        assert refused.status_code == 403 and "read-only" in html(refused)
    assert (await store.list_job_runs()).items == []


async def test_run_now_for_an_unknown_job_is_a_404_page(api_client, store):
    refused = await api_client.post("/jobs/nonsense/run", data={})
    assert refused.status_code == 404 and "no job named" in html(refused)
    assert (await store.list_job_runs()).items == []
