"""`/api/v1/markers` through the real app, on SQLite and Postgres: approving, rolling back,
moving a label, starting and stopping an experiment each leave a marker, listed newest first
and filtered by agent, kind and time; markers are spans too."""

from __future__ import annotations

import time

import pytest

API = "/api/v1"


async def register(client, agent="planner", content="v", *, status="candidate"):
    response = await client.post(
        f"{API}/prompts", json={"agent": agent, "content": content, "status": status}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def markers(client, **params):
    response = await client.get(f"{API}/markers", params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_every_change_leaves_a_marker(api_client):
    assert (await markers(api_client)) == {"items": [], "next_cursor": None}
    v1 = await register(api_client, content="one")
    v2 = await register(api_client, content="two")
    assert (await markers(api_client))["items"] == []  # registering a version is not a change

    await api_client.post(f"{API}/prompts/{v1['id']}/approve")
    await api_client.put(f"{API}/agents/planner/labels/beta", json={"prompt_id": v2["id"]})
    started = await api_client.post(
        f"{API}/experiments",
        json={
            "agent": "planner",
            "variants": [
                {"prompt_id": v1["id"], "weight": 0.5},
                {"prompt_id": v2["id"], "weight": 0.5},
            ],
        },
    )
    experiment_id = started.json()["id"]
    await api_client.post(
        f"{API}/experiments/{experiment_id}/stop", json={"winner": v2["id"], "approve": True}
    )
    await api_client.post(f"{API}/prompts/{v1['id']}/approve")  # a rollback

    listed = await markers(api_client, agent="planner")
    kinds = [item["kind"] for item in listed["items"]]
    assert kinds == [
        "prompt.rolled_back",
        "experiment.stopped",
        "prompt.promoted",
        "experiment.started",
        "prompt.label_moved",
        "prompt.promoted",
    ]
    times = [item["time_unix_nano"] for item in listed["items"]]
    assert times == sorted(times, reverse=True)
    for item in listed["items"]:
        assert item["agent"] == "planner"
        assert item["id"] and item["trace_id"] and item["time"].endswith("Z")
        assert item["attributes"]["evolution.marker.kind"] == item["kind"]

    by_kind = {item["kind"]: item for item in reversed(listed["items"])}  # newest wins
    first_promotion = listed["items"][-1]
    assert first_promotion["before"] is None
    assert first_promotion["after"]["prompt_id"] == v1["id"]
    assert by_kind["prompt.promoted"]["before"]["prompt_id"] == v1["id"]
    assert by_kind["prompt.promoted"]["after"]["prompt_id"] == v2["id"]
    assert by_kind["prompt.rolled_back"]["before"]["prompt_id"] == v2["id"]
    assert by_kind["prompt.label_moved"]["after"]["label"] == "beta"
    assert by_kind["experiment.started"]["after"]["experiment_id"] == experiment_id
    assert by_kind["experiment.stopped"]["after"] == {"status": "completed", "winner": v2["id"]}

    # Markers are spans: the timeline reads them like any other.
    span = await api_client.get(f"{API}/spans/{first_promotion['id']}")
    assert span.status_code == 200
    assert span.json()["name"] == "evolution.marker"


async def test_filters_and_pages(api_client):
    planner = await register(api_client, content="p")
    critic = await register(api_client, agent="critic", content="c")
    await api_client.post(f"{API}/prompts/{planner['id']}/approve")
    middle = time.time_ns()
    await api_client.put(f"{API}/agents/planner/labels/beta", json={"prompt_id": planner["id"]})
    await api_client.post(f"{API}/prompts/{critic['id']}/approve")

    assert [m["agent"] for m in (await markers(api_client))["items"]] == [
        "critic",
        "planner",
        "planner",
    ]
    assert [m["kind"] for m in (await markers(api_client, agent="critic"))["items"]] == [
        "prompt.promoted"
    ]
    promoted = await markers(api_client, kind="prompt.promoted")
    assert [m["agent"] for m in promoted["items"]] == ["critic", "planner"]
    assert (await markers(api_client, kind="experiment.started"))["items"] == []
    after = await markers(api_client, start_after=middle)
    assert [m["kind"] for m in after["items"]] == ["prompt.promoted", "prompt.label_moved"]
    before = await markers(api_client, start_before=middle)
    assert [m["agent"] for m in before["items"]] == ["planner"]
    window = await markers(api_client, agent="planner", start_after=middle, start_before=2**62)
    assert [m["kind"] for m in window["items"]] == ["prompt.label_moved"]
    assert (await markers(api_client, agent="nobody"))["items"] == []

    first = await markers(api_client, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await markers(api_client, limit=2, cursor=first["next_cursor"])
    assert [m["kind"] for m in rest["items"]] == ["prompt.promoted"]
    assert rest["next_cursor"] is None


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1001}, {"start_after": -1}, {"kind": ""}, {"cursor": "x" * 1001}],
)
async def test_bad_parameters_are_422(api_client, params):
    response = await api_client.get(f"{API}/markers", params=params)
    assert response.status_code == 422
    assert response.json()["type"] == "invalid_input"


async def test_markers_need_a_key_when_keys_are_set(make_client):
    async with make_client(api_keys="writer-key,reader-key:ro") as client:
        assert (await client.get(f"{API}/markers")).status_code == 401
        read = await client.get(f"{API}/markers", headers={"Authorization": "Bearer reader-key"})
        assert read.status_code == 200
