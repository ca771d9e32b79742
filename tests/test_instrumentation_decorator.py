"""@track_evolution on every kind of callable, checked against the SDK's InMemorySpanExporter."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import instrumentation
from instrumentation import track_evolution

OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
)


@pytest.fixture
def finished(monkeypatch):
    """A local configuration on a private provider; call it to get the spans ended so far."""
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    session = instrumentation.configure(
        span_exporter=exporter, tracer_provider=TracerProvider(), set_global=False
    )

    def spans():
        assert session.force_flush()
        return {span.name: span for span in exporter.get_finished_spans()}

    spans.exporter = exporter
    yield spans
    session.shutdown()


def _input(span):
    return json.loads(span.attributes["input.value"])


def test_sync_function_span_attributes_and_untouched_result(finished):
    sentinel = object()

    @track_evolution(tags=["prod", "v2"])
    def agent(question, *, depth=1):
        return {"answer": question.upper(), "obj": sentinel}

    result = agent("hi", depth=3)
    assert result["obj"] is sentinel
    span = finished()["agent"]
    assert span.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert span.attributes["gen_ai.agent.name"] == "agent"
    assert tuple(span.attributes["evolution.tags"]) == ("prod", "v2")
    assert _input(span) == {"question": "hi", "depth": 3}
    assert span.attributes["input.mime_type"] == "application/json"
    assert json.loads(span.attributes["output.value"])["answer"] == "HI"
    assert span.status.status_code is StatusCode.UNSET


def test_bare_decorator_name_argument_and_metadata(finished):
    @track_evolution
    def plain(x):
        """Doc."""
        return x

    @track_evolution("custom-name")
    def named(x):
        return x

    assert plain.__name__ == "plain" and plain.__doc__ == "Doc."
    assert plain(1) == 1 and named(2) == 2
    spans = finished()
    assert set(spans) == {"plain", "custom-name"}
    assert spans["custom-name"].attributes["gen_ai.agent.name"] == "custom-name"
    assert "evolution.tags" not in spans["plain"].attributes


def test_string_output_is_text_and_nested_calls_nest(finished):
    @track_evolution
    def tool(x):
        return f"tool:{x}"

    @track_evolution
    def agent(x):
        return tool(x) + "!"

    assert agent("a") == "tool:a!"
    spans = finished()
    outer, inner = spans["agent"], spans["tool"]
    assert inner.parent.span_id == outer.context.span_id
    assert inner.context.trace_id == outer.context.trace_id
    assert outer.attributes["gen_ai.operation.name"] == "invoke_agent"
    # the tool's span counts as the calling agent's work
    assert inner.attributes["gen_ai.agent.name"] == "agent"
    assert inner.attributes["gen_ai.operation.name"] == "execute_tool"
    assert inner.attributes["gen_ai.tool.name"] == "tool"
    assert outer.attributes["output.value"] == "tool:a!"
    assert outer.attributes["output.mime_type"] == "text/plain"


def test_operation_override(finished):
    @track_evolution(operation="chat")
    def llm():
        return 1

    @track_evolution
    def agent():
        return llm()

    @track_evolution
    def search():
        return 1

    @track_evolution(operation="invoke_agent")
    def sub_agent():
        return search() + 1

    @track_evolution
    def orchestrator():
        return agent() + sub_agent()

    orchestrator()
    spans = finished()
    assert spans["llm"].attributes["gen_ai.operation.name"] == "chat"
    # an LLM call and a step count for the agent that made them; a sub-agent stays itself
    assert spans["llm"].attributes["gen_ai.agent.name"] == "orchestrator"
    assert spans["agent"].attributes["gen_ai.agent.name"] == "orchestrator"
    assert spans["sub_agent"].attributes["gen_ai.agent.name"] == "sub_agent"
    assert spans["search"].attributes["gen_ai.agent.name"] == "sub_agent"


def test_exception_recorded_and_reraised_unchanged(finished):
    error = ValueError("boom")

    @track_evolution
    def fails():
        raise error

    with pytest.raises(ValueError) as caught:
        fails()
    assert caught.value is error
    span = finished()["fails"]
    assert span.status.status_code is StatusCode.ERROR
    assert "boom" in span.status.description
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert "output.value" not in span.attributes


def test_capture_io_off_and_cap_on_huge_values(finished):
    @track_evolution(capture_io=False)
    def secret(password):
        return password

    @track_evolution
    def big(doc):
        return doc * 2

    class Opaque:
        def __repr__(self):
            return "<Opaque>"

    @track_evolution
    def odd(thing):
        return {1, 2}

    secret("hunter2")
    big("x" * 100_000)
    odd(Opaque())
    spans = finished()
    assert "input.value" not in spans["secret"].attributes
    assert "output.value" not in spans["secret"].attributes
    value = spans["big"].attributes["input.value"]
    assert len(value) < 20_000 and "truncated" in value
    assert spans["big"].attributes["input.mime_type"] == "text/plain"
    assert len(spans["big"].attributes["output.value"]) < 20_000
    assert _input(spans["odd"]) == {"thing": "<Opaque>"}
    assert sorted(json.loads(spans["odd"].attributes["output.value"])) == [1, 2]


def test_varargs_are_bound_by_signature(finished):
    @track_evolution
    def variadic(a, *rest, **options):
        return len(rest)

    assert variadic(1, 2, 3, flag=True) == 2
    assert _input(finished()["variadic"]) == {"a": 1, "rest": [2, 3], "options": {"flag": True}}


def test_methods_classmethods_staticmethods_drop_self_and_cls(finished):
    class Agent:
        def __init__(self, prefix):
            self.prefix = prefix

        @track_evolution
        def run(self, x):
            return self.prefix + x

        @classmethod
        @track_evolution
        def build(cls, prefix):
            return cls(prefix)

        @track_evolution
        @classmethod
        def build2(cls, prefix):
            return cls(prefix)

        @track_evolution
        @staticmethod
        def helper(y):
            return y * 2

    agent = Agent.build("p:")
    assert isinstance(Agent.build2("q:"), Agent)
    assert agent.run("x") == "p:x"
    assert Agent.helper(2) == 4 and agent.helper(3) == 6
    spans = finished()
    assert _input(spans["Agent.run"]) == {"x": "x"}
    assert _input(spans["Agent.build"]) == {"prefix": "p:"}
    assert _input(spans["Agent.build2"]) == {"prefix": "q:"}
    assert _input(spans["Agent.helper"]) == {"y": 3}


async def test_async_function_and_nesting_across_tasks(finished):
    @track_evolution
    async def step(i):
        await asyncio.sleep(0)
        return i * 10

    @track_evolution
    async def agent():
        return await asyncio.gather(step(1), asyncio.create_task(step(2)))

    assert inspect.iscoroutinefunction(agent)
    assert await agent() == [10, 20]
    assert finished()  # flushed
    exported = finished.exporter.get_finished_spans()
    root = next(s for s in exported if s.name == "agent")
    steps = [s for s in exported if s.name == "step"]
    assert len(steps) == 2
    assert all(s.parent.span_id == root.context.span_id for s in steps)


async def test_async_cancellation_is_error_and_propagates(finished):
    started = asyncio.Event()

    @track_evolution
    async def slow():
        started.set()
        await asyncio.sleep(10)

    job = asyncio.create_task(slow())
    await started.wait()
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    span = finished()["slow"]
    assert span.status.status_code is StatusCode.ERROR
    assert span.events[0].attributes["exception.type"] == "asyncio.exceptions.CancelledError"


def test_generator_span_covers_iteration_and_children_nest(finished):
    @track_evolution
    def inner(token):
        return token

    @track_evolution
    def stream(n):
        for i in range(n):
            yield inner(f"t{i} ")

    gen = stream(3)
    assert list(gen) == ["t0 ", "t1 ", "t2 "]
    assert finished()
    spans = finished.exporter.get_finished_spans()
    outer = next(s for s in spans if s.name == "stream")
    children = [s for s in spans if s.name == "inner"]
    assert len(children) == 3
    assert all(c.parent.span_id == outer.context.span_id for c in children)
    assert outer.attributes["output.value"] == "t0 t1 t2 "
    assert outer.end_time >= max(c.end_time for c in children)


def test_generator_context_is_captured_at_creation(finished):
    @track_evolution
    def stream():
        yield 1
        yield 2

    @track_evolution
    def producer():
        return stream()

    gen = producer()  # producer's span ends before the stream is consumed
    assert list(gen) == [1, 2]
    spans = finished()
    assert spans["stream"].parent.span_id == spans["producer"].context.span_id
    assert json.loads(spans["stream"].attributes["output.value"]) == [1, 2]


def test_generator_send_throw_close_and_gc(finished):
    @track_evolution
    def echo():
        received = yield "ready"
        while True:
            received = yield f"got {received}"

    gen = echo()
    assert next(gen) == "ready"
    assert gen.send("a") == "got a"
    gen.close()
    assert "echo" in finished()

    @track_evolution
    def raises_inside():
        try:
            yield 1
        except KeyError:
            yield "handled"

    gen = raises_inside()
    next(gen)
    assert gen.throw(KeyError("k")) == "handled"
    with pytest.raises(StopIteration):
        next(gen)

    @track_evolution
    def abandoned():
        yield from range(10)

    gen = abandoned()
    next(gen)
    del gen
    gc.collect()
    spans = finished()
    assert "abandoned" in spans and "raises_inside" in spans
    assert spans["abandoned"].status.status_code is StatusCode.UNSET


def test_generator_error_is_recorded(finished):
    @track_evolution
    def broken():
        yield 1
        raise RuntimeError("mid-stream")

    gen = broken()
    next(gen)
    with pytest.raises(RuntimeError, match="mid-stream"):
        next(gen)
    assert finished()["broken"].status.status_code is StatusCode.ERROR


async def test_async_generator_lifecycle(finished):
    @track_evolution
    async def child(i):
        return i

    @track_evolution
    async def astream(n):
        for i in range(n):
            yield await child(i)

    assert [x async for x in astream(3)] == [0, 1, 2]
    assert finished()
    spans = finished.exporter.get_finished_spans()
    outer = next(s for s in spans if s.name == "astream")
    assert all(s.parent.span_id == outer.context.span_id for s in spans if s.name == "child")
    assert json.loads(outer.attributes["output.value"]) == [0, 1, 2]

    finished.exporter.clear()
    agen = astream(5)
    assert await agen.__anext__() == 0
    await agen.aclose()
    assert "astream" in finished()

    finished.exporter.clear()
    agen = astream(5)
    async for _ in agen:
        break
    del agen
    gc.collect()
    assert "astream" in finished()


async def test_async_generator_error_and_cancellation(finished):
    @track_evolution
    async def failing():
        yield 1
        raise KeyError("x")

    with pytest.raises(KeyError):
        async for _ in failing():
            pass
    assert finished()["failing"].status.status_code is StatusCode.ERROR


def test_recursion_and_many_calls_keep_context_clean(finished):
    from opentelemetry import trace

    @track_evolution
    def fact(n):
        return 1 if n <= 1 else n * fact(n - 1)

    assert fact(5) == 120
    assert not trace.get_current_span().get_span_context().is_valid
    assert finished()
    spans = finished.exporter.get_finished_spans()
    assert len(spans) == 5
    ops = [s.attributes["gen_ai.operation.name"] for s in spans]
    assert ops.count("invoke_agent") == 1


def test_decorated_functions_work_without_configure():
    import subprocess

    code = (
        "import instrumentation\n"
        "@instrumentation.track_evolution\n"
        "def f(x):\n    return x + 1\n"
        "@instrumentation.track_evolution\n"
        "def g():\n    yield 1\n"
        "assert f(1) == 2 and list(g()) == [1]\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
