"""OTLP bodies decoded in a worker process (`OtlpDecoder`): the same rows as on the event loop,
errors that still say what was wrong, a worker that dies costing no request, and a body that
finds the writer idle decoded on the loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from evolution_store import EvolutionStore, InvalidInput, RewardIn, otlp_decoder
from evolution_store.otlp_decoder import OtlpDecoder, PreparedRequest
from evolution_store.writer import WriteContext


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
async def worker_decoder(sqlite_store: EvolutionStore) -> AsyncIterator[OtlpDecoder]:
    decoder = OtlpDecoder(sqlite_store, workers=1)
    decoder.start()
    try:
        yield decoder
    finally:
        await decoder.close()


@contextlib.asynccontextmanager
async def writer_busy(store: EvolutionStore) -> AsyncIterator[None]:
    """Hold the writer inside a transaction: bodies decoded meanwhile go to the workers (an
    idle writer has them decoded on the loop)."""
    started, release = asyncio.Event(), asyncio.Event()

    async def hold(conn: object, ctx: WriteContext) -> None:
        started.set()
        await release.wait()

    held = asyncio.create_task(store.writer.submit(hold))
    await started.wait()
    try:
        yield
    finally:
        release.set()
        await held


def rows_of(prepared: PreparedRequest) -> list[tuple]:
    return [
        (
            span.values,
            span.tags,
            span.owner_ids,
            span.indexed_values,
            span.index_digests,
            span.record.trace_id,
            span.record.span_id,
            span.record.parent_span_id,
            span.record.start_time,
            span.record.end_time,
            span.record.status_code,
        )
        for span in prepared.spans
    ]


async def test_a_worker_prepares_the_rows_the_event_loop_would(
    sqlite_store: EvolutionStore, worker_decoder: OtlpDecoder
) -> None:
    body = export_body()
    here = await OtlpDecoder(sqlite_store).decode(body, json=False)
    async with writer_busy(sqlite_store):
        there = await worker_decoder.decode(body, json=False)
    assert len(there.spans) == 2
    assert rows_of(there) == rows_of(here)
    assert there.decoded.rewards == here.decoded.rewards
    assert [reward.name for reward in there.decoded.rewards] == ["helpful"]
    assert (there.decoded.rejected, there.decoded.errors) == (0, [])
    # What the writer already has as JSON is not shipped back a second time.
    assert all(span.record.attributes == {} for span in there.spans)


async def test_an_undecodable_body_is_invalid_input_from_a_worker(
    sqlite_store: EvolutionStore, worker_decoder: OtlpDecoder
) -> None:
    async with writer_busy(sqlite_store):
        with pytest.raises(InvalidInput, match="ExportTraceServiceRequest"):
            await worker_decoder.decode(b"\xff\xff not protobuf", json=False)
        with pytest.raises(InvalidInput):
            await worker_decoder.decode(b"{not json", json=True)


async def test_a_body_that_comes_alone_is_decoded_on_the_loop(
    sqlite_store: EvolutionStore, worker_decoder: OtlpDecoder
) -> None:
    body = export_body()
    # Decoded here, the records keep their attribute dicts; a worker sends back only the JSON.
    alone = await worker_decoder.decode(body, json=False)
    assert all(span.record.attributes for span in alone.spans)
    async with writer_busy(sqlite_store):
        meanwhile = await worker_decoder.decode(body, json=False)
    assert all(span.record.attributes == {} for span in meanwhile.spans)
    assert rows_of(meanwhile) == rows_of(alone)
    # Another request in flight (being read, decoded, written or answered): a worker decodes.
    with worker_decoder.intake.hold(), worker_decoder.intake.hold():
        beside = await worker_decoder.decode(body, json=False)
    assert all(span.record.attributes == {} for span in beside.spans)
    with worker_decoder.intake.hold():  # only this one
        assert (await worker_decoder.decode(body, json=False)).spans[0].record.attributes


async def test_a_large_body_goes_to_a_worker_even_alone(
    worker_decoder: OtlpDecoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = export_body()
    monkeypatch.setattr(otlp_decoder, "ALONE_MAX_BYTES", len(body) - 1)
    prepared = await worker_decoder.decode(body, json=False)
    assert all(span.record.attributes == {} for span in prepared.spans)  # a worker's rows


# The pool learns of a dead worker from a thread of its own: right after the kill, requests find
# out from their futures; half a second later, already when they submit.
@pytest.mark.parametrize("pause", [0.0, 0.5])
async def test_a_killed_worker_costs_no_request(
    sqlite_store: EvolutionStore,
    worker_decoder: OtlpDecoder,
    caplog: pytest.LogCaptureFixture,
    pause: float,
) -> None:
    async with writer_busy(sqlite_store):  # bodies go to the worker
        await _decode_through_a_killed_worker(worker_decoder, pause)
    assert caplog.text.count("decode worker died") == 1  # once, by whoever found it
    assert len(_children()) == 1  # a new pool, with a new worker


async def _decode_through_a_killed_worker(worker_decoder: OtlpDecoder, pause: float) -> None:
    body = export_body()
    assert len((await worker_decoder.decode(body, json=False)).spans) == 2
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
    decoded = await asyncio.gather(*(worker_decoder.decode(body, json=False) for _ in range(6)))
    assert [len(prepared.spans) for prepared in decoded] == [2] * 6
    assert len((await worker_decoder.decode(body, json=False)).spans) == 2


async def test_spans_prepared_before_a_selector_key_existed_still_link(
    sqlite_store: EvolutionStore, worker_decoder: OtlpDecoder
) -> None:
    # Prepared (in the worker) while `my.key` is not indexed; a reward then selects on it. The
    # writer must re-index those spans from their stored attributes and link the reward.
    async with writer_busy(sqlite_store):
        prepared = await worker_decoder.decode(export_body(), json=False)
    assert all("my.key" not in span.indexed_values for span in prepared.spans)
    reward, _ = await sqlite_store.add_reward(RewardIn(value=1.0, links={"my.key": "v1"}))
    assert reward["resolved"] is False
    await sqlite_store.ingest_prepared(prepared.spans, prepared.decoded.rewards)
    stored = await sqlite_store.get_reward(reward["id"])
    assert stored["resolved"] is True
    agent = next(span for span in prepared.spans if span.record.name == "agent")
    assert stored["span_ids"] == [agent.record.span_id]


async def test_a_closed_decoder_decodes_in_process(worker_decoder: OtlpDecoder) -> None:
    await worker_decoder.close()
    assert len((await worker_decoder.decode(export_body(), json=False)).spans) == 2
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
