"""configure(): endpoints and headers from arguments or OTEL_* variables, exporters by
protocol, real OTLP leaving the process, and reconfiguration."""

from __future__ import annotations

import gzip
import http.server
import json
import subprocess
import sys
import threading

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import instrumentation
from instrumentation import task, track_evolution
from instrumentation._exporters import OTLPJsonSpanExporter, parse_headers
from instrumentation._state import STATE

OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sessions():
    made = []

    def configure(*args, **kwargs):
        kwargs.setdefault("tracer_provider", TracerProvider())
        kwargs.setdefault("set_global", False)
        session = instrumentation.configure(*args, **kwargs)
        made.append(session)
        return session

    yield configure
    for session in made:
        session.shutdown(timeout_millis=1000)


def _exporter(session):
    (processor,) = session._span_processors
    return processor.span_exporter


def test_endpoint_argument_sets_rest_and_otlp_urls(sessions):
    session = sessions("http://evo.test:8000/", api_key="secret")
    assert session.mode == "remote"
    assert session.api_url == "http://evo.test:8000"
    assert session.traces_endpoint == "http://evo.test:8000/v1/traces"
    assert session.protocol == "http/protobuf"
    assert session.headers["Authorization"] == "Bearer secret"
    assert session.client._headers["Authorization"] == "Bearer secret"
    assert type(_exporter(session)).__module__.endswith("proto.http.trace_exporter")
    same = sessions("http://evo.test:8000/v1/traces")
    assert same.api_url == "http://evo.test:8000"
    assert same.traces_endpoint == "http://evo.test:8000/v1/traces"


def test_otel_environment_is_honoured(sessions, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20k2,x-team=ml")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=ml")
    session = sessions(tracer_provider=None)
    assert session.traces_endpoint == "http://collector:4318/v1/traces"
    assert session.api_url == "http://collector:4318"
    assert session.headers == {"Authorization": "Bearer k2", "x-team": "ml"}
    assert session.client._headers["Authorization"] == "Bearer k2"
    resource = session.tracer_provider.resource.attributes
    assert resource["service.name"] == "from-env"
    assert resource["deployment.environment"] == "prod"

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:9999/custom/path")
    session = sessions(tracer_provider=None, service_name="from-code", api_url="http://api:8000")
    assert session.traces_endpoint == "http://other:9999/custom/path"
    assert session.api_url == "http://api:8000"
    assert session.tracer_provider.resource.attributes["service.name"] == "from-code"

    # code beats environment
    assert sessions("http://evo.test").traces_endpoint == "http://evo.test/v1/traces"


def test_protocols(sessions, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    grpc = sessions()
    assert grpc.protocol == "grpc" and grpc.traces_endpoint == "http://127.0.0.1:4317"
    assert "grpc" in type(_exporter(grpc)).__module__
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    assert isinstance(_exporter(sessions("http://evo.test")), OTLPJsonSpanExporter)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    assert sessions().protocol == "http/protobuf"


def test_header_parsing():
    assert parse_headers("a=1, b = two%20words ,bad,c=x=y") == {
        "a": "1",
        "b": "two words",
        "c": "x=y",
    }
    assert parse_headers(None) == {}


def test_endpoint_and_store_url_are_exclusive():
    with pytest.raises(ValueError):
        instrumentation.configure("http://x", store_url="sqlite:///x.db")


def test_reconfigure_replaces_span_processors_on_the_same_provider(sessions):
    provider = TracerProvider()
    first, second = InMemorySpanExporter(), InMemorySpanExporter()

    @track_evolution
    def agent():
        return 1

    one = sessions(span_exporter=first, tracer_provider=provider)
    assert one.mode == "local" and STATE.sink is None
    agent()
    two = sessions(span_exporter=second, tracer_provider=provider)
    agent()
    assert two.force_flush()
    assert len(first.get_finished_spans()) == 1
    assert len(second.get_finished_spans()) == 1
    assert one.force_flush() is False  # shut down by the second configure()
    assert len(provider._active_span_processor._span_processors) == 1
    two.shutdown()
    two.shutdown()
    assert STATE.session is None


class _Collector(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, bytes]] = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            self.bodies.append(
                (self.headers["Content-Type"], body, self.headers.get("Authorization"))
            )
        self.send_response(200)
        self.send_header("Content-Type", self.headers["Content-Type"])
        self.end_headers()
        self.wfile.write(b"{}" if "json" in self.headers["Content-Type"] else b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def collector():
    _Collector.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.bodies
    server.shutdown()


@pytest.mark.parametrize("protocol", ["http/protobuf", "http/json"])
def test_spans_really_leave_over_otlp(sessions, collector, monkeypatch, protocol):
    from evolution_store.otlp import decode_json, decode_protobuf

    url, bodies = collector
    session = sessions(
        url, protocol=protocol, api_key="k", service_name="svc", tracer_provider=None
    )
    session.client.max_retries = 0

    @track_evolution(tags=["t"])
    def agent(x):
        return x

    with task("demo") as handle:  # the REST calls fail (no API here) and are only logged
        agent(1)
    assert session.force_flush()
    ((content_type, body, auth),) = bodies
    assert auth == "Bearer k"
    decoded = decode_json(body) if protocol == "http/json" else decode_protobuf(body)
    assert "json" in content_type if protocol == "http/json" else "protobuf" in content_type
    (span,) = decoded.spans
    assert decoded.rejected == 0
    assert span.name == "agent" and span.resource["service.name"] == "svc"
    assert span.attributes["evolution.task.id"] == handle.task_id
    assert span.attributes["evolution.tags"] == ["t"]


def test_json_exporter_retries_then_gives_up():
    answers = [503, 200]
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(answers.pop(0), headers={"Retry-After": "0"})

    provider = TracerProvider()
    exporter = OTLPJsonSpanExporter(
        "http://x/v1/traces", transport=httpx.MockTransport(handler), timeout=5
    )
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("t").start_as_current_span("s"):
        pass
    assert len(seen) == 2
    span = seen[0]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
    assert span["kind"] == 1  # integer enums
    exporter.shutdown()


def test_global_provider_is_installed_once_and_reused():
    code = """
import instrumentation
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
first, second = InMemorySpanExporter(), InMemorySpanExporter()
s1 = instrumentation.configure(span_exporter=first, service_name="svc")
provider = trace.get_tracer_provider()
assert provider is s1.tracer_provider
s2 = instrumentation.configure(span_exporter=second)
assert s2.tracer_provider is provider
with instrumentation.task("t") as t:
    with trace.get_tracer("lib").start_as_current_span("foreign"):
        pass
s2.force_flush()
(span,) = second.get_finished_spans()
assert span.attributes["evolution.task.id"] == t.task_id
assert span.resource.attributes["service.name"] == "svc"
print("ok")
"""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
