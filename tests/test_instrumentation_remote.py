"""Remote mode end to end against a real `evolution-store serve`: OTLP (http/protobuf, grpc and
http/json) for spans, REST for tasks and rewards, read back with the clients."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace

import instrumentation
from instrumentation import (
    AsyncEvolutionClient,
    EvolutionClient,
    EvolutionClientError,
    emit_reward,
    task,
    track_evolution,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_HEADERS"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)


@track_evolution(tags=["toy"])
def agent(q: int) -> int:
    trace.get_current_span().set_attribute("gen_ai.response.id", f"resp-{q}")
    emit_reward(1.0, name="early", tags=["judge"])  # before the span is exported
    return q * 2


@track_evolution(tags=["toy"])
def stream(n: int):
    yield from range(n)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc", "http/json"])
def test_remote_mode_end_to_end(live_server, store_url, protocol):
    server = live_server(store_url, grpc=protocol == "grpc", api_keys="writer")
    endpoint = f"http://{server.grpc_target}" if protocol == "grpc" else server.url
    session = instrumentation.configure(
        endpoint,
        api_url=server.url,
        api_key="writer",
        protocol=protocol,
        service_name="remote-toy",
        set_global=False,
    )
    try:
        pending = emit_reward(0.3, name="late-link", links={"gen_ai.response.id": "resp-5"})
        assert pending["resolved"] is False
        with task("remote", input={"q": 5}, tags=["suite"], config={"prompt": "v1"}) as t:
            assert agent(5) == 10
            assert list(stream(2)) == [0, 1]
            t.reward({"acc": 0.5, "speed": 1.0}, tags=["judge"])
        assert session.force_flush()
    finally:
        session.shutdown()

    with EvolutionClient(server.url, api_key="writer") as client:
        spans = client.list_spans(task_id=t.task_id)["items"]
        assert {s["name"] for s in spans} == {"agent", "stream"}
        assert all(s["execution_id"] == t.execution_id for s in spans)
        agent_span = next(s for s in spans if s["name"] == "agent")
        assert agent_span["resource"]["service.name"] == "remote-toy"
        assert "toy" in agent_span["tags"]
        assert client.get_task(t.task_id)["status"] == "succeeded"
        assert client.get_execution(t.execution_id)["config"] == {"prompt": "v1"}
        rewards = {r["name"]: r for r in client.list_rewards(limit=100)["items"]}
        assert rewards["early"]["span_ids"] == [agent_span["span_id"]]
        assert rewards["late-link"]["span_ids"] == [agent_span["span_id"]]
        assert rewards["reward"]["target"]["execution_id"] == t.execution_id
        judged = client.list_rewards(tag="judge", tag_scope="reward")["items"]
        assert {r["name"] for r in judged} == {"early", "reward"}
        groups = {g["key"]: g for g in client.rewards_summary(group_by="name")["groups"]}
        assert groups["early"]["count"] == 1
        with pytest.raises(EvolutionClientError) as caught:
            EvolutionClient(server.url).get_task(t.task_id)  # no key
        assert caught.value.status == 401

    async def read_async():
        async with AsyncEvolutionClient(server.url, api_key="writer") as client:
            return await client.stats("agent")

    stats = asyncio.run(read_async())
    assert stats["runs"] == 1 and stats["reward"]["count"] >= 1
