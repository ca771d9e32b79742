"""`/api/v1/stats/{agent}` through the real app, on SQLite and Postgres."""

from __future__ import annotations

import pytest
from factories import reward_body, span_dict

API = "/api/v1"


async def test_agent_stats(api_client):
    t0 = 1_700_000_000_000_000_000
    agent = {"gen_ai.agent.name": "solver"}
    llm = {
        **agent,
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 100,
        "gen_ai.usage.output_tokens": 20,
    }
    runs = [
        span_dict(attributes=agent, start_time=t0, end_time=t0 + 10_000_000),
        span_dict(attributes=agent, start_time=t0 + 1, end_time=t0 + 30_000_000),
        span_dict(
            attributes=agent, start_time=t0 + 2, end_time=t0 + 20_000_000, status_code="error"
        ),
    ]
    child = span_dict(
        trace_id=runs[0]["trace_id"],
        parent_span_id=runs[0]["span_id"],
        attributes=llm,
        start_time=t0 + 5,
        end_time=t0 + 6,
    )
    other = span_dict(attributes={"gen_ai.agent.name": "other"}, start_time=t0)
    posted = await api_client.post(f"{API}/spans", json={"spans": [*runs, child, other]})
    assert posted.status_code == 200
    await api_client.post(f"{API}/rewards", json=reward_body(1.0, span_id=runs[0]["span_id"]))
    await api_client.post(f"{API}/rewards", json=reward_body(0.0, span_id=runs[1]["span_id"]))

    response = await api_client.get(f"{API}/stats/solver")
    assert response.status_code == 200
    stats = response.json()
    assert stats["runs"] == 3
    assert stats["success_rate"] == 2 / 3
    assert stats["latency_ms"]["p50"] == pytest.approx(20.0, abs=0.01)
    assert stats["tokens"] == {"input": 100, "output": 20}
    assert stats["reward"]["count"] == 2
    assert stats["reward"]["mean"] == 0.5

    windowed = (await api_client.get(f"{API}/stats/solver", params={"start_after": t0 + 1})).json()
    assert windowed["runs"] == 2


async def test_unknown_agent_has_empty_stats(api_client):
    response = await api_client.get(f"{API}/stats/nobody")
    assert response.status_code == 200
    assert response.json()["runs"] == 0
