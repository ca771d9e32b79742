"""task(): ids stamped on spans, Task/Execution records over REST, status on exit."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import instrumentation
import instrumentation._config as config_module
from instrumentation import task, track_evolution

HEX32 = re.compile(r"^[0-9a-f]{32}$")
OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
)


class Recorder:
    """A fake REST API: remembers requests, answers like the server would."""

    def __init__(self, fail: bool = False):
        self.requests: list[tuple[str, str, dict]] = []
        self.fail = fail

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content) if request.content else {}
        self.requests.append((request.method, request.url.path, body))
        if request.url.path.endswith("/rewards"):
            return httpx.Response(201, json={**body, "resolved": False, "span_ids": []})
        return httpx.Response(201 if request.method == "POST" else 200, json=body)


@pytest.fixture
def provider_and_spans(monkeypatch):
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    return provider, exporter


@pytest.fixture
def local(provider_and_spans):
    provider, exporter = provider_and_spans
    session = instrumentation.configure(
        span_exporter=exporter, tracer_provider=provider, set_global=False
    )

    def spans():
        assert session.force_flush()
        return list(exporter.get_finished_spans())

    yield spans
    session.shutdown()


@pytest.fixture
def remote(provider_and_spans, monkeypatch):
    """Remote mode against a fake REST API; OTLP goes to the in-memory exporter."""
    provider, exporter = provider_and_spans
    recorder = Recorder()
    monkeypatch.setattr(config_module, "build_otlp_exporter", lambda *a, **k: exporter)
    session = instrumentation.configure(
        "http://evo.test",
        tracer_provider=provider,
        set_global=False,
        transport=httpx.MockTransport(recorder),
    )
    recorder.session = session
    recorder.spans = lambda: (session.force_flush(), list(exporter.get_finished_spans()))[1]
    yield recorder
    session.shutdown()


def test_spans_inside_carry_task_and_execution_ids(local):
    @track_evolution
    def agent():
        return 1

    agent()
    with task("demo", input={"q": 1}, tags=["t"]) as handle:
        agent()
    agent()
    assert HEX32.match(handle.task_id) and HEX32.match(handle.execution_id)
    stamped = [s for s in local() if "evolution.task.id" in s.attributes]
    assert len(stamped) == 1
    assert stamped[0].attributes["evolution.task.id"] == handle.task_id
    assert stamped[0].attributes["evolution.execution.id"] == handle.execution_id
    assert instrumentation._current.current_task() is None


def test_known_task_id_is_a_retry_with_a_new_execution(local):
    with task("demo", task_id="ticket-42") as first:
        pass
    with task("demo", task_id="ticket-42") as second:
        pass
    assert first.task_id == second.task_id == "ticket-42"
    assert first.execution_id != second.execution_id


def test_nested_tasks_and_foreign_spans_are_stamped(local, provider_and_spans):
    provider, _ = provider_and_spans
    tracer = provider.get_tracer("some.library")
    with task("outer") as outer:
        with task("inner") as inner, tracer.start_as_current_span("lib-inner"):
            pass
        with tracer.start_as_current_span("lib-outer"):
            pass
    spans = {s.name: s for s in local()}
    assert spans["lib-inner"].attributes["evolution.task.id"] == inner.task_id
    assert spans["lib-outer"].attributes["evolution.task.id"] == outer.task_id


async def test_concurrent_async_tasks_keep_their_ids(local):
    @track_evolution
    async def work(i):
        await asyncio.sleep(0)
        return i

    async def run(i):
        async with task(f"job{i}") as handle:
            await work(i)
            return handle

    handles = await asyncio.gather(*(run(i) for i in range(5)))
    by_input = {
        json.loads(s.attributes["input.value"])["i"]: s.attributes["evolution.execution.id"]
        for s in local()
    }
    assert by_input == {i: h.execution_id for i, h in enumerate(handles)}


def test_task_cannot_be_entered_twice(local):
    scope = task("once")
    with scope:
        pass
    with pytest.raises(RuntimeError):
        scope.__enter__()


def test_remote_task_creates_records_and_marks_success(remote):
    with task("demo", input={"q": "2+2"}, tags=["smoke"], config={"prompt": "v3"}) as t:
        pass
    (m1, p1, task_body), (m2, p2, ex_body), (m3, p3, status_body) = remote.requests
    assert (m1, p1) == ("POST", "/api/v1/tasks")
    assert task_body == {"id": t.task_id, "name": "demo", "input": {"q": "2+2"}, "tags": ["smoke"]}
    assert (m2, p2) == ("POST", f"/api/v1/tasks/{t.task_id}/executions")
    assert ex_body == {"id": t.execution_id, "config": {"prompt": "v3"}}
    assert (m3, p3, status_body) == (
        "PATCH",
        f"/api/v1/executions/{t.execution_id}",
        {"status": "succeeded"},
    )


def test_remote_task_failure_and_timeout_statuses(remote):
    error = KeyError("x")
    with pytest.raises(KeyError) as caught, task("demo"):
        raise error
    assert caught.value is error
    with pytest.raises(TimeoutError), task("demo"):
        raise TimeoutError
    statuses = [body["status"] for method, _, body in remote.requests if method == "PATCH"]
    assert statuses == ["failed", "timeout"]


async def test_remote_async_task(remote):
    async with task("demo") as t:
        await asyncio.sleep(0)
    assert [m for m, _, _ in remote.requests] == ["POST", "POST", "PATCH"]
    assert remote.requests[-1][1] == f"/api/v1/executions/{t.execution_id}"

    async def cancelled():
        async with task("cancel-me"):
            await asyncio.sleep(10)

    job = asyncio.create_task(cancelled())
    await asyncio.sleep(0.05)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    await asyncio.sleep(0.05)
    assert remote.requests[-1][2] == {"status": "failed"}


def test_unreachable_server_never_breaks_the_task(remote, caplog):
    remote.fail = True
    remote.session.client.max_retries = 0

    @track_evolution
    def agent():
        return "still works"

    with caplog.at_level(logging.WARNING, logger="instrumentation"), task("demo") as t:
        assert agent() == "still works"
    assert "could not record task" in caplog.text
    (span,) = remote.spans()
    assert span.attributes["evolution.task.id"] == t.task_id


def test_handle_reward_targets_its_execution(remote):
    with task("demo") as t:
        stored = t.reward(0.5, tags=["judge"])
    _, path, body = remote.requests[2]
    assert path == "/api/v1/rewards"
    assert body["execution_id"] == t.execution_id and body["value"] == 0.5
    assert stored["tags"] == ["judge"]
