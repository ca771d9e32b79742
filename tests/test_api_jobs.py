"""`/api/v1/jobs` through the real app, on SQLite and Postgres: "run now" records a request
(202) that a worker claims — the server never runs the job —, the jobs with their last runs
and the runs newest first, 404 for an unknown job or run, API keys, and no 500 on bad input."""

from __future__ import annotations

import pytest

API = "/api/v1"
KEYS = "writer-key,reader-key:ro"
WRITE = {"Authorization": "Bearer writer-key"}
READ = {"Authorization": "Bearer reader-key"}
JSON = {"content-type": "application/json"}
PLAIN = {"content-type": "text/plain"}


async def test_run_now_records_a_request_a_worker_claims(api_client, store):
    response = await api_client.post(f"{API}/jobs/analysis/run")
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["job"] == "analysis" and run["status"] == "requested"
    assert run["trigger"] == "manual" and run["agent"] is None and run["report_id"] is None

    again = await api_client.post(f"{API}/jobs/analysis/run", json={})
    assert again.status_code == 202 and again.json()["id"] == run["id"]  # still waiting
    for_agent = await api_client.post(f"{API}/jobs/patterns/run", json={"agent": "support"})
    assert for_agent.status_code == 202 and for_agent.json()["agent"] == "support"

    claimed = await store.claim_job_run(worker="test-worker")
    assert claimed is not None and claimed["id"] == run["id"]
    one = await api_client.get(f"{API}/jobs/runs/{run['id']}")
    assert one.status_code == 200
    assert one.json()["status"] == "running" and one.json()["worker"] == "test-worker"


async def test_jobs_are_listed_with_their_last_runs(api_client, store):
    empty = (await api_client.get(f"{API}/jobs")).json()
    assert [job["name"] for job in empty["jobs"]] == ["analysis", "patterns"]
    assert all(job["last_run"] is None for job in empty["jobs"]) and empty["items"] == []

    first = (await api_client.post(f"{API}/jobs/patterns/run")).json()
    claimed = await store.claim_job_run(worker="w")
    await store.finish_job_run(claimed["id"], status="failed", error="RuntimeError: boom")
    second = (await api_client.post(f"{API}/jobs/analysis/run")).json()

    body = (await api_client.get(f"{API}/jobs")).json()
    assert [run["id"] for run in body["items"]] == [second["id"], first["id"]]
    jobs = {job["name"]: job for job in body["jobs"]}
    assert jobs["patterns"]["last_run"]["status"] == "failed"
    assert jobs["patterns"]["last_run"]["error"] == "RuntimeError: boom"
    assert jobs["analysis"]["last_run"]["id"] == second["id"]
    failed = await api_client.get(f"{API}/jobs", params={"status": "failed"})
    assert [run["id"] for run in failed.json()["items"]] == [first["id"]]
    paged = await api_client.get(f"{API}/jobs", params={"limit": 1})
    rest = await api_client.get(
        f"{API}/jobs", params={"limit": 1, "cursor": paged.json()["next_cursor"]}
    )
    assert [run["id"] for run in rest.json()["items"]] == [first["id"]]


async def test_unknown_jobs_and_runs_are_404(api_client):
    response = await api_client.post(f"{API}/jobs/compile/run")
    assert response.status_code == 404 and response.json()["type"] == "not_found"
    assert "analysis, patterns" in response.json()["detail"]
    missing = await api_client.get(f"{API}/jobs/runs/0000000000000000")
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/jobs", {"params": {"job": "compile"}}, 422),
        ("get", "/jobs", {"params": {"status": "done"}}, 422),
        ("get", "/jobs", {"params": {"limit": 0}}, 422),
        ("get", "/jobs", {"params": {"cursor": "not-a-cursor"}}, 422),
        ("post", "/jobs/analysis/run", {"json": {"agent": ""}}, 422),
        ("post", "/jobs/analysis/run", {"json": {"agent": "a", "x": 1}}, 422),
        ("post", "/jobs/analysis/run", {"json": ["analysis"]}, 422),
        ("post", "/jobs/analysis/run", {"content": b"{not json", "headers": JSON}, 400),
        ("post", "/jobs/analysis/run", {"content": b"agent", "headers": PLAIN}, 415),
    ],
)  # fmt: skip
async def test_bad_input_gets_a_4xx(api_client, method, path, kwargs, status):
    response = await getattr(api_client, method)(API + path, **kwargs)
    assert response.status_code == status, response.text


async def test_a_read_only_key_lists_but_cannot_ask_for_a_run(make_client):
    async with make_client(api_keys=KEYS) as client:
        assert (await client.post(f"{API}/jobs/analysis/run")).status_code == 401
        assert (await client.post(f"{API}/jobs/analysis/run", headers=READ)).status_code == 403
        assert (await client.get(f"{API}/jobs", headers=READ)).status_code == 200
        assert (await client.post(f"{API}/jobs/analysis/run", headers=WRITE)).status_code == 202
