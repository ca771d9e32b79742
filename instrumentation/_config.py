"""`configure()`: where spans, tasks and rewards go.

- remote (`endpoint=`, or `OTEL_EXPORTER_OTLP_*` in the environment, or nothing: the default
  server at http://127.0.0.1:8000): spans leave by OTLP through the SDK's BatchSpanProcessor,
  tasks and rewards by REST;
- embedded (`store_url=`): spans, tasks and rewards go into an `EvolutionStore` in this process;
- local (only `span_exporter=`): spans go to your exporter; tasks only stamp ids.

Our `EvolutionSpanProcessor` is added once to the provider and holds the current span
processors, so calling `configure()` again replaces the previous configuration (also on a global
provider, which OpenTelemetry never lets anyone replace). Tasks and rewards go to a sink
(`_sinks`), kept in `_state.STATE` with the tracer.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from ._client import DEFAULT_BASE_URL, EvolutionClient
from ._context import EvolutionSpanProcessor
from ._exporters import PROTOCOLS, build_otlp_exporter, parse_headers
from ._sinks import RemoteSink, Sink
from ._state import SCOPE_NAME, SCOPE_VERSION, STATE, logger

TRACES_PATH = "/v1/traces"
DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"

T = TypeVar("T")

_lock = threading.Lock()
_evolution_processors: weakref.WeakKeyDictionary[TracerProvider, EvolutionSpanProcessor] = (
    weakref.WeakKeyDictionary()
)
_atexit_registered = False


class TracingSession:
    """What `configure()` returns: the provider it set up and `force_flush` / `shutdown`.

    ```python
    session = instrumentation.configure(endpoint="http://127.0.0.1:8000", service_name="bot")
    ...
    session.force_flush()   # e.g. before a serverless function returns
    ```

    `shutdown()` runs by itself at interpreter exit; call it earlier to flush and release the
    exporter threads, the HTTP client or the embedded store.
    """

    def __init__(
        self,
        *,
        mode: str,
        tracer_provider: TracerProvider,
        evolution_processor: EvolutionSpanProcessor,
        span_processors: tuple[SpanProcessor, ...],
        sink: Sink | None,
        owns_provider: bool,
        api_url: str | None = None,
        traces_endpoint: str | None = None,
        protocol: str | None = None,
        headers: Mapping[str, str] | None = None,
        store_url: str | None = None,
        client: EvolutionClient | None = None,
    ) -> None:
        self.mode = mode
        self.tracer_provider = tracer_provider
        self.sink = sink
        self.api_url = api_url
        self.traces_endpoint = traces_endpoint
        self.protocol = protocol
        self.headers = dict(headers or {})
        self.store_url = store_url
        self.client = client
        self._evolution_processor = evolution_processor
        self._span_processors = span_processors
        self._owns_provider = owns_provider
        self._closed = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export every span ended so far; False if that did not finish within the timeout."""
        if self._closed:
            return False
        return all([p.force_flush(timeout_millis) for p in self._span_processors])

    def call_store(self, fn: Callable[[Any], Awaitable[T]], timeout: float | None = None) -> T:
        """Embedded mode: run `fn(store)` on the store's own event loop and return the result.

        The store belongs to a private loop thread, so reads go through here rather than a
        second `EvolutionStore` (SQLite allows one writer per process):
        `session.call_store(lambda store: store.list_rewards(RewardQuery(tag="prod")))`.
        """
        runner = getattr(self.sink, "runner", None)
        if runner is None:
            raise RuntimeError("call_store() needs embedded mode: configure(store_url=...)")
        return runner.call(fn, timeout)

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        """Flush and stop this configuration's exporters and sink. Idempotent."""
        with _lock:
            if self._closed:
                return
            self._closed = True
            if STATE.session is self:
                STATE.session = None
                STATE.sink = None
                STATE.tracer = None
            if self._evolution_processor.processors == self._span_processors:
                self._evolution_processor.set_processors(())
        for processor in self._span_processors:
            try:
                processor.shutdown()
            except Exception as exc:
                logger.warning("span processor shutdown failed: %s", exc)
        if self.sink is not None:
            self.sink.shutdown(timeout_millis / 1000)
        if self._owns_provider and trace.get_tracer_provider() is not self.tracer_provider:
            self.tracer_provider.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        where = self.store_url if self.mode == "embedded" else self.traces_endpoint
        return f"<TracingSession {self.mode} {where or ''}>".replace(" >", ">")


def _at_exit() -> None:
    session = STATE.session
    if session is not None:
        session.shutdown()


def _processor_for(provider: TracerProvider) -> EvolutionSpanProcessor:
    processor = _evolution_processors.get(provider)
    if processor is None:
        processor = _evolution_processors[provider] = EvolutionSpanProcessor()
        provider.add_span_processor(processor)
    return processor


def _resource(service_name: str | None, resource_attributes: Mapping[str, Any] | None) -> Resource:
    attributes = dict(resource_attributes or {})
    if service_name:
        attributes[SERVICE_NAME] = service_name
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; ours win.
    return Resource.create(attributes)


