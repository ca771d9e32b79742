"""`/api/v1/prompts` through the real app, on SQLite and Postgres: registering versions
(idempotent, Jinja2-checked), listing, lineage and diffs, lifecycle moves and their 409s,
approval and rollback, concurrent approvals, and API keys on every write."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

API = "/api/v1"
KEYS = "writer-key,reader-key:ro"
WRITE = {"Authorization": "Bearer writer-key"}
READ = {"Authorization": "Bearer reader-key"}


async def register(client, agent="planner", content="You are {{ role }}.", **fields):
    response = await client.post(
        f"{API}/prompts", json={"agent": agent, "content": content, **fields}
    )
    assert response.status_code == 201, response.text
    return response.json()


async def candidate(client, agent="planner", content="v", **fields):
    return await register(client, agent, content, status="candidate", **fields)


async def test_register_numbers_versions_and_is_idempotent(api_client):
    first = await register(api_client, note="first draft", fitness={"success": 0.5, "n": 10})
    assert first["version"] == 1
    assert first["status"] == "draft"
    assert first["labels"] == ["latest"]
    assert first["created_by"] == "human"
    assert first["fitness"] == {"success": 0.5, "n": 10}
    assert first["approved_by"] is None and first["approved_at"] is None
    assert first["id"] and first["created_at"]

    again = await api_client.post(
        f"{API}/prompts", json={"agent": "planner", "content": "You are {{ role }}."}
    )
    assert again.status_code == 200
    assert again.json()["id"] == first["id"]
    assert again.json()["version"] == 1

    child = await register(
        api_client, content="You are {{ role }}. Be brief.", parent_ids=[first["id"]]
    )
    assert child["version"] == 2
    assert child["parent_ids"] == [first["id"]]
    assert child["labels"] == ["latest"]
    assert (await api_client.get(f"{API}/prompts/{first['id']}")).json()["labels"] == []

    # The same content under other parents is another version; another agent counts from 1.
    assert (await register(api_client, parent_ids=[child["id"]]))["version"] == 3
    assert (await register(api_client, agent="critic"))["version"] == 1

    fetched = await api_client.get(f"{API}/prompts/{child['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == {**child, "labels": []}  # `latest` moved on to version 3


async def test_a_template_syntax_error_is_422_naming_the_line(api_client):
    response = await api_client.post(
        f"{API}/prompts",
        json={"agent": "planner", "content": "Hello {{ name }}\nsecond line\n{{ oops }\nfour"},
    )
    assert response.status_code == 422
    body = response.json()
    assert body["type"] == "invalid_input"
    assert body["field"] == "content"
    assert "line 3" in body["detail"]
    assert (await api_client.get(f"{API}/prompts")).json()["items"] == []


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"parent_ids": ["nope"]}, "parent_ids"),
        ({"status": "production"}, "status"),
        ({"labels": ["production"]}, "labels"),
        ({"labels": ["no spaces"]}, "labels"),
        ({"created_by": "robot"}, "created_by"),
        ({"content": ""}, "content"),
        ({"agent": ""}, "agent"),
        ({"unknown": 1}, "unknown"),
    ],
)
async def test_bad_prompts_are_422_and_store_nothing(api_client, fields, field):
    body = {"agent": "planner", "content": "hi", **fields}
    response = await api_client.post(f"{API}/prompts", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert (await api_client.get(f"{API}/prompts")).json()["items"] == []


async def test_list_filters_and_pages(api_client):
    one = await register(api_client, content="one", created_by="apo", labels=["beta"])
    two = await candidate(api_client, content="two")
    other = await register(api_client, agent="critic", content="three")

    async def ids(**params):
        response = await api_client.get(f"{API}/prompts", params=params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["items"]]

    assert await ids() == [other["id"], two["id"], one["id"]]
    assert await ids(agent="planner") == [two["id"], one["id"]]
    assert await ids(status="candidate") == [two["id"]]
    assert await ids(label="beta") == [one["id"]]
    assert await ids(label="latest", agent="planner") == [two["id"]]
    assert await ids(created_by="apo") == [one["id"]]
    assert await ids(agent="nobody") == []

    first = (await api_client.get(f"{API}/prompts", params={"limit": 2})).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await api_client.get(
        f"{API}/prompts", params={"limit": 2, "cursor": first["next_cursor"]}
    )
    assert [item["id"] for item in rest.json()["items"]] == [one["id"]]
    assert rest.json()["next_cursor"] is None

    bad = await api_client.get(f"{API}/prompts", params={"status": "live"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"


async def test_lineage_and_diff(api_client):
    root = await register(api_client, content="line a\nline b\n")
    child = await register(api_client, content="line a\nline c\n", parent_ids=[root["id"]])
    grandchild = await register(api_client, content="line a\nline d\n", parent_ids=[child["id"]])

    lineage = (await api_client.get(f"{API}/prompts/{child['id']}/lineage")).json()
    assert lineage["prompt"]["id"] == child["id"]
    assert [p["id"] for p in lineage["ancestors"]] == [root["id"]]
    assert [p["id"] for p in lineage["descendants"]] == [grandchild["id"]]
    assert {"status", "fitness"} <= set(lineage["ancestors"][0])

    top = (await api_client.get(f"{API}/prompts/{grandchild['id']}/lineage")).json()
    assert [p["id"] for p in top["ancestors"]] == [child["id"], root["id"]]
    assert top["descendants"] == []

    diff = await api_client.get(f"{API}/prompts/{child['id']}/diff", params={"against": root["id"]})
    assert diff.status_code == 200
    body = diff.json()
    assert body["from"] == root["id"] and body["to"] == child["id"]
    assert "-line b" in body["diff"] and "+line c" in body["diff"]
    same = await api_client.get(f"{API}/prompts/{root['id']}/diff", params={"against": root["id"]})
    assert same.json()["diff"] == ""

    missing = await api_client.get(f"{API}/prompts/{root['id']}/diff")
    assert missing.status_code == 422 and missing.json()["field"] == "against"
    unknown = await api_client.get(f"{API}/prompts/{root['id']}/diff", params={"against": "nope"})
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("GET", "/prompts/nope", None),
        ("GET", "/prompts/nope/lineage", None),
        ("GET", "/prompts/nope/diff?against=nope", None),
        ("POST", "/prompts/nope/status", {"status": "archived"}),
        ("POST", "/prompts/nope/approve", None),
    ],
)
async def test_unknown_prompt_is_404(api_client, method, path, body):
    response = await api_client.request(method, API + path, json=body)
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


async def test_lifecycle_moves_and_conflicts(api_client):
    prompt = await register(api_client)
    url = f"{API}/prompts/{prompt['id']}/status"

    skipped = await api_client.post(url, json={"status": "candidate"})
    assert skipped.status_code == 409
    assert skipped.json()["type"] == "conflict"
    assert "experimental, archived" in skipped.json()["detail"]

    moved = await api_client.post(url, json={"status": "experimental", "note": "try it"})
    assert moved.status_code == 200
    assert moved.json()["status"] == "experimental"
    assert moved.json()["note"] == "try it"
    assert (await api_client.post(url, json={"status": "candidate"})).json()[
        "status"
    ] == "candidate"

    # Production is reached only by approval; the 409 says so.
    direct = await api_client.post(url, json={"status": "production"})
    assert direct.status_code == 409
    assert "approve" in direct.json()["detail"]

    back = await api_client.post(url, json={"status": "draft"})
    assert back.status_code == 409
    assert "allowed moves: archived" in back.json()["detail"]

    archived = await api_client.post(url, json={"status": "archived"})
    assert archived.json()["status"] == "archived"
    stuck = await api_client.post(url, json={"status": "candidate"})
    assert stuck.status_code == 409
    assert (await api_client.get(f"{API}/prompts/{prompt['id']}")).json()["status"] == "archived"

    bad = await api_client.post(url, json={"status": "live"})
    assert bad.status_code == 422 and bad.json()["field"] == "status"


async def test_approval_and_rollback(api_client):
    draft = await register(api_client, content="draft")
    refused = await api_client.post(f"{API}/prompts/{draft['id']}/approve")
    assert refused.status_code == 409
    assert "candidate" in refused.json()["detail"]

    v1 = await candidate(api_client, content="one")
    approved = await api_client.post(f"{API}/prompts/{v1['id']}/approve", json={"note": "ship"})
    assert approved.status_code == 200
    body = approved.json()
    assert body["status"] == "production"
    assert "production" in body["labels"]
    assert body["approved_by"] == "anonymous"  # no keys configured
    assert body["approved_at"] and body["note"] == "ship"

    v2 = await candidate(api_client, content="two")
    promoted = (await api_client.post(f"{API}/prompts/{v2['id']}/approve")).json()
    assert promoted["status"] == "production"
    old = (await api_client.get(f"{API}/prompts/{v1['id']}")).json()
    assert old["status"] == "archived"
    assert "production" not in old["labels"]
    resolved = (await api_client.get(f"{API}/agents/planner/prompt")).json()
    assert resolved["id"] == v2["id"]

    # Rollback: approve the archived version again.
    rolled = await api_client.post(f"{API}/prompts/{v1['id']}/approve")
    assert rolled.status_code == 200
    assert rolled.json()["status"] == "production"
    assert (await api_client.get(f"{API}/prompts/{v2['id']}")).json()["status"] == "archived"
    assert (await api_client.get(f"{API}/agents/planner/prompt")).json()["id"] == v1["id"]
    production = (await api_client.get(f"{API}/prompts", params={"status": "production"})).json()
    assert [item["id"] for item in production["items"]] == [v1["id"]]

    markers = (await api_client.get(f"{API}/markers", params={"agent": "planner"})).json()
    kinds = [item["kind"] for item in markers["items"]]
    assert kinds == ["prompt.rolled_back", "prompt.promoted", "prompt.promoted"]
    rollback = markers["items"][0]
    assert rollback["before"] == {"prompt_id": v2["id"], "version": v2["version"]}
    assert rollback["after"]["prompt_id"] == v1["id"]


async def test_concurrent_approvals_leave_one_production_prompt(api_client):
    first = await candidate(api_client, content="first")
    second = await candidate(api_client, content="second")
    answers = await asyncio.gather(
        api_client.post(f"{API}/prompts/{first['id']}/approve"),
        api_client.post(f"{API}/prompts/{second['id']}/approve"),
    )
    assert [answer.status_code for answer in answers] == [200, 200]
    production = (await api_client.get(f"{API}/prompts", params={"status": "production"})).json()
    assert len(production["items"]) == 1
    winner = production["items"][0]["id"]
    loser = second["id"] if winner == first["id"] else first["id"]
    assert (await api_client.get(f"{API}/prompts/{loser}")).json()["status"] == "archived"
    labels = (await api_client.get(f"{API}/agents/planner/labels")).json()["items"]
    assert {item["label"]: item["prompt_id"] for item in labels}["production"] == winner
    assert (await api_client.get(f"{API}/agents/planner/prompt")).json()["id"] == winner


async def test_approved_by_is_a_fingerprint_of_the_key_never_the_key(make_client):
    async with make_client(api_keys=KEYS) as client:
        response = await client.post(
            f"{API}/prompts",
            json={"agent": "planner", "content": "x", "status": "candidate"},
            headers=WRITE,
        )
        prompt_id = response.json()["id"]
        approved = await client.post(f"{API}/prompts/{prompt_id}/approve", headers=WRITE)
        assert approved.status_code == 200
        fingerprint = hashlib.sha256(b"writer-key").hexdigest()[:16]
        assert approved.json()["approved_by"] == fingerprint
        assert "writer-key" not in approved.text
        markers = await client.get(f"{API}/markers", headers=READ)
        assert markers.json()["items"][0]["after"]["approved_by"] == fingerprint
        assert "writer-key" not in markers.text


@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/prompts", {"agent": "planner", "content": "y"}),
        ("POST", "/prompts/{id}/status", {"status": "archived"}),
        ("POST", "/prompts/{id}/approve", {}),
        ("POST", "/prompts/{id}/approve", None),
    ],
)
async def test_read_only_key_cannot_write(make_client, method, path, body):
    async with make_client(api_keys=KEYS) as client:
        created = await client.post(
            f"{API}/prompts",
            json={"agent": "planner", "content": "x", "status": "candidate"},
            headers=WRITE,
        )
        prompt = created.json()
        response = await client.request(
            method, API + path.format(id=prompt["id"]), json=body, headers=READ
        )
        assert response.status_code == 403
        assert response.json()["type"] == "forbidden"
        unchanged = await client.get(f"{API}/prompts/{prompt['id']}", headers=READ)
        assert unchanged.json() == prompt
        listed = await client.get(f"{API}/prompts", headers=READ)
        assert len(listed.json()["items"]) == 1
        assert (await client.get(f"{API}/prompts")).status_code == 401
