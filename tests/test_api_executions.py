"""`/api/v1/executions/{id}` (and starting them under a task) through the real app, on SQLite
and Postgres."""

from __future__ import annotations

import pytest
from factories import span_batch, task_body

API = "/api/v1"


async def _start(client, task_id: str, **body) -> dict:
    response = await client.post(f"{API}/tasks/{task_id}/executions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_get_and_patch_an_execution(api_client):
    task_id = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    execution = await _start(api_client, task_id, config={"model": "m1", "temperature": 0.2})
    fetched = await api_client.get(f"{API}/executions/{execution['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["config"] == {"model": "m1", "temperature": 0.2}
    assert fetched.json()["status"] == "running"

    ended = await api_client.patch(
        f"{API}/executions/{execution['id']}", json={"status": "succeeded"}
    )
    assert ended.status_code == 200
    assert ended.json()["status"] == "succeeded"
    assert ended.json()["ended_at"] is not None


@pytest.mark.parametrize(
    "execution_status, task_status",
    [("succeeded", "succeeded"), ("failed", "failed"), ("timeout", "failed")],
)
async def test_task_follows_its_latest_execution(api_client, execution_status, task_status):
    task_id = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    first = await _start(api_client, task_id)
    second = await _start(api_client, task_id)
    assert (first["attempt"], second["attempt"]) == (1, 2)

    await api_client.patch(f"{API}/executions/{second['id']}", json={"status": execution_status})
    assert (await api_client.get(f"{API}/tasks/{task_id}")).json()["status"] == task_status

    # An older attempt finishing late does not override the latest one.
    await api_client.patch(f"{API}/executions/{first['id']}", json={"status": "succeeded"})
    assert (await api_client.get(f"{API}/tasks/{task_id}")).json()["status"] == task_status


async def test_caller_chosen_execution_id_and_its_spans(api_client):
    task_id = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    execution = await _start(api_client, task_id, id="exec-mine")
    assert execution["id"] == "exec-mine"
    batch = span_batch(4, task_id=task_id, execution_id="exec-mine")
    assert (await api_client.post(f"{API}/spans", json={"spans": batch})).status_code == 200
    spans = (await api_client.get(f"{API}/spans", params={"execution_id": "exec-mine"})).json()
    assert len(spans["items"]) == 4


async def test_execution_id_of_another_task_is_refused(api_client):
    first = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    second = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    await _start(api_client, first, id="shared-exec")
    response = await api_client.post(f"{API}/tasks/{second}/executions", json={"id": "shared-exec"})
    assert response.status_code in (409, 422)


async def test_unknown_and_invalid(api_client):
    assert (await api_client.get(f"{API}/executions/nope")).status_code == 404
    patch = await api_client.patch(f"{API}/executions/nope", json={"status": "failed"})
    assert patch.status_code == 404
    task_id = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    execution = await _start(api_client, task_id)
    # A task status is not an execution status.
    wrong = await api_client.patch(
        f"{API}/executions/{execution['id']}", json={"status": "cancelled"}
    )
    assert wrong.status_code == 422
    assert wrong.json()["field"] == "status"