def _provider(
    tracer_provider: TracerProvider | None,
    set_global: bool,
    service_name: str | None,
    resource_attributes: Mapping[str, Any] | None,
) -> tuple[TracerProvider, bool]:
    if tracer_provider is not None:
        if service_name or resource_attributes:
            logger.warning(
                "tracer_provider= was given: its resource is kept "
                "(service_name/resource_attributes ignored)"
            )
        return tracer_provider, False
    if set_global:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            if service_name or resource_attributes:
                logger.warning(
                    "a global TracerProvider is already installed; its resource is kept "
                    "(service_name/resource_attributes ignored)"
                )
            return current, False
    provider = TracerProvider(
        resource=_resource(service_name, resource_attributes), shutdown_on_exit=False
    )
    if set_global:
        trace.set_tracer_provider(provider)
    return provider, True


def _remote_urls(endpoint: str | None, api_url: str | None, protocol: str) -> tuple[str, str]:
    """(REST base URL, OTLP traces endpoint); code beats environment, as in OpenTelemetry."""
    env = os.environ
    grpc = protocol == "grpc"
    if endpoint:
        base = endpoint.rstrip("/")
        if base.endswith(TRACES_PATH):
            base = base[: -len(TRACES_PATH)]
        traces = base if grpc else base + TRACES_PATH
    else:
        generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip().rstrip("/")
        base = generic or DEFAULT_BASE_URL
        specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        if specific:
            traces = specific
        elif grpc:
            traces = generic or DEFAULT_GRPC_ENDPOINT
        else:
            traces = base + TRACES_PATH
    return (api_url or base).rstrip("/"), traces


def _protocol(protocol: str | None) -> str:
    env = os.environ
    chosen = (
        (
            protocol
            or env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        .strip()
        .lower()
    )
    if chosen not in PROTOCOLS:
        logger.warning("unknown OTLP protocol %r; using http/protobuf", chosen)
        return "http/protobuf"
    return chosen


def configure(
    endpoint: str | None = None,
    *,
    store_url: str | None = None,
    service_name: str | None = None,
    api_key: str | None = None,
    api_url: str | None = None,
    headers: Mapping[str, str] | None = None,
    protocol: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    tracer_provider: TracerProvider | None = None,
    span_exporter: SpanExporter | None = None,
    set_global: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> TracingSession:
    """Send spans, tasks and rewards to an evolution-store server (`endpoint`, the default) or
    write them into an embedded store (`store_url`), and return the `TracingSession`.

    Remote mode exports OTLP over http/protobuf to `<endpoint>/v1/traces` (or `grpc` /
    `http/json` by `protocol` or `OTEL_EXPORTER_OTLP_PROTOCOL`) and calls the REST API at
    `api_url` (default: `endpoint`). Without `endpoint`, `OTEL_EXPORTER_OTLP_ENDPOINT` (+
    `/v1/traces`), `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (as is), `OTEL_EXPORTER_OTLP_HEADERS`,
    `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` apply. `api_key` is sent as
    `Authorization: Bearer …` on both.

    The provider: `tracer_provider` if given, else the global SDK provider if one is installed
    (our processor is added to it), else a new one, made global unless `set_global=False`.
    `span_exporter` adds an exporter of your own (alone, it is the whole configuration).

    Embedded mode imports `evolution_store` here, and raises what opening the store raises.

    ```python
    instrumentation.configure(store_url="sqlite:///agent.db", service_name="triage-bot")
    ```
    """
    global _atexit_registered
    if endpoint and store_url:
        raise ValueError("give endpoint= (a server) or store_url= (embedded), not both")
    previous = STATE.session
    if previous is not None:
        previous.shutdown()

    provider, owns = _provider(tracer_provider, set_global, service_name, resource_attributes)
    evolution_processor = _processor_for(provider)
    processors: list[SpanProcessor] = []
    sink: Sink | None = None
    details: dict[str, Any] = {}
    if store_url:
        from ._embedded import EmbeddedSink, StoreRunner, StoreSpanExporter

        runner = StoreRunner(store_url)
        processors.append(BatchSpanProcessor(StoreSpanExporter(runner)))
        sink = EmbeddedSink(runner)
        mode = "embedded"
        details["store_url"] = store_url
    elif endpoint or span_exporter is None or _env_endpoint():
        chosen = _protocol(protocol)
        rest_url, traces = _remote_urls(endpoint, api_url, chosen)
        otlp_headers = {
            **parse_headers(os.environ.get("OTEL_EXPORTER_OTLP_HEADERS")),
            **parse_headers(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")),
            **dict(headers or {}),
        }
        if api_key:
            otlp_headers["Authorization"] = f"Bearer {api_key}"
        auth = next((v for k, v in otlp_headers.items() if k.lower() == "authorization"), None)
        client = EvolutionClient(
            rest_url, headers={"Authorization": auth} if auth else None, transport=transport
        )
        processors.append(BatchSpanProcessor(build_otlp_exporter(chosen, traces, otlp_headers)))
        sink = RemoteSink(client)
        mode = "remote"
        details.update(
            api_url=rest_url,
            traces_endpoint=traces,
            protocol=chosen,
            headers=otlp_headers,
            client=client,
        )
    else:
        mode = "local"
    if span_exporter is not None:
        processors.append(BatchSpanProcessor(span_exporter))

    session = TracingSession(
        mode=mode,
        tracer_provider=provider,
        evolution_processor=evolution_processor,
        span_processors=tuple(processors),
        sink=sink,
        owns_provider=owns,
        **details,
    )
    with _lock:
        for old in evolution_processor.set_processors(processors):
            old.shutdown()
        STATE.tracer = provider.get_tracer(SCOPE_NAME, SCOPE_VERSION)
        STATE.sink = sink
        STATE.session = session
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True
    return session


def _env_endpoint() -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
