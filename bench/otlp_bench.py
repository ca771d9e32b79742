"""OTLP/HTTP load benchmark: our own load generator (opentelemetry-proto + httpx) against
`evolution-store serve` running as a separate process.

    .venv/bin/python bench/otlp_bench.py                              # SQLite then Postgres
    .venv/bin/python bench/otlp_bench.py --db sqlite --encoding json --gzip
    .venv/bin/python bench/otlp_bench.py --db postgresql://postgres@127.0.0.1:5432/mydb

Each run starts a fresh server on a fresh database (SQLite file, or a scratch Postgres
database; a URL given with --db is used as is, counted by difference, and sent new trace ids
each run, so that `--runs N` measures a store as it grows), waits for
`/healthz`, measures idle RSS, then posts `--spans` agent-like spans (traces of 10 spans,
gen_ai/OpenInference attributes, ~500-byte input/output) as `ExportTraceServiceRequest`s of
`--batch` spans from `--concurrency` connections to `POST /v1/traces` on the OTLP port. The
bodies are built (and gzipped) before the clock starts, so the generator's own CPU is small,
but it shares the machine's cores with the server: its CPU time is printed too.

Figures per run: accept rate (spans / time until the last 200), durable rate (spans / time
until a COUNT on the database, issued right after the last 200, sees every span: a 200 means
committed, so the two should agree), request latency p50/p99, 503s retried (honouring
Retry-After), server CPU seconds, RSS sampled from /proc every 50 ms (idle after startup, peak
= the larger of the sampled peak and the kernel's VmHWM), both summed over the server and its
OTLP decode worker processes. The table shows medians over --runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from _common import (
    DEFAULT_POSTGRES_URL,
    BenchTrace,
    TraceFactory,
    batched,
    machine_note,
    median,
    percentile,
    postgres_reachable,
    print_table,
    remove_sqlite,
    scratch_postgres,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCOPE = {"name": "bench.agent", "version": "1.0"}
TAGS_KEY = "evolution.tags"
STATUS_OK = 1


# -- request bodies ------------------------------------------------------------------------


def _pb_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(_pb_value(item) for item in value)
        return out
    return AnyValue(string_value=str(value))


def _pb_attributes(attributes: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=_pb_value(value)) for key, value in attributes.items()]


def _json_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in proto3 JSON
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list | tuple):
        return {"arrayValue": {"values": [_json_value(item) for item in value]}}
    return {"stringValue": str(value)}


def _json_attributes(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": _json_value(value)} for key, value in attributes.items()]


def _group_by_resource(traces: Sequence[tuple[BenchTrace, list[Any]]]):
    """A batch's spans grouped by resource, like one exporter per agent process would send."""
    groups: dict[str, tuple[dict[str, Any], list[tuple[str, Any]]]] = {}
    for trace, spans in traces:
        key = trace.resource["service.name"]
        groups.setdefault(key, (trace.resource, []))[1].extend(
            (trace.trace_id, span) for span in spans
        )
    return groups.values()


def protobuf_body(traces: Sequence[tuple[BenchTrace, list[Any]]]) -> bytes:
    request = ExportTraceServiceRequest()
    for resource, spans in _group_by_resource(traces):
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(_pb_attributes(resource))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = SCOPE["name"]
        scope_spans.scope.version = SCOPE["version"]
        for trace_id, span in spans:
            scope_spans.spans.append(
                Span(
                    trace_id=bytes.fromhex(trace_id),
                    span_id=bytes.fromhex(span.span_id),
                    parent_span_id=bytes.fromhex(span.parent_span_id or ""),
                    name=span.name,
                    kind=span.kind,
                    start_time_unix_nano=span.start_time,
                    end_time_unix_nano=span.end_time,
                    attributes=_pb_attributes({**span.attributes, TAGS_KEY: span.tags}),
                    status=Status(code=STATUS_OK),
                )
            )
    return request.SerializeToString()


def json_body(traces: Sequence[tuple[BenchTrace, list[Any]]]) -> bytes:
    """OTLP/JSON: lowerCamelCase keys, hex ids, enums as integers, int64 as strings."""
    resource_spans = []
    for resource, spans in _group_by_resource(traces):
        items = []
        for trace_id, span in spans:
            item: dict[str, Any] = {
                "traceId": trace_id,
                "spanId": span.span_id,
                "name": span.name,
                "kind": span.kind,
                "startTimeUnixNano": str(span.start_time),
                "endTimeUnixNano": str(span.end_time),
                "attributes": _json_attributes({**span.attributes, TAGS_KEY: span.tags}),
                "status": {"code": STATUS_OK},
            }
            if span.parent_span_id:
                item["parentSpanId"] = span.parent_span_id
            items.append(item)
        resource_spans.append(
            {
                "resource": {"attributes": _json_attributes(resource)},
                "scopeSpans": [{"scope": dict(SCOPE), "spans": items}],
            }
        )
    return orjson.dumps({"resourceSpans": resource_spans})


