"""`evolution-store serve` as a real process: two HTTP ports over one store, gRPC beside them,
clean SIGTERM, one-line startup failures, and no acknowledged span lost to `kill -9`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import httpx
import pytest
from click.testing import CliRunner
from conftest import free_ports
from factories import span_batch, span_dict

from evolution_store import EvolutionStore
from evolution_store.cli import cli
from evolution_store.models import TaskIn
from evolution_store.queries import SpanQuery

API = "/api/v1"


def _otlp_json(trace: str, span: str, name: str = "otlp-span") -> dict:
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace,
                                "spanId": span,
                                "name": name,
                                "kind": 1,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000001000000",
                            }
                        ]
                    }
                ],
            }
        ]
    }


async def _count(url: str, trace_ids: list[str]) -> dict[str, int]:
    """How many spans of each trace the database holds (read straight from the store)."""
    store = await EvolutionStore.open(url)
    try:
        counts = {}
        for trace in trace_ids:
            page = await store.list_spans(SpanQuery(trace_id=trace, limit=1000))
            counts[trace] = len(page.items)
        return counts
    finally:
        await store.close()


def test_help_on_every_command():
    runner = CliRunner()
    for args in ([], ["serve"], ["db"], ["db", "upgrade"]):
        result = runner.invoke(cli, [*args, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output
    serve_help = runner.invoke(cli, ["serve", "--help"]).output
    for flag in ("--db", "--host", "--port", "--otlp-http-port", "--otlp-grpc-port"):
        assert flag in serve_help


def test_python_dash_m_is_the_cli():
    result = subprocess.run(
        [sys.executable, "-m", "evolution_store", "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "serve" in result.stdout and "db" in result.stdout


def test_one_store_two_ports_and_clean_sigterm(live_server, tmp_path):
    url = f"sqlite:///{tmp_path / 'two-ports.db'}"
    server = live_server(url)
    batch = span_batch(10)
    with httpx.Client(timeout=30) as client:
        posted = client.post(server.url + f"{API}/spans", json={"spans": batch})
        assert posted.status_code == 200
        assert posted.json()["accepted"] == 10

        # /v1/traces on the API port and on the OTLP port, same store.
        main = client.post(server.url + "/v1/traces", json=_otlp_json("a" * 32, "1" * 16))
        assert main.status_code == 200, main.text
        otlp = client.post(server.otlp_http_url, json=_otlp_json("b" * 32, "2" * 16))
        assert otlp.status_code == 200, otlp.text
        for trace in ("a" * 32, "b" * 32):
            found = client.get(server.url + f"{API}/spans", params={"trace_id": trace})
            assert len(found.json()["items"]) == 1

        # The OTLP port is only for OTLP (and health checks).
        otlp_base = server.otlp_http_url.removesuffix("/v1/traces")
        assert client.get(otlp_base + f"{API}/tasks").status_code == 404
        assert client.get(otlp_base + "/healthz").status_code == 200

    assert server.stop() == 0
    assert "stopped" in server.log()
    counts = asyncio.run(_count(url, [batch[0]["trace_id"], "a" * 32, "b" * 32]))
    assert counts == {batch[0]["trace_id"]: 10, "a" * 32: 1, "b" * 32: 1}


def test_default_database_is_evolution_db_in_the_working_directory(live_server, tmp_path):
    server = live_server(db_flag=False)
    with httpx.Client() as client:
        assert client.post(server.url + f"{API}/spans", json=span_dict()).status_code == 200
    assert server.stop() == 0
    assert (tmp_path / "evolution.db").exists()


def test_database_from_the_environment(live_server, tmp_path):
    target = tmp_path / "from-env.db"
    server = live_server(db_flag=False, env={"EVOLUTION_STORE_URL": f"sqlite:///{target}"})
    assert server.stop() == 0
    assert target.exists()
    assert not (tmp_path / "evolution.db").exists()


def test_otlp_port_zero_disables_it(live_server):
    server = live_server(otlp_http=False)
    assert server.otlp_http_url is None
    with httpx.Client() as client:
        response = client.post(server.url + "/v1/traces", json=_otlp_json("c" * 32, "3" * 16))
        assert response.status_code == 200
    assert server.stop() == 0


def test_api_keys_from_the_environment(live_server):
    server = live_server(api_keys="sekrit")
    with httpx.Client() as client:
        assert client.get(server.url + f"{API}/tasks").status_code == 401
        ok = client.get(server.url + f"{API}/tasks", headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200
        assert client.get(server.url + "/healthz").status_code == 200
        otlp = client.post(server.otlp_http_url, json=_otlp_json("d" * 32, "4" * 16))
        assert otlp.status_code == 401


def test_grpc_receiver_shares_the_store(live_server, tmp_path):
    pytest.importorskip("api.grpc_server")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    server = live_server(grpc=True)
    exporter = OTLPSpanExporter(endpoint=server.grpc_target, insecure=True)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("over-grpc") as span:
        trace = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()
    with httpx.Client() as client:
        found = client.get(server.url + f"{API}/spans", params={"trace_id": trace}).json()
    assert [item["name"] for item in found["items"]] == ["over-grpc"]
    assert server.stop() == 0


def _migrate_in_child(url: str, cwd) -> subprocess.CompletedProcess[str]:
    """`serve`'s migration step, in a fresh interpreter as the server runs it (a fork from
    this test process would copy its threads' locks). Prints what the serving process then
    holds of the migration machinery."""
    code = (
        "import sys\n"
        "from api.serve import ServeError, migrate_in_child\n"
        "try:\n"
        f"    print(migrate_in_child({url!r}))\n"
        "except ServeError as exc:\n"
        "    print('ServeError:', exc)\n"
        "print(sorted(m for m in ('alembic', 'migrations') if m in sys.modules))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def test_serve_migrates_in_a_child_and_never_imports_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = _migrate_in_child(url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["True", "[]"], result.stdout

    async def usable_without_migrating() -> bool:
        store = await EvolutionStore.open(url, migrate=False)
        try:
            return (await store.create_task(TaskIn(id="after-child")))[1]
        finally:
            await store.close()

    assert asyncio.run(usable_without_migrating())


def test_a_failed_migration_in_the_child_is_one_error(tmp_path):
    result = _migrate_in_child("postgresql://nobody:secret@127.0.0.1:1/none", tmp_path)
    assert result.returncode == 0, result.stderr
    answer, imported = result.stdout.splitlines()
    assert answer.startswith("ServeError: cannot open postgresql://"), answer
    assert "secret" not in answer
    assert imported == "[]"


def test_an_in_memory_database_migrates_in_the_server(tmp_path):
    # A child would migrate a database of its own: the store migrates it as it opens.
    result = _migrate_in_child("sqlite:///:memory:", tmp_path)
    assert result.stdout.splitlines() == ["False", "[]"], result.stderr


def _run_cli(*args: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    child_env = {**os.environ, **(env or {})}
    child_env.pop("EVOLUTION_STORE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "evolution_store", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=child_env,
        timeout=120,
    )


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("flag", ["--port", "--otlp-http-port", "--otlp-grpc-port"])
def test_port_in_use_is_one_line(tmp_path, flag):
    import socket

    flags = ["--port", "--otlp-http-port", "--otlp-grpc-port"]
    ports = dict(zip(flags, free_ports(3), strict=True))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ports[flag] = taken.getsockname()[1]
        options = [str(part) for pair in ports.items() for part in pair]
        result = _run_cli("serve", "--db", f"sqlite:///{tmp_path / 'x.db'}", *options, cwd=tmp_path)
    line = _one_line_error(result)
    assert "cannot listen" in line
    assert str(ports[flag]) in line
    assert not (tmp_path / "x.db").exists()  # nothing was opened


def test_unreachable_database_is_one_line(tmp_path):
    (port,) = free_ports(1)
    result = _run_cli(
        "serve", "--db", "postgresql://nobody:secret@127.0.0.1:1/none", "--port", str(port),
        "--otlp-http-port", "0", "--otlp-grpc-port", "0", cwd=tmp_path,
    )  # fmt: skip
    line = _one_line_error(result)
    assert "cannot open" in line
    assert "secret" not in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--db", "mysql://x/y"], "unsupported database URL"),
        (["--port", "0", "--otlp-http-port", "0", "--otlp-grpc-port", "0"], "nothing to serve"),
        (["--port", "9999", "--otlp-http-port", "9999"], "must differ"),
    ],
)
def test_bad_settings_are_one_line(tmp_path, args, message):
    result = _run_cli("serve", *args, cwd=tmp_path)
    assert message in _one_line_error(result)


def test_bad_port_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["serve", "--port", "70000"])
    assert result.exit_code == 2


def _post_until_stopped(url: str, acked: list[str], stop: threading.Event, size: int) -> None:
    """Post batches (one trace each) until the server goes away; record acknowledged traces."""
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            batch = span_batch(size)
            try:
                response = client.post(url + f"{API}/spans", json={"spans": batch})
            except httpx.TransportError:
                return
            if response.status_code != 200:
                return
            acked.append(batch[0]["trace_id"])


def _hammer_then(server, action, *, workers: int = 4, size: int = 100, after: int = 20):
    acked: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_post_until_stopped, args=(server.url, acked, stop, size))
        for _ in range(workers)
    ]
    for thread in threads:
        thread.start()
    try:
        while len(acked) < after and any(thread.is_alive() for thread in threads):
            stop.wait(0.01)
        assert len(acked) >= after, server.log()
        action()
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    return list(acked)


def test_sigterm_finishes_in_flight_batches(live_server, store_url):
    server = live_server(store_url)
    acked = _hammer_then(server, lambda: server.process.send_signal(15))
    assert server.stop() == 0, server.log()
    counts = asyncio.run(_count(store_url, acked))
    assert all(count == 100 for count in counts.values()), counts


def test_kill_9_loses_no_acknowledged_span(live_server, store_url):
    """200 means committed: after SIGKILL mid-stream and a restart on the same database, every
    acknowledged batch is there in full (and no batch is there in part)."""
    server = live_server(store_url)
    acked = _hammer_then(server, server.kill)
    assert server.process.returncode == -9

    restarted = live_server(store_url)
    with httpx.Client(timeout=30) as client:
        for trace in acked:
            response = client.get(
                restarted.url + f"{API}/spans", params={"trace_id": trace, "limit": 1000}
            )
            assert response.status_code == 200
            assert len(response.json()["items"]) == 100, trace
        everything = client.get(restarted.url + f"{API}/tasks", params={"limit": 1000}).json()
    # Spans without task ids make one task per trace: whole batches only, never part of one.
    assert len(everything["items"]) >= len(acked)
    for task in everything["items"]:
        assert task["span_count"] in (0, 100), task
    assert restarted.stop() == 0


async def test_accepted_connections_have_tcp_nodelay():
    # Without TCP_NODELAY a kept-alive client waits out delayed ACKs (~40 ms) per request.
    import socket

    from api.serve import _bind

    listener = _bind("127.0.0.1", 0, "API")
    nodelay: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        nodelay.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    server = await asyncio.start_server(on_connect, sock=listener)
    async with server:
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(100):
            if nodelay:
                break
            await asyncio.sleep(0.01)
        writer.close()
    assert nodelay and nodelay[0] != 0
