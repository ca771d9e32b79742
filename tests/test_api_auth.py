"""API keys: with `EVOLUTION_API_KEYS` set, every route but /healthz needs a bearer key, and a
`:ro` key may only read. Runs on both backends (the store is real either way)."""

from __future__ import annotations

import pytest
from factories import span_dict, task_body

API = "/api/v1"
KEYS = "writer-key,reader-key:ro"
WRITE = {"Authorization": "Bearer writer-key"}
READ = {"Authorization": "Bearer reader-key"}


@pytest.fixture
async def secured(make_client):
    async with make_client(api_keys=KEYS) as client:
        yield client


async def test_healthz_needs_no_key(secured):
    assert (await secured.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", f"{API}/tasks"),
        ("POST", f"{API}/tasks"),
        ("GET", f"{API}/tasks/x"),
        ("GET", f"{API}/spans"),
        ("POST", f"{API}/spans"),
        ("POST", f"{API}/spans/batch"),
        ("GET", f"{API}/rewards"),
        ("GET", f"{API}/rewards/summary?group_by=name"),
        ("GET", f"{API}/executions/x"),
        ("GET", f"{API}/stats/agent"),
        ("POST", "/v1/traces"),
    ],
)
async def test_missing_or_wrong_key_is_401(secured, method, path):
    missing = await secured.request(method, path, json={})
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["type"] == "unauthorized"
    wrong = await secured.request(method, path, json={}, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    basic = await secured.request(method, path, json={}, headers={"Authorization": "Basic eA=="})
    assert basic.status_code == 401


async def test_write_key_reads_and_writes(secured):
    created = await secured.post(f"{API}/tasks", json=task_body(id="k1"), headers=WRITE)
    assert created.status_code == 201
    assert (await secured.get(f"{API}/tasks/k1", headers=WRITE)).status_code == 200
    posted = await secured.post(f"{API}/spans", json=span_dict(), headers=WRITE)
    assert posted.status_code == 200


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", f"{API}/tasks", {"id": "nope"}),
        ("PATCH", f"{API}/tasks/k1", {"status": "cancelled"}),
        ("POST", f"{API}/tasks/k1/executions", {}),
        ("PATCH", f"{API}/executions/x", {"status": "failed"}),
        ("POST", f"{API}/spans", {"name": "s"}),
        ("POST", f"{API}/spans/batch", {"spans": []}),
        ("POST", f"{API}/spans/{'a' * 16}/tags", {"tags": ["t"]}),
        ("POST", f"{API}/rewards", {"value": 1, "trace_id": "b" * 32}),
        ("POST", "/v1/traces", {}),
    ],
)
async def test_read_only_key_cannot_write(secured, method, path, body):
    await secured.post(f"{API}/tasks", json=task_body(id="k1"), headers=WRITE)
    response = await secured.request(method, path, json=body, headers=READ)
    assert response.status_code == 403
    assert response.json()["type"] == "forbidden"


async def test_read_only_key_reads(secured):
    await secured.post(f"{API}/tasks", json=task_body(id="k2"), headers=WRITE)
    assert (await secured.get(f"{API}/tasks/k2", headers=READ)).status_code == 200
    assert (await secured.get(f"{API}/tasks", headers=READ)).status_code == 200
    assert (await secured.get(f"{API}/rewards", headers=READ)).status_code == 200
    assert (await secured.get(f"{API}/stats/a", headers=READ)).status_code == 200


async def test_no_keys_configured_means_open(api_client):
    assert (await api_client.get(f"{API}/tasks")).status_code == 200
    assert (await api_client.post(f"{API}/tasks", json=task_body())).status_code == 201
