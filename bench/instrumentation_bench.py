"""What the client SDK costs an agent: per-call overhead of `@track_evolution`, and the round
trip of `emit_reward` to a live server.

    .venv/bin/python bench/instrumentation_bench.py                     # 1-2 min
    .venv/bin/python bench/instrumentation_bench.py --rounds 15 --calls 50000 --rewards 2000
    .venv/bin/python bench/instrumentation_bench.py --only decorator

**Decorator.** One process, a trivial function (`answer(question, k=2)` returns its argument),
called `--calls` times per segment, sync and async, in these variants:

- undecorated: the function alone (the loop's own cost);
- bare OTel span: the hand-written alternative, `with tracer.start_as_current_span(...)`, on a
  plain SDK TracerProvider with a BatchSpanProcessor around a no-op exporter — the baseline;
- bare OTel span on the configured provider: the same, on the provider `configure()` set up
  (our EvolutionSpanProcessor in front of the same BatchSpanProcessor and exporter), which
  separates what the processor adds from what the decorator adds;
- `@track_evolution` with `capture_io=True` (arguments and result stored as JSON) and `False`.

Each round runs every variant once, in a rotated order, after a `gc.collect()`; the figures are
medians over `--rounds`, and the ratio is the median over rounds of variant / baseline in the
same round, so load on the (shared) machine hits both sides of each ratio. Target: ≤ 2×.

**emit_reward.** Starts `python -m evolution_store serve --db sqlite:///<tmp>/bench.db --port P
--otlp-http-port 0 --otlp-grpc-port 0`, waits for `/healthz`, posts one trace, calls
`configure(endpoint=…)`, warms up, then times `--rewards` calls of each kind, interleaved: a
reward on an existing span (resolved at once), a reward on a span that does not exist yet
(stored pending), a `gen_ai.conversation.id` link selector, and — to separate the SDK from the
server — the same JSON posted with a bare `httpx.Client`. Each call returns after the server
has committed. Latency p50/p95/p99 in ms; target p50 ≤ 3 ms (Agent Lightning's emit_reward
measured 6.8 ms on the machine this was written on). The server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from _common import machine_note, median, percentile, print_table
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import instrumentation
from instrumentation import emit_reward, track_evolution

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTION = "What is the weather in Paris?"


class NullExporter(SpanExporter):
    """Accepts and drops every batch: the bench measures the caller's thread, not the wire."""

    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


# -- decorator overhead ----------------------------------------------------------------------


def build_variants() -> tuple[dict[str, tuple[Callable, Callable]], Any]:
    """{label: (sync function, async function)} and the session to shut down afterwards."""
    plain_provider = TracerProvider()
    plain_provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    plain_tracer = plain_provider.get_tracer("bench")

    configured = TracerProvider()
    session = instrumentation.configure(
        span_exporter=NullExporter(), tracer_provider=configured, set_global=False
    )
    configured_tracer = configured.get_tracer("bench")

    def undecorated(question: str, k: int = 1) -> str:
        return question

    async def undecorated_async(question: str, k: int = 1) -> str:
        return question

    def span_on(tracer: Any) -> tuple[Callable, Callable]:
        def bare(question: str, k: int = 1) -> str:
            with tracer.start_as_current_span("answer"):
                return question

        async def bare_async(question: str, k: int = 1) -> str:
            with tracer.start_as_current_span("answer"):
                return question

        return bare, bare_async

    def tracked(capture_io: bool) -> tuple[Callable, Callable]:
        decorate = track_evolution("answer", capture_io=capture_io)
        return decorate(undecorated), decorate(undecorated_async)

    variants = {
        "undecorated": (undecorated, undecorated_async),
        "bare OTel span (baseline)": span_on(plain_tracer),
        "bare OTel span, configured provider": span_on(configured_tracer),
        "@track_evolution capture_io=True": tracked(True),
        "@track_evolution capture_io=False": tracked(False),
    }
    return variants, (session, plain_provider)


