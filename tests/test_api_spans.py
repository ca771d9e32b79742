"""`/api/v1/spans` through the real app, on SQLite and Postgres."""

from __future__ import annotations

import orjson
from factories import span_batch, span_dict, trace_id

API = "/api/v1"


async def _all_spans(client, **params):
    items, cursor = [], None
    while True:
        query = {**params, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(f"{API}/spans", params=query)).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


async def test_batch_posted_twice_is_stored_once(api_client):
    batch = span_batch(50)
    first = await api_client.post(f"{API}/spans", json={"spans": batch})
    assert first.status_code == 200
    assert first.json() == {"accepted": 50, "duplicates": 0}

    again = await api_client.post(f"{API}/spans/batch", json={"spans": batch})
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 50}

    stored = await _all_spans(api_client, trace_id=batch[0]["trace_id"])
    assert sorted(span["span_id"] for span in stored) == sorted(s["span_id"] for s in batch)


async def test_one_span_object_and_generated_ids(api_client):
    response = await api_client.post(f"{API}/spans", json={"name": "bare"})
    assert response.status_code == 200
    answer = response.json()
    assert answer["accepted"] == 1
    assert len(answer["trace_id"]) == 32 and len(answer["span_id"]) == 16

    span = await api_client.get(
        f"{API}/spans/{answer['span_id']}", params={"trace_id": answer["trace_id"]}
    )
    assert span.status_code == 200
    assert span.json()["name"] == "bare"
    # Without a task id the span's task is derived from its trace (DESIGN §2).
    assert span.json()["task_id"]


async def test_bare_json_array_is_a_batch(api_client):
    batch = span_batch(3)
    response = await api_client.post(f"{API}/spans", json=batch)
    assert response.status_code == 200
    assert response.json()["accepted"] == 3


async def test_spans_land_in_their_task_and_execution_in_order(api_client):
    task = (await api_client.post(f"{API}/tasks", json={"id": "t-order"})).json()
    execution = (await api_client.post(f"{API}/tasks/{task['id']}/executions")).json()
    batch = span_batch(5, task_id=task["id"], execution_id=execution["id"])
    assert (await api_client.post(f"{API}/spans", json={"spans": batch})).status_code == 200

    by_task = await _all_spans(api_client, task_id=task["id"])
    assert [span["span_id"] for span in by_task] == [span["span_id"] for span in batch]
    sequences = [span["sequence"] for span in by_task]
    assert sequences == sorted(sequences)
    by_execution = await _all_spans(api_client, execution_id=execution["id"])
    assert len(by_execution) == 5


async def test_filters(api_client):
    trace = trace_id()
    t0 = 1_700_000_000_000_000_000
    spans = [
        span_dict(trace_id=trace, name="chat", attributes={"user.id": "u1", "n": 3}, start_time=t0),
        span_dict(trace_id=trace, name="tool", status_code="error", tags=["slow"], start_time=t0),
        span_dict(trace_id=trace, name="chat", attributes={"user.id": "u2"}, start_time=t0 + 10),
    ]
    assert (await api_client.post(f"{API}/spans", json={"spans": spans})).status_code == 200

    async def names(**params):
        return [span["name"] for span in await _all_spans(api_client, trace_id=trace, **params)]

    assert await names(name="chat") == ["chat", "chat"]
    assert await names(status="error") == ["tool"]
    assert await names(tag="slow") == ["tool"]
    assert len(await _all_spans(api_client, attribute="user.id:u1")) == 1
    # An attribute that is not indexed still filters; numbers compare as text.
    assert await names(attribute="n:3") == ["chat"]
    assert await names(attribute=["user.id:u2", "n:3"]) == []
    assert len(await names(start_after=t0 + 1)) == 1
    assert len(await names(start_before=t0 + 1)) == 2


async def test_pagination_visits_every_span_once(api_client):
    batch = span_batch(25)
    await api_client.post(f"{API}/spans", json={"spans": batch})
    seen, cursor, pages = [], None, 0
    while True:
        params = {"trace_id": batch[0]["trace_id"], "limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = (await api_client.get(f"{API}/spans", params=params)).json()
        seen += [span["span_id"] for span in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 3
    assert sorted(seen) == sorted(span["span_id"] for span in batch)


async def test_tags(api_client):
    span = span_dict(tags=["a"])
    await api_client.post(f"{API}/spans", json=span)
    response = await api_client.post(
        f"{API}/spans/{span['span_id']}/tags",
        params={"trace_id": span["trace_id"]},
        json={"tags": ["b", "c"]},
    )
    assert response.status_code == 200
    assert set(response.json()["tags"]) == {"a", "b", "c"}
    tagged = await _all_spans(api_client, tag="c")
    assert [s["span_id"] for s in tagged] == [span["span_id"]]

    missing = await api_client.post(f"{API}/spans/{'e' * 16}/tags", json={"tags": ["x"]})
    assert missing.status_code == 404


async def test_get_span_errors(api_client):
    assert (await api_client.get(f"{API}/spans/{'a' * 16}")).status_code == 404
    assert (await api_client.get(f"{API}/spans/not-hex")).status_code in (404, 422)
    # The same span id in two traces: ambiguous without trace_id.
    shared = "ab" * 8
    await api_client.post(
        f"{API}/spans", json={"spans": [span_dict(span_id=shared), span_dict(span_id=shared)]}
    )
    ambiguous = await api_client.get(f"{API}/spans/{shared}")
    assert ambiguous.status_code == 422
    assert ambiguous.json()["field"] == "trace_id"


async def test_span_rewards_route(api_client):
    span = span_dict()
    await api_client.post(f"{API}/spans", json=span)
    reward = {"name": "q", "value": 0.5, "span_id": span["span_id"]}
    assert (await api_client.post(f"{API}/rewards", json=reward)).status_code == 201
    response = await api_client.get(f"{API}/spans/{span['span_id']}/rewards")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["value"] for item in items] == [0.5]


async def test_body_over_the_cap_is_413(make_client):
    async with make_client(max_body_bytes=4096) as client:
        small = await client.post(f"{API}/spans", json={"spans": span_batch(2)})
        assert small.status_code == 200
        big = orjson.dumps({"spans": span_batch(100)})
        response = await client.post(
            f"{API}/spans", content=big, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413

        async def chunks():
            for index in range(0, len(big), 1000):
                yield big[index : index + 1000]

        # No Content-Length: the cap is enforced while the body streams in.
        streamed = await client.post(
            f"{API}/spans", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        other_route = await client.post(
            f"{API}/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
        assert other_route.status_code == 413


async def test_wrong_content_type_is_415(api_client):
    response = await api_client.post(
        f"{API}/spans", content=b"\x0a\x00", headers={"content-type": "application/x-protobuf"}
    )
    assert response.status_code == 415
