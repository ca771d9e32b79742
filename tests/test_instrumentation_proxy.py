"""with_evolution_tracking: traced public methods, everything else passes straight through."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import instrumentation
from instrumentation import with_evolution_tracking


@pytest.fixture
def finished(monkeypatch):
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    session = instrumentation.configure(
        span_exporter=exporter, tracer_provider=TracerProvider(), set_global=False
    )

    def spans():
        assert session.force_flush()
        return list(exporter.get_finished_spans())

    yield spans
    session.shutdown()


class Agent:
    greeting = "hello"

    def __init__(self):
        self.calls = 0
        self.items = {"a": 1}

    def answer(self, question, *, loud=False):
        self.calls += 1
        text = f"{self.greeting} {question}"
        return text.upper() if loud else text

    async def aanswer(self, question):
        return f"async {question}"

    def stream(self, n):
        yield from range(n)

    async def astream(self, n):
        for i in range(n):
            yield i

    def fail(self):
        raise LookupError("nope")

    def _private(self):
        return "private"

    def __call__(self, x):
        return self.answer(x)

    def __len__(self):
        return 7

    def __getitem__(self, key):
        return self.items[key]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_public_methods_traced_with_class_prefix(finished):
    agent = with_evolution_tracking(Agent(), tags=["support"])
    assert agent.answer("there", loud=True) == "HELLO THERE"
    (span,) = finished()
    assert span.name == "Agent.answer"
    assert json.loads(span.attributes["input.value"]) == {"question": "there", "loud": True}
    assert span.attributes["output.value"] == "HELLO THERE"
    assert tuple(span.attributes["evolution.tags"]) == ("support",)


def test_attributes_pass_through_and_class_is_untouched(finished):
    raw = Agent()
    agent = with_evolution_tracking(raw)
    agent.greeting = "hi"
    assert raw.greeting == "hi" and agent.greeting == "hi"
    agent.answer("x")
    assert raw.calls == 1 and agent.calls == 1
    assert isinstance(agent, Agent)
    assert agent._private() == "private"
    del agent.greeting
    assert agent.greeting == "hello"  # back to the class attribute
    assert not hasattr(Agent.answer, "__wrapped__")
    Agent().answer("untraced")
    assert [s.name for s in finished()] == ["Agent.answer"]


def test_dunders_are_forwarded(finished):
    agent = with_evolution_tracking(Agent())
    assert len(agent) == 7
    assert agent["a"] == 1
    assert agent == agent and repr(agent).startswith("<")
    with agent as entered:
        assert entered is agent
    assert agent("q") == "hello q"
    names = [s.name for s in finished()]
    assert names.count("Agent.__call__") == 1


def test_exceptions_pass_through_and_are_recorded(finished):
    agent = with_evolution_tracking(Agent())
    with pytest.raises(LookupError, match="nope"):
        agent.fail()
    (span,) = finished()
    assert span.status.status_code is StatusCode.ERROR


async def test_async_and_streaming_methods(finished):
    agent = with_evolution_tracking(Agent())
    assert await agent.aanswer("q") == "async q"
    assert list(agent.stream(3)) == [0, 1, 2]
    assert [i async for i in agent.astream(2)] == [0, 1]
    names = sorted(s.name for s in finished())
    assert names == ["Agent.aanswer", "Agent.astream", "Agent.stream"]


def test_methods_filter_and_wrapper_cache(finished):
    agent = with_evolution_tracking(Agent(), methods=["stream"])
    assert agent.answer("x") == "hello x"
    assert list(agent.stream(1)) == [0]
    assert agent("y") == "hello y"  # __call__ not listed: untraced
    assert [s.name for s in finished()] == ["Agent.stream"]
    assert agent.stream is agent.stream


def test_proxy_reuses_the_decorator_wrapping():
    import instrumentation._proxy as proxy_module
    from instrumentation._decorator import wrap_callable

    assert proxy_module.wrap_callable is wrap_callable
