"""Tokens and latency of one metric call, read from the spans the agent made during it.

`evaluate` runs inside a span of ours; a span processor on the application's SDK tracer
provider sums the gen_ai token usage of every span in that trace, so an instrumented agent
needs no bookkeeping. Without an SDK provider nothing can be read and the caller falls back."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import SpanProcessor

__all__ = ["Measured", "SpanCapture"]

_TOKEN_KEYS = (
    ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"),
    ("gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens"),
    ("llm.token_count.prompt", "llm.token_count.completion"),
)


@dataclass
class Measured:
    """What the spans of one call said: how many ended, their tokens, the call's duration."""

    spans: int = 0
    tokens: float = 0.0
    latency_ms: float = 0.0


def _span_tokens(attributes: Any) -> float:
    for keys in _TOKEN_KEYS:
        values = [attributes.get(k) for k in keys]
        if any(isinstance(v, int | float) for v in values):
            return float(sum(v for v in values if isinstance(v, int | float)))
    return 0.0


class _Collector(SpanProcessor):
    """A span processor summing, per trace we watch, the spans that end in it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, Measured] = {}

    def watch(self, trace_id: int) -> Measured:
        with self._lock:
            return self._watched.setdefault(trace_id, Measured())

    def forget(self, trace_id: int) -> None:
        with self._lock:
            self._watched.pop(trace_id, None)

    def on_end(self, span: Any) -> None:
        with self._lock:
            measured = self._watched.get(span.context.trace_id)
            if measured is not None and span.name != SpanCapture.SPAN_NAME:
                measured.spans += 1
                measured.tokens += _span_tokens(span.attributes or {})


class SpanCapture:
    """Wraps metric calls in a span and measures them. `available` is False when the global
    tracer provider is not the SDK's (then spans cannot be read)."""

    SPAN_NAME = "apo.evaluate"
    _collector: _Collector | None = None
    _installed_on: Any = None

    def __init__(self) -> None:
        provider = trace.get_tracer_provider()
        self.available = hasattr(provider, "add_span_processor")
        if self.available and SpanCapture._installed_on is not provider:
            # One collector per provider for the process: processors cannot be removed.
            SpanCapture._collector = _Collector()
            provider.add_span_processor(SpanCapture._collector)
            SpanCapture._installed_on = provider
        self._tracer = trace.get_tracer("evolution_store.learn.apo")

    @contextlib.contextmanager
    def call(self, **attributes: Any) -> Iterator[Measured | None]:
        if not self.available or SpanCapture._collector is None:
            yield None
            return
        collector = SpanCapture._collector
        with self._tracer.start_as_current_span(self.SPAN_NAME, attributes=attributes) as span:
            trace_id = span.get_span_context().trace_id
            measured = collector.watch(trace_id)
            try:
                yield measured
            finally:
                collector.forget(trace_id)
        start, end = getattr(span, "start_time", None), getattr(span, "end_time", None)
        if start is not None and end is not None:
            measured.latency_ms = (end - start) / 1e6
