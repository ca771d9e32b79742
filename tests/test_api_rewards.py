"""`/api/v1/rewards` through the real app, on SQLite and Postgres: rewards that arrive before
their spans, linking, tags, summaries, pagination."""

from __future__ import annotations

from factories import reward_body, span_batch, span_dict, trace_id

API = "/api/v1"


async def test_reward_before_its_span_resolves_when_the_span_arrives(api_client):
    span = span_dict()
    posted = await api_client.post(
        f"{API}/rewards", json=reward_body(0.75, id="r-early", span_id=span["span_id"])
    )
    assert posted.status_code == 201
    pending = posted.json()
    assert pending["resolved"] is False
    assert pending["span_ids"] == []
    waiting = await api_client.get(f"{API}/rewards", params={"resolved": "false"})
    assert [item["id"] for item in waiting.json()["items"]] == ["r-early"]

    assert (await api_client.post(f"{API}/spans", json=span)).status_code == 200

    resolved = (await api_client.get(f"{API}/rewards/r-early")).json()
    assert resolved["resolved"] is True
    assert resolved["span_ids"] == [span["span_id"]]
    assert resolved["value"] == 0.75
    done = await api_client.get(f"{API}/rewards", params={"resolved": "true"})
    assert [item["id"] for item in done.json()["items"]] == ["r-early"]
    on_span = await api_client.get(f"{API}/spans/{span['span_id']}/rewards")
    assert [item["id"] for item in on_span.json()["items"]] == ["r-early"]


async def test_reward_by_link_selectors_waits_for_matching_spans(api_client):
    reward = reward_body(1.0, links={"gen_ai.conversation.id": "conv-9"})
    created = (await api_client.post(f"{API}/rewards", json=reward)).json()
    assert created["resolved"] is False
    spans = [
        span_dict(attributes={"gen_ai.conversation.id": "conv-9"}),
        span_dict(attributes={"gen_ai.conversation.id": "conv-10"}),
    ]
    await api_client.post(f"{API}/spans", json={"spans": spans})
    resolved = (await api_client.get(f"{API}/rewards/{created['id']}")).json()
    assert resolved["resolved"] is True
    assert resolved["span_ids"] == [spans[0]["span_id"]]


async def test_reward_id_is_idempotent(api_client):
    body = reward_body(0.5, id="r-1", trace_id=trace_id())
    assert (await api_client.post(f"{API}/rewards", json=body)).status_code == 201
    again = await api_client.post(f"{API}/rewards", json=body)
    assert again.status_code == 200
    assert again.json()["id"] == "r-1"
    listed = (await api_client.get(f"{API}/rewards")).json()["items"]
    assert [item["id"] for item in listed] == ["r-1"]


async def test_a_reward_id_reused_with_other_content_is_409(api_client):
    trace = trace_id()
    first = await api_client.post(f"{API}/rewards", json=reward_body(0.5, id="r-2", trace_id=trace))
    assert first.status_code == 201
    other = await api_client.post(f"{API}/rewards", json=reward_body(0.8, id="r-2", trace_id=trace))
    assert other.status_code == 409, other.text
    body = other.json()
    assert body["type"] == "conflict"
    # Both values are named: what is stored and what was sent.
    assert "value: stored 0.5, sent 0.8" in body["detail"]
    assert (await api_client.get(f"{API}/rewards/r-2")).json()["value"] == 0.5


async def test_rewards_by_tag_own_or_span(api_client):
    tagged_span = span_dict(tags=["gold"])
    plain_span = span_dict()
    await api_client.post(f"{API}/spans", json={"spans": [tagged_span, plain_span]})
    on_tagged_span = reward_body(1.0, id="on-span", span_id=tagged_span["span_id"])
    own_tag = reward_body(0.0, id="own", span_id=plain_span["span_id"], tags=["gold"])
    untagged = reward_body(0.5, id="none", span_id=plain_span["span_id"])
    for body in (on_tagged_span, own_tag, untagged):
        assert (await api_client.post(f"{API}/rewards", json=body)).status_code == 201

    async def ids(**params):
        response = await api_client.get(f"{API}/rewards", params={"tag": "gold", **params})
        assert response.status_code == 200
        return sorted(item["id"] for item in response.json()["items"])

    assert await ids() == ["on-span", "own"]
    assert await ids(tag_scope="any") == ["on-span", "own"]
    assert await ids(tag_scope="reward") == ["own"]
    assert await ids(tag_scope="span") == ["on-span"]