@dataclass
class Payload:
    bodies: list[bytes]
    spans: int
    raw_bytes: int
    content_type: str
    gzip: bool


def build_payload(spans: int, batch: int, encoding: str, use_gzip: bool, seed: int = 7) -> Payload:
    factory = TraceFactory(seed=seed)
    flat = [(trace, span) for trace in factory.traces(spans) for span in trace.spans][:spans]
    encode = protobuf_body if encoding == "protobuf" else json_body
    bodies, raw = [], 0
    for chunk in batched(flat, batch):
        per_trace: dict[str, tuple[BenchTrace, list[Any]]] = {}
        for trace, span in chunk:
            per_trace.setdefault(trace.trace_id, (trace, []))[1].append(span)
        body = encode(list(per_trace.values()))
        raw += len(body)
        bodies.append(gzip.compress(body, compresslevel=6) if use_gzip else body)
    content_type = "application/x-protobuf" if encoding == "protobuf" else "application/json"
    return Payload(bodies, len(flat), raw, content_type, use_gzip)


# -- the server ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """The server and every process under it (its OTLP decode workers and their helper)."""
    tree, index = [pid], 0
    while index < len(tree):
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{tree[index]}/task"):
                with open(f"/proc/{tree[index]}/task/{task}/children") as handle:
                    tree.extend(int(child) for child in handle.read().split())
        index += 1
    return tree


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon in kB from /proc, summed over the server's process tree (empty
    once the server is gone). Summed VmHWM over-states the peak: each process's own peak."""
    values: dict[str, int] = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{member}/status") as handle:
            for line in handle:
                if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:")):
                    name, amount = line.split(":", 1)
                    values[name] = values.get(name, 0) + int(amount.split()[0])
    return values


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of the server's process tree."""
    ticks = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{member}/stat") as handle:
            fields = handle.read().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RssSampler(threading.Thread):
    """Reads the server's VmRSS (and RssAnon) every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []
        self.anon: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            status = proc_status(self.pid)
            if "VmRSS" in status:
                self.samples.append(status["VmRSS"])
                self.anon.append(status.get("RssAnon", 0))
            self._stop_event.wait(self.interval)

    def stop(self) -> list[int]:
        self._stop_event.set()
        self.join()
        return self.samples


class Server:
    """`evolution-store serve` as a child process on free ports."""

    def __init__(self, url: str, log_path: str) -> None:
        self.url = url
        self.api_port = free_port()
        self.otlp_port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout: float = 60.0) -> None:
        env = {k: v for k, v in os.environ.items() if k != "EVOLUTION_API_KEYS"}
        command = [
            sys.executable,
            "-m",
            "evolution_store",
            "serve",
            "--db",
            self.url,
            "--port",
            str(self.api_port),
            "--otlp-http-port",
            str(self.otlp_port),
            "--otlp-grpc-port",
            "0",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited at startup:\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get(f"{self.base}/healthz", timeout=2)
                    if response.status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"server not healthy after {timeout:.0f}s:\n{self.log_tail()}")

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.otlp_port}"

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        with open(self.log_path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])


# -- counting what is stored ---------------------------------------------------------------


async def count_spans(url: str) -> int:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1]
        if not os.path.exists(path):
            return 0
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        except sqlite3.OperationalError:  # no schema yet
            return 0
        finally:
            conn.close()
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        exists = await conn.fetchval("SELECT to_regclass('spans') IS NOT NULL")
        return await conn.fetchval("SELECT count(*) FROM spans") if exists else 0
    finally:
        await conn.close()


# -- one run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    accept_rate: float
    durable_rate: float
    p50_ms: float
    p99_ms: float
    retries: int
    idle_mb: float
    peak_mb: float
    peak_anon_mb: float
    after_mb: float
    server_cpu: float
    client_cpu: float
    stored: int
    expected: int
    errors: list[str] = field(default_factory=list)


async def post_all(
    base: str, payload: Payload, concurrency: int
) -> tuple[float, list[float], int, list[str]]:
    """Send every body; returns (seconds until the last 200, latencies ms, 503s, errors)."""
    headers = {"Content-Type": payload.content_type}
    if payload.gzip:
        headers["Content-Encoding"] = "gzip"
    pending = iter(payload.bodies)
    latencies: list[float] = []
    errors: list[str] = []
    retries = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:

        async def worker() -> None:
            nonlocal retries
            for body in pending:
                while True:
                    started = time.perf_counter()
                    response = await client.post("/v1/traces", content=body, headers=headers)
                    latencies.append((time.perf_counter() - started) * 1000)
                    if response.status_code in (429, 503):
                        retries += 1
                        await asyncio.sleep(_retry_after(response))
                        continue
                    if response.status_code != 200:
                        errors.append(f"{response.status_code}: {response.text[:200]}")
                    elif rejected := _rejected(response, payload.content_type):
                        errors.append(f"200 with {rejected} rejected spans")
                    break

        # Open the connections before the clock starts, as a long-running exporter would have.
        await asyncio.gather(*(client.get("/healthz") for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return elapsed, latencies, retries, errors


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "1")
    return float(value) if value.replace(".", "", 1).isdigit() else 1.0


def _rejected(response: httpx.Response, content_type: str) -> int:
    if not response.content:
        return 0
    if content_type == "application/json":
        partial = orjson.loads(response.content).get("partialSuccess") or {}
        return int(partial.get("rejectedSpans", 0))
    message = ExportTraceServiceResponse.FromString(response.content)
    return message.partial_success.rejected_spans


async def one_run(url: str, payload: Payload, args: argparse.Namespace, workdir: str):
    before = await count_spans(url)
    server = Server(url, os.path.join(workdir, "server.log"))
    try:
        await server.start()
        await asyncio.sleep(2.0)  # let startup (decode workers included) settle: then idle
        idle = RssSampler(server.pid)
        idle.start()
        await asyncio.sleep(1.0)
        idle_kb = median(idle.stop())
        sampler = RssSampler(server.pid)
        sampler.start()
        cpu_before = proc_cpu_seconds(server.pid)
        client_before = time.process_time()
        started = time.perf_counter()
        accept_seconds, latencies, retries, errors = await post_all(
            server.base, payload, args.concurrency
        )
        stored = await count_spans(url) - before
        durable_seconds = time.perf_counter() - started
        client_cpu = time.process_time() - client_before
        server_cpu = proc_cpu_seconds(server.pid) - cpu_before
        peak_kb = max(sampler.stop() or [0])
        peak_anon_kb = max(sampler.anon or [0])
        peak_kb = max(peak_kb, proc_status(server.pid).get("VmHWM", 0))
        await asyncio.sleep(2.0)
        after_kb = proc_status(server.pid).get("VmRSS", 0)
    finally:
        code = server.stop()
    if code not in (0, None):
        errors.append(f"server exited {code}:\n{server.log_tail()}")
    return RunResult(
        accept_rate=payload.spans / accept_seconds,
        durable_rate=payload.spans / durable_seconds if stored >= payload.spans else 0.0,
        p50_ms=percentile(latencies, 50),
        p99_ms=percentile(latencies, 99),
        retries=retries,
        idle_mb=idle_kb / 1024,
        peak_mb=peak_kb / 1024,
        peak_anon_mb=peak_anon_kb / 1024,
        after_mb=after_kb / 1024,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
        stored=stored,
        expected=payload.spans,
        errors=errors,
    )


async def runs_for(target: str, payload: Payload, args: argparse.Namespace) -> list[RunResult]:
    results = []
    for run in range(args.runs):
        if run and target not in ("sqlite", "postgres"):
            # A database given by URL keeps what earlier runs stored: new trace ids each run,
            # or the run would only resend duplicates. `--runs N` then measures a growing store.
            payload = build_payload(args.spans, args.batch, args.encoding, args.gzip, 7 + run)
        workdir = tempfile.mkdtemp(prefix="evolution-store-otlp-bench-")
        try:
            if target == "sqlite":
                path = os.path.join(workdir, "bench.db")
                result = await one_run(f"sqlite:///{path}", payload, args, workdir)
                remove_sqlite(path)
            elif target == "postgres":
                async with scratch_postgres(args.postgres_url, "bench_otlp") as url:
                    result = await one_run(url, payload, args, workdir)
            else:
                result = await one_run(target, payload, args, workdir)
        finally:
            for name in os.listdir(workdir):
                os.remove(os.path.join(workdir, name))
            os.rmdir(workdir)
        results.append(result)
        print(
            f"  {label(target)} run {run + 1}: accept {result.accept_rate:,.0f} spans/s, "
            f"durable {result.durable_rate:,.0f} spans/s, p50 {result.p50_ms:.0f} ms, "
            f"p99 {result.p99_ms:.0f} ms, 503s {result.retries}, RSS idle "
            f"{result.idle_mb:.0f} / peak {result.peak_mb:.0f} (anon {result.peak_anon_mb:.0f}) / "
            f"after {result.after_mb:.0f} MB, "
            f"CPU server {result.server_cpu:.1f} s / generator {result.client_cpu:.1f} s, "
            f"stored {result.stored:,}/{result.expected:,}",
            file=sys.stderr,
        )
        for error in result.errors[:5]:
            print(f"    error: {error}", file=sys.stderr)
    return results


def label(target: str) -> str:
    if target in ("sqlite", "postgres"):
        return target
    return "postgres (url)" if target.startswith("postgres") else "sqlite (url)"


def summary_row(target: str, results: list[RunResult]) -> list[str]:
    def med(name: str) -> float:
        return median([getattr(result, name) for result in results])

    stored = min(result.stored for result in results)
    expected = results[0].expected
    errors = sum(len(result.errors) for result in results)
    return [
        label(target),
        f"{med('accept_rate'):,.0f}",
        f"{med('durable_rate'):,.0f}",
        f"{med('p50_ms'):.0f}",
        f"{med('p99_ms'):.0f}",
        f"{sum(result.retries for result in results)}",
        f"{med('idle_mb'):.0f}",
        f"{med('peak_mb'):.0f} ({med('peak_anon_mb'):.0f})",
        f"{med('after_mb'):.0f}",
        f"{med('server_cpu'):.1f} / {med('client_cpu'):.1f}",
        "ok" if stored == expected and not errors else f"{stored:,}/{expected:,}, {errors} err",
    ]


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        default="sqlite,postgres",
        help="comma-separated: sqlite, postgres (scratch databases) or database URLs",
    )
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, metavar="URL")
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=512, help="spans per request")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent connections")
    parser.add_argument("--encoding", choices=("protobuf", "json"), default="protobuf")
    parser.add_argument("--gzip", action="store_true", help="Content-Encoding: gzip")
    parser.add_argument("--runs", type=int, default=3, help="runs per database (medians)")
    return parser.parse_args(argv)


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # keep the table after the per-run lines
    targets = [name.strip() for name in args.db.split(",") if name.strip()]
    if "postgres" in targets:
        reason = await postgres_reachable(args.postgres_url)
        if reason:
            print(f"Postgres skipped: {reason}")
            targets.remove("postgres")
    started = time.perf_counter()
    payload = build_payload(args.spans, args.batch, args.encoding, args.gzip)
    wire = sum(len(body) for body in payload.bodies)
    print(f"evolution-store OTLP/HTTP bench — {machine_note()}")
    print(
        f"{payload.spans:,} spans in {len(payload.bodies)} requests of {args.batch} "
        f"({args.encoding}: {payload.raw_bytes / 2**20:,.0f} MB"
        f"{f', gzip {wire / 2**20:,.0f} MB' if args.gzip else ''}), "
        f"{args.concurrency} connections; bodies built "
        f"in {time.perf_counter() - started:.1f} s before timing. The generator runs on the "
        "same cores as the server."
    )
    rows = [summary_row(target, await runs_for(target, payload, args)) for target in targets]
    print(f"\nMedians of {args.runs} runs (fresh server each run; fresh database but for a URL)")
    print_table(
        [
            "database",
            "accept spans/s",
            "durable spans/s",
            "p50 ms",
            "p99 ms",
            "503s",
            "idle MB",
            "peak MB (anon)",
            "after MB",
            "CPU s srv/gen",
            "stored",
        ],
        rows,
    )
    print(
        "accept = spans / time to the last 200; durable = spans / time until a COUNT on the "
        "database saw them all (200 means committed). RSS and CPU of the server process and its "
        "OTLP decode workers, summed; peak includes "
        "VmHWM; anon = sampled peak RssAnon (the rest is SQLite's mmap of the file and shared "
        "libraries). Targets (100k spans): durable >= 20,000 spans/s SQLite, >= 30,000 Postgres; "
        "peak RSS <= 300 MB; idle RSS <= 150 MB."
    )


if __name__ == "__main__":
    asyncio.run(main())