def time_sync(fn: Callable, calls: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(QUESTION, k=2)
    return (time.perf_counter_ns() - start) / calls / 1000


async def _time_async(fn: Callable, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        await fn(QUESTION, k=2)
    return (time.perf_counter_ns() - start) / calls / 1000


def bench_decorator(rounds: int, calls: int) -> None:
    variants, (session, plain_provider) = build_variants()
    labels = list(variants)
    baseline = labels[1]
    loop = asyncio.new_event_loop()
    for fn_sync, fn_async in variants.values():  # warm-up: first calls build caches
        time_sync(fn_sync, 1000)
        loop.run_until_complete(_time_async(fn_async, 1000))
    timings: dict[tuple[str, str], list[float]] = {
        (label, mode): [] for label in labels for mode in ("sync", "async")
    }
    for index in range(rounds):
        order = labels[index % len(labels) :] + labels[: index % len(labels)]
        for label in order:
            fn_sync, fn_async = variants[label]
            timings[label, "sync"].append(time_sync(fn_sync, calls))
            gc.collect()
            timings[label, "async"].append(loop.run_until_complete(_time_async(fn_async, calls)))
    loop.close()
    session.shutdown()
    plain_provider.shutdown()

    def ratio(label: str, mode: str) -> str:
        pairs = zip(timings[label, mode], timings[baseline, mode], strict=True)
        return f"{median([a / b for a, b in pairs]):.2f}×"

    rows = [
        [
            label,
            f"{median(timings[label, 'sync']):.2f}",
            ratio(label, "sync"),
            f"{median(timings[label, 'async']):.2f}",
            ratio(label, "async"),
        ]
        for label in labels
    ]
    print(f"\nper-call cost, µs (median of {rounds} interleaved rounds × {calls:,} calls)")
    print_table(["variant", "sync µs", "× base", "async µs", "× base"], rows)


# -- emit_reward round trip ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(db_path: str, log_path: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        sys.executable, "-m", "evolution_store", "serve", "--db", f"sqlite:///{db_path}",
        "--port", str(port), "--otlp-http-port", "0", "--otlp-grpc-port", "0",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("EVOLUTION_API_KEYS",)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop_server(process)
    with open(log_path, errors="replace") as log:
        raise RuntimeError(f"server did not become ready:\n{log.read()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def bench_emit_reward(count: int, warmup: int) -> None:
    with tempfile.TemporaryDirectory(prefix="evo-instr-bench-") as tmp:
        process, url = start_server(os.path.join(tmp, "bench.db"), os.path.join(tmp, "server.log"))
        try:
            rows = _time_rewards(url, count, warmup)
        finally:
            stop_server(process)
    print(f"\nemit_reward round trip to a live server (SQLite), ms, {count:,} calls each")
    print_table(["call", "p50", "p95", "p99", "mean"], rows)


def _time_rewards(url: str, count: int, warmup: int) -> list[list[str]]:
    trace_id, span_id, conversation = uuid.uuid4().hex, uuid.uuid4().hex[:16], "conv-bench"
    now = time.time_ns()
    span = {
        "trace_id": trace_id, "span_id": span_id, "name": "invoke_agent", "start_time": now,
        "end_time": now + 1_000_000, "attributes": {"gen_ai.conversation.id": conversation},
    }  # fmt: skip
    httpx.post(url + "/api/v1/spans", json=span, timeout=10).raise_for_status()
    session = instrumentation.configure(endpoint=url, service_name="bench")
    raw = httpx.Client(base_url=url + "/api/v1", timeout=10)

    def raw_post() -> None:
        body = {"value": 1.0, "name": "raw", "span_id": span_id, "trace_id": trace_id}
        raw.post("/rewards", json=body).raise_for_status()

    calls: dict[str, Callable[[], Any]] = {
        "emit_reward(span_id=…)": lambda: emit_reward(1.0, span_id=span_id, trace_id=trace_id),
        "emit_reward(span_id=<not yet>)": lambda: emit_reward(0.5, span_id=uuid.uuid4().hex[:16]),
        "emit_reward(links=…)": lambda: emit_reward(
            0.7, links={"gen_ai.conversation.id": conversation}
        ),
        "httpx POST /rewards (no SDK)": raw_post,
    }
    try:
        for call in calls.values():
            for _ in range(warmup):
                call()
        samples: dict[str, list[float]] = {label: [] for label in calls}
        for _ in range(count):
            for label, call in calls.items():
                start = time.perf_counter_ns()
                call()
                samples[label].append((time.perf_counter_ns() - start) / 1e6)
    finally:
        raw.close()
        session.shutdown()
    return [
        [
            label,
            f"{percentile(values, 50):.2f}",
            f"{percentile(values, 95):.2f}",
            f"{percentile(values, 99):.2f}",
            f"{sum(values) / len(values):.2f}",
        ]
        for label, values in samples.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="interleaved decorator rounds")
    parser.add_argument("--calls", type=int, default=10_000, help="calls per variant per round")
    parser.add_argument("--rewards", type=int, default=500, help="timed calls per reward kind")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per reward kind")
    parser.add_argument("--only", choices=["decorator", "reward"], help="run one half")
    args = parser.parse_args()

    executable = os.path.relpath(sys.executable, PROJECT)
    print("command:", shlex.join([executable, os.path.relpath(__file__, PROJECT), *sys.argv[1:]]))
    print(machine_note())
    if args.only in (None, "decorator"):
        bench_decorator(args.rounds, args.calls)
    if args.only in (None, "reward"):
        bench_emit_reward(args.rewards, args.warmup)


if __name__ == "__main__":
    main()
