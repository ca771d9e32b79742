"""`/api/v1/patterns` through the real app, on SQLite and Postgres: the mined rows served in
q-then-effect order with their filters and cursor pages, one pattern with its evidence, and
applying one — the A/B or proposal it becomes, the 409s that say why not, and API keys."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from factories import pattern

API = "/api/v1"
KEYS = "writer-key,reader-key:ro"
WRITE = {"Authorization": "Bearer writer-key"}
READ = {"Authorization": "Bearer reader-key"}
TOOL = {"type": "tool", "key": None, "op": "used", "value": "search"}


async def seed(store) -> dict[str, dict]:
    """Patterns in three contexts, of three kinds, one stale."""
    made = {
        "strong": pattern("config.temperature <= 0.3", q=0.001, difference=0.3),
        "wide": pattern("config.top_p > 0.9", q=0.001, difference=-0.4, kind="failure"),
        "tool": pattern("tool search used", q=0.01, feature=TOOL),
        "task": pattern("model = gpt-4o", task_name="refund", q=0.02, kind="optimization"),
        "overall": pattern("config.retries > 2", agent=None, q=0.03, kind="failure"),
        "billing": pattern("config.temperature <= 0.3", agent="billing", q=0.04),
        "gone": pattern("config.style = terse", agent="billing", q=0.05),
    }
    await store.save_patterns([made["overall"]], scope={"agent": None})
    support = ("strong", "wide", "tool", "task")
    await store.save_patterns([made[key] for key in support], scope={"agent": "support"})
    await store.save_patterns([made["billing"], made["gone"]], scope={"agent": "billing"})
    await store.save_patterns([made["billing"]], scope={"agent": "billing"})  # `gone` is stale
    return made


async def listed(client, **params) -> list[str]:
    response = await client.get(f"{API}/patterns", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


async def test_list_sorts_by_q_then_effect_and_filters(api_client, store):
    made = await seed(store)
    ids = {key: item["id"] for key, item in made.items()}
    order = ["wide", "strong", "tool", "task", "overall", "billing", "gone"]
    assert await listed(api_client) == [ids[key] for key in order]
    assert await listed(api_client, agent="support") == [
        ids[key] for key in ("wide", "strong", "tool", "task")
    ]
    assert await listed(api_client, kind="failure") == [ids["wide"], ids["overall"]]
    assert await listed(api_client, status="stale") == [ids["gone"]]
    assert await listed(api_client, context="overall") == [ids["overall"]]
    assert await listed(api_client, context="agent:billing") == [ids["billing"], ids["gone"]]
    assert await listed(api_client, context="task:refund") == [ids["task"]]
    assert await listed(api_client, max_q=0.01) == [ids["wide"], ids["strong"], ids["tool"]]
    assert await listed(api_client, agent="nobody") == []

    first = (await api_client.get(f"{API}/patterns", params={"limit": 3})).json()
    assert [item["id"] for item in first["items"]] == [ids[key] for key in order[:3]]
    rest = await api_client.get(
        f"{API}/patterns", params={"limit": 10, "cursor": first["next_cursor"]}
    )
    assert [item["id"] for item in rest.json()["items"]] == [ids[key] for key in order[3:]]
    assert rest.json()["next_cursor"] is None


async def test_one_pattern_carries_its_evidence(api_client, store):
    made = await seed(store)
    response = await api_client.get(f"{API}/patterns/{made['strong']['id']}")
    assert response.status_code == 200
    body = response.json()
    for key in ("kind", "context", "condition", "feature", "effect", "evidence", "explanation"):
        assert body[key] == made["strong"][key]
    assert body["status"] == "active" and body["applied"] is None
    assert body["first_seen"] == body["last_seen"] > 0
    assert body["evidence"]["sample_span_ids"]["with"]

    missing = await api_client.get(f"{API}/patterns/0000000000000000")
    assert missing.status_code == 404 and missing.json()["type"] == "not_found"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"context": "somewhere"}, "context"),
        ({"context": "agent:"}, "context"),
        ({"kind": "neutral"}, "kind"),
        ({"status": "done"}, "status"),
        ({"max_q": 2}, "max_q"),
        ({"max_q": "x"}, "max_q"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
async def test_bad_filters_are_422_naming_the_field(api_client, params, field):
    response = await api_client.get(f"{API}/patterns", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field


async def test_apply_makes_a_proposal_once_and_refuses_with_a_reason(api_client, store):
    made = await seed(store)
    strong = made["strong"]["id"]
    response = await api_client.post(f"{API}/patterns/{strong}/apply")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "applied"
    assert body["applied"]["proposal"] == {"change": {"config.temperature": "<= 0.3"}}
    assert body["applied"]["applied_by"] == "anonymous"  # no keys configured
    assert (await api_client.get(f"{API}/patterns/{strong}")).json() == body
    assert await listed(api_client, status="applied") == [strong]
    markers = await api_client.get(f"{API}/markers", params={"kind": "pattern.applied"})
    (marker,) = markers.json()["items"]
    assert marker["agent"] == "support" and marker["after"]["pattern_id"] == strong

    again = await api_client.post(f"{API}/patterns/{strong}/apply")
    assert again.status_code == 409
    assert again.json()["type"] == "conflict" and "already applied" in again.json()["detail"]

    tool = await api_client.post(f"{API}/patterns/{made['tool']['id']}/apply")
    assert tool.status_code == 409
    assert "not a setting the store can change" in tool.json()["detail"]
    stale = await api_client.post(f"{API}/patterns/{made['gone']['id']}/apply")
    assert stale.status_code == 409 and "stale" in stale.json()["detail"]
    unknown = await api_client.post(f"{API}/patterns/0000000000000000/apply")
    assert unknown.status_code == 404


async def test_a_prompt_pattern_becomes_an_ab_experiment(api_client, store):
    async def prompt(content):
        response = await api_client.post(
            f"{API}/prompts", json={"agent": "support", "content": content, "status": "candidate"}
        )
        return response.json()["id"]

    v1, v2 = await prompt("v1"), await prompt("v2")
    assert (await api_client.post(f"{API}/prompts/{v1}/approve")).status_code == 200
    feature = {"type": "prompt", "key": None, "op": "=", "value": v2}
    item = pattern(f"prompt = {v2}", feature=feature)
    await store.save_patterns([item], scope={"agent": "support"})

    applied = (await api_client.post(f"{API}/patterns/{item['id']}/apply")).json()
    experiment_id = applied["applied"]["experiment_id"]
    experiment = (await api_client.get(f"{API}/experiments/{experiment_id}")).json()
    assert [v["prompt_id"] for v in experiment["variants"]] == [v1, v2]
    served = await api_client.get(f"{API}/agents/support/prompt", params={"key": "user-1"})
    assert served.json()["experiment_id"] == experiment_id


async def test_concurrent_applies_apply_once(api_client, store):
    made = await seed(store)
    path = f"{API}/patterns/{made['strong']['id']}/apply"
    answers = await asyncio.gather(*(api_client.post(path) for _ in range(5)))
    assert sorted(answer.status_code for answer in answers) == [200, 409, 409, 409, 409]
    markers = await api_client.get(f"{API}/markers", params={"kind": "pattern.applied"})
    assert len(markers.json()["items"]) == 1


async def test_apply_needs_a_write_key_and_records_its_fingerprint(make_client, store):
    made = await seed(store)
    path = f"{API}/patterns/{made['strong']['id']}/apply"
    async with make_client(api_keys=KEYS) as client:
        assert (await client.get(f"{API}/patterns", headers=READ)).status_code == 200
        assert (await client.get(f"{API}/patterns")).status_code == 401
        assert (await client.post(path, headers=READ)).status_code == 403
        applied = await client.post(path, headers=WRITE)
        assert applied.status_code == 200
        fingerprint = hashlib.sha256(b"writer-key").hexdigest()[:16]
        assert applied.json()["applied"]["applied_by"] == fingerprint
