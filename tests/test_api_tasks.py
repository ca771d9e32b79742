"""`/api/v1/tasks` through the real app, on SQLite and Postgres."""

from __future__ import annotations

from factories import task_body

API = "/api/v1"


async def test_create_task_is_idempotent_on_id(api_client):
    body = task_body(tags=["math", "easy"], metadata={"source": "unit"})
    first = await api_client.post(f"{API}/tasks", json=body)
    assert first.status_code == 201
    task = first.json()
    assert task["id"] == body["id"]
    assert task["status"] == "queued"
    assert task["tags"] == ["math", "easy"]
    assert task["input"] == {"q": 1}

    again = await api_client.post(f"{API}/tasks", json={**body, "name": "other"})
    assert again.status_code == 200
    assert again.json()["name"] == task["name"]

    fetched = await api_client.get(f"{API}/tasks/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == task


async def test_create_task_without_id_generates_one(api_client):
    response = await api_client.post(f"{API}/tasks", json={"name": "anonymous"})
    assert response.status_code == 201
    task_id = response.json()["id"]
    assert task_id
    assert (await api_client.get(f"{API}/tasks/{task_id}")).status_code == 200


async def test_unknown_task_is_404(api_client):
    response = await api_client.get(f"{API}/tasks/nope")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"
    assert (await api_client.get(f"{API}/tasks/nope/executions")).status_code == 404
    patch = await api_client.patch(f"{API}/tasks/nope", json={"status": "cancelled"})
    assert patch.status_code == 404


async def test_retries_are_attempts_and_status_follows_latest_execution(api_client):
    task_id = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]

    first = await api_client.post(
        f"{API}/tasks/{task_id}/executions", json={"config": {"prompt": "v1"}}
    )
    assert first.status_code == 201
    assert first.json()["attempt"] == 1
    assert first.json()["config"] == {"prompt": "v1"}
    assert (await api_client.get(f"{API}/tasks/{task_id}")).json()["status"] == "running"

    failed = await api_client.patch(
        f"{API}/executions/{first.json()['id']}", json={"status": "failed"}
    )
    assert failed.status_code == 200
    assert failed.json()["status"] == "failed"
    assert (await api_client.get(f"{API}/tasks/{task_id}")).json()["status"] == "failed"

    # A retry: no body at all is fine.
    second = await api_client.post(f"{API}/tasks/{task_id}/executions")
    assert second.status_code == 201
    assert second.json()["attempt"] == 2
    assert (await api_client.get(f"{API}/tasks/{task_id}")).json()["status"] == "running"

    await api_client.patch(f"{API}/executions/{second.json()['id']}", json={"status": "succeeded"})
    assert (await api_client.get(f"{API}/tasks/{task_id}")).json()["status"] == "succeeded"

    listed = await api_client.get(f"{API}/tasks/{task_id}/executions")
    assert listed.status_code == 200
    assert [e["attempt"] for e in listed.json()["items"]] == [1, 2]
    assert [e["status"] for e in listed.json()["items"]] == ["failed", "succeeded"]

    one = await api_client.get(f"{API}/executions/{first.json()['id']}")
    assert one.status_code == 200
    assert one.json()["task_id"] == task_id


async def test_execution_for_unknown_task_is_404(api_client):
    response = await api_client.post(f"{API}/tasks/ghost/executions", json={})
    assert response.status_code == 404
    assert (await api_client.get(f"{API}/executions/ghost")).status_code == 404


async def test_patch_task_status(api_client):
    task_id = (await api_client.post(f"{API}/tasks", json=task_body())).json()["id"]
    response = await api_client.patch(f"{API}/tasks/{task_id}", json={"status": "cancelled"})
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    bad = await api_client.patch(f"{API}/tasks/{task_id}", json={"status": "exploded"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "status"


async def test_list_tasks_filters_and_pages(api_client):
    ids = []
    for index in range(7):
        tags = ["even"] if index % 2 == 0 else ["odd"]
        response = await api_client.post(f"{API}/tasks", json=task_body(tags=tags))
        ids.append(response.json()["id"])
    await api_client.patch(f"{API}/tasks/{ids[0]}", json={"status": "cancelled"})

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api_client.get(f"{API}/tasks", params=params)).json()
        assert len(page["items"]) <= 3
        seen += [task["id"] for task in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert len(set(seen)) == len(seen)

    even = (await api_client.get(f"{API}/tasks", params={"tag": "even"})).json()["items"]
    assert sorted(task["id"] for task in even) == sorted(ids[0::2])
    cancelled = (await api_client.get(f"{API}/tasks", params={"status": "cancelled"})).json()
    assert [task["id"] for task in cancelled["items"]] == [ids[0]]