async def test_rewards_by_target_and_name(api_client):
    batch = span_batch(3)
    await api_client.post(f"{API}/spans", json={"spans": batch})
    trace = batch[0]["trace_id"]
    await api_client.post(f"{API}/rewards", json=reward_body(1, name="a", trace_id=trace))
    await api_client.post(
        f"{API}/rewards", json=reward_body(2, name="b", span_id=batch[2]["span_id"])
    )
    await api_client.post(f"{API}/rewards", json=reward_body(3, name="a", trace_id=trace_id()))

    async def values(**params):
        items = (await api_client.get(f"{API}/rewards", params=params)).json()["items"]
        return sorted(item["value"] for item in items)

    assert await values(name="a") == [1, 3]
    assert await values(trace_id=trace) == [1, 2]
    assert await values(span_id=batch[2]["span_id"]) == [2]
    task_id = (await api_client.get(f"{API}/spans/{batch[0]['span_id']}")).json()["task_id"]
    assert await values(task_id=task_id) == [1, 2]


async def test_summary_groups(api_client):
    trace = trace_id()
    spans = [
        span_dict(trace_id=trace, attributes={"gen_ai.agent.name": "planner"}, tags=["x"]),
        span_dict(trace_id=trace, attributes={"gen_ai.agent.name": "coder"}),
    ]
    await api_client.post(f"{API}/spans", json={"spans": spans})
    for value in (1.0, 0.0, 0.5):
        await api_client.post(
            f"{API}/rewards", json=reward_body(value, name="q", span_id=spans[0]["span_id"])
        )
    await api_client.post(
        f"{API}/rewards", json=reward_body(1.0, name="speed", span_id=spans[1]["span_id"])
    )

    by_name = await api_client.get(f"{API}/rewards/summary", params={"group_by": "name"})
    assert by_name.status_code == 200
    groups = {group["key"]: group for group in by_name.json()["groups"]}
    assert groups["q"]["count"] == 3
    assert groups["q"]["mean"] == 0.5
    low, high = groups["q"]["ci95"]
    assert low < 0.5 < high
    assert groups["speed"]["count"] == 1

    by_agent = (await api_client.get(f"{API}/rewards/summary?group_by=agent")).json()["groups"]
    assert {group["key"]: group["count"] for group in by_agent} == {"coder": 1, "planner": 3}

    by_tag = (await api_client.get(f"{API}/rewards/summary?group_by=tag")).json()["groups"]
    assert {group["key"]: group["count"] for group in by_tag} == {"x": 3}
    # A tag added to a span later counts for the rewards already linked to it.
    added = await api_client.post(f"{API}/spans/{spans[1]['span_id']}/tags", json={"tags": ["y"]})
    assert added.status_code == 200
    by_tag = (await api_client.get(f"{API}/rewards/summary?group_by=tag")).json()["groups"]
    assert {group["key"]: group["count"] for group in by_tag} == {"x": 3, "y": 1}

    filtered = await api_client.get(
        f"{API}/rewards/summary", params={"group_by": "name", "name": "speed"}
    )
    assert [group["key"] for group in filtered.json()["groups"]] == ["speed"]


async def test_summary_by_execution_config(api_client):
    task = (await api_client.post(f"{API}/tasks", json={"id": "cfg-task"})).json()
    for prompt, value in (("v1", 0.2), ("v2", 0.9)):
        execution = (
            await api_client.post(
                f"{API}/tasks/{task['id']}/executions", json={"config": {"prompt": prompt}}
            )
        ).json()
        await api_client.post(
            f"{API}/rewards", json=reward_body(value, execution_id=execution["id"])
        )
    response = await api_client.get(f"{API}/rewards/summary?group_by=config:prompt")
    assert response.status_code == 200
    means = {group["key"]: group["mean"] for group in response.json()["groups"]}
    assert means == {"v1": 0.2, "v2": 0.9}


async def test_pagination(api_client):
    trace = trace_id()
    for index in range(12):
        await api_client.post(f"{API}/rewards", json=reward_body(index, trace_id=trace))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = (await api_client.get(f"{API}/rewards", params=params)).json()
        seen += [item["value"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert sorted(seen) == list(range(12))


async def test_unknown_reward_is_404(api_client):
    assert (await api_client.get(f"{API}/rewards/nope")).status_code == 404


async def test_posted_reward_is_answered_as_it_reads_back(api_client):
    span = span_dict(attributes={"gen_ai.conversation.id": "conv-3"}, tags=["gold"])
    await api_client.post(f"{API}/spans", json=span)
    for body in (
        reward_body(0.5, id="r-now", span_id=span["span_id"], tags=["a"], feedback="ok"),
        reward_body(1.0, id="r-later", span_id=span_dict()["span_id"]),
        reward_body(0.2, id="r-link", links={"gen_ai.conversation.id": "conv-3"}),
    ):
        posted = await api_client.post(f"{API}/rewards", json=body)
        assert posted.status_code == 201
        assert posted.json() == (await api_client.get(f"{API}/rewards/{body['id']}")).json()
        again = await api_client.post(f"{API}/rewards", json=body)
        assert (again.status_code, again.json()) == (200, posted.json())
