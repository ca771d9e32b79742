"""OTLP bodies decoded in a worker process (`OtlpDecodePool`): the same rows as in this
process, errors and partial-success notes that still say what was wrong, a worker that dies
costing no request, and workers that exit with a killed server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from evolution_store import EvolutionStore, InvalidInput, RewardIn
from evolution_store.otlp_decode_pool import OtlpDecodePool, PreparedExport


def export_body(conversation: str = "conv-1") -> bytes:
    """An agent run as the OTel SDK exports it, with a tag, an indexed attribute and a
    `gen_ai.evaluation.result` event (a carried reward)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent-svc"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("decoder-test")
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "planner",
        "gen_ai.conversation.id": conversation,
        "evolution.tags": ["exp-a"],
        "my.key": "v1",
    }
    with tracer.start_as_current_span("agent", attributes=attributes) as root:
        with tracer.start_as_current_span("chat", attributes={"gen_ai.operation.name": "chat"}):
            pass
        root.add_event(
            "gen_ai.evaluation.result",
            {"gen_ai.evaluation.name": "helpful", "gen_ai.evaluation.score.value": 0.75},
        )
    provider.shutdown()
    return encode_spans(exporter.get_finished_spans()).SerializeToString()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[EvolutionStore]:
    # Decoding does not depend on the backend; one is enough.
    store = await EvolutionStore.open(f"sqlite:///{tmp_path / 'decoder.db'}")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def pool() -> AsyncIterator[OtlpDecodePool]:
    pool = OtlpDecodePool(workers=1)
    pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def decode(pool: OtlpDecodePool, body: bytes, *, json: bool = False, **options):
    options.setdefault("in_worker", True)
    return await pool.decode(body, json=json, indexed_keys=DEFAULT_KEYS, **options)


#: the keys a fresh store indexes (its link keys)
DEFAULT_KEYS = frozenset({"gen_ai.conversation.id", "session.id", "gen_ai.response.id", "user.id"})


def rows_of(export: PreparedExport) -> list[tuple]:
    return [span.state() for span in export.batch.spans]


async def test_a_worker_prepares_the_rows_this_process_would(pool: OtlpDecodePool) -> None:
    body = export_body()
    here = await decode(pool, body, in_worker=False)
    there = await decode(pool, body)
    # The worker's own signal: the process that decoded the body.
    assert here.decoded_by == os.getpid()
    assert there.decoded_by in _children()
    assert len(there.batch.spans) == 2
    assert rows_of(there) == rows_of(here)
    assert there.batch.rewards == here.batch.rewards
    assert [reward.name for reward in there.batch.rewards] == ["helpful"]
    assert (there.rejected, there.error_message) == (0, "")


async def test_an_undecodable_body_is_invalid_input_from_a_worker(pool: OtlpDecodePool) -> None:
    with pytest.raises(InvalidInput, match="ExportTraceServiceRequest"):
        await decode(pool, b"\xff\xff not protobuf")
    with pytest.raises(InvalidInput):
        await decode(pool, b"{not json", json=True)


async def test_rejected_spans_and_carrier_notes_come_back_from_a_worker(
    pool: OtlpDecodePool,
) -> None:
    body = orjson.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {"traceId": "0" * 32, "spanId": "1" * 16, "name": "zero"},
                                {
                                    "traceId": "a" * 32,
                                    "spanId": "2" * 16,
                                    "name": "agentlightning.annotation",
                                    "attributes": [
                                        {
                                            "key": "agentlightning.reward.0.value",
                                            "value": {"stringValue": "not a number"},
                                        }
                                    ],
                                },
                            ]
                        }
                    ]
                }
            ]
        }
    )
    export = await decode(pool, body, json=True)
    assert export.decoded_by in _children()
    assert export.rejected == 1
    assert "trace" in export.error_message.lower() and len(export.batch.spans) == 1


# The pool learns of a dead worker from a thread of its own: right after the kill, requests find
# out from their futures; half a second later, already when they submit.
@pytest.mark.parametrize("pause", [0.0, 0.5])
async def test_a_killed_worker_costs_no_request(
    pool: OtlpDecodePool, caplog: pytest.LogCaptureFixture, pause: float
) -> None:
    await _decode_through_a_killed_worker(pool, pause)
    assert caplog.text.count("decode worker died") == 1  # once, by whoever found it
    assert len(_children()) == 1  # a new pool, with a new worker


async def _decode_through_a_killed_worker(pool: OtlpDecodePool, pause: float) -> None:
    body = export_body()
    assert len((await decode(pool, body)).batch.spans) == 2
    workers = _children()
    assert len(workers) == 1
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(pause)
    # The requests that find the pool broken are decoded on the loop; later ones start a new
    # pool. Several at once: some wait for a slot while another discards the broken pool.
    decoded = await asyncio.gather(*(decode(pool, body) for _ in range(6)))
    assert [len(export.batch.spans) for export in decoded] == [2] * 6
    assert len((await decode(pool, body)).batch.spans) == 2


async def test_spans_prepared_before_a_selector_key_existed_still_link(
    sqlite_store: EvolutionStore, pool: OtlpDecodePool
) -> None:
    # Prepared (in the worker) while `my.key` is not indexed; a reward then selects on it. The
    # writer must re-index those spans from their stored attributes and link the reward.
    export = await decode(pool, export_body())
    assert export.decoded_by in _children()
    assert all("my.key" not in span.indexed_values for span in export.batch.spans)
    reward, _ = await sqlite_store.add_reward(RewardIn(value=1.0, links={"my.key": "v1"}))
    assert reward["resolved"] is False
    await sqlite_store.ingest_prepared(export.batch)
    stored = await sqlite_store.get_reward(reward["id"])
    assert stored["resolved"] is True
    agent = next(span for span in export.batch.spans if span.name == "agent")
    assert stored["span_ids"] == [agent.span_id]


async def test_a_closed_pool_decodes_in_process(pool: OtlpDecodePool) -> None:
    await pool.close()
    export = await decode(pool, export_body())
    assert len(export.batch.spans) == 2 and export.decoded_by == os.getpid()
    assert _children() == []


def test_workers_exit_when_the_server_is_killed(live_server) -> None:
    server = live_server()
    server.wait_ready()
    deadline = time.monotonic() + 30
    while not (workers := _children(server.process.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers, server.log()
    server.kill()  # SIGKILL: the server cannot stop them itself
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _children(parent: int | str = "self") -> list[int]:
    """Live child processes of `parent` (this process by default) that are decode workers."""
    found = []
    for task in os.listdir(f"/proc/{parent}/task"):
        with open(f"/proc/{parent}/task/{task}/children") as handle:
            for pid in handle.read().split():
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        if b"spawn_main" in cmdline.read():
                            found.append(int(pid))
                except OSError:
                    continue
    return found
