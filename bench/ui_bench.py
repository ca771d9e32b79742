"""Dashboard benchmark: each page's server time with 1 M spans stored (target, issue 22:
≤ 300 ms p50), and how fast a 2,000-span trace's waterfall paints in headless Chromium.

    .venv/bin/python bench/ui_bench.py                       # 1 M spans, scratch SQLite file
    .venv/bin/python bench/ui_bench.py --db /tmp/ui.db       # keep the filled file; reuse it
    .venv/bin/python bench/ui_bench.py --spans 100000 --requests 10 --no-browser

Load (not timed, printed): `--spans` agent-like spans (`_common.TraceFactory`: five agents,
traces of ten spans with chat and tool spans, tags, ~500-byte texts), a reward on one chat
span of every trace, one 2,000-span trace, a few prompt versions (one approved: a marker)
and patterns, through `EvolutionStore.ingest` in batches of 10,000 — the store's own fast
path. A file given with `--db` is kept, and reused when it holds the same load (a sidecar
`.json` says).

Server time: every page's HTML through the app in process (httpx's ASGI transport, so no
socket and no browser: the time is the server's), `--requests` times each after one
warm-up, p50 and p95. First paint: the big trace's page from `evolution-store serve` in
Chromium (Playwright, the system executable), the Performance API's
`first-contentful-paint`, then the frames while it scrolls from top to bottom.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import store_bench
from _common import TraceFactory, machine_note, percentile, print_table, remove_sqlite

from api.app import create_app
from evolution_store import EvolutionStore
from evolution_store.config import Settings
from evolution_store.models import RewardIn, SpanRecord
from evolution_store.registry_models import ApproveIn, PromptIn

BATCH = 10_000
BIG_TRACE = 2_000
LOAD_VERSION = 1


def records_of(trace: Any) -> list[SpanRecord]:
    """The trace's spans as `store_bench` writes them, one root in seven failed."""
    records = store_bench.records_of(trace)
    if int(trace.trace_id[:4], 16) % 7 == 0:
        records[0] = records[0].model_copy(update={"status_code": "error"})
    return records


def big_trace(rng: random.Random, start: int) -> list[SpanRecord]:
    """A 2,000-span trace: a root, 40 steps, each with 49 children (chat and tool calls)."""
    trace_id = f"{rng.getrandbits(128):032x}"
    root = f"{rng.getrandbits(64):016x}"
    spans = [
        SpanRecord(
            trace_id=trace_id,
            span_id=root,
            name="invoke_agent planner",
            start_time=start,
            end_time=start + 600 * 10**9,
            attributes={"gen_ai.agent.name": "planner"},
        )
    ]
    at = start
    while len(spans) < BIG_TRACE:
        step = f"{rng.getrandbits(64):016x}"
        spans.append(
            SpanRecord(
                trace_id=trace_id,
                span_id=step,
                parent_span_id=root,
                name=f"step {len(spans)}",
                start_time=at,
                end_time=at + 14 * 10**9,
                attributes={"gen_ai.agent.name": "planner"},
            )
        )
        for _ in range(min(49, BIG_TRACE - len(spans))):
            at += 250_000_000
            spans.append(
                SpanRecord(
                    trace_id=trace_id,
                    span_id=f"{rng.getrandbits(64):016x}",
                    parent_span_id=step,
                    name="chat gpt-4o-mini",
                    start_time=at,
                    end_time=at + 200_000_000,
                    status_code="error" if rng.random() < 0.02 else "ok",
                    attributes={
                        "gen_ai.agent.name": "planner",
                        "gen_ai.operation.name": "chat",
                        "gen_ai.request.model": "gpt-4o-mini",
                        "gen_ai.usage.input_tokens": rng.randint(100, 2000),
                        "gen_ai.usage.output_tokens": rng.randint(10, 400),
                    },
                )
            )
    return spans


async def load(store: EvolutionStore, spans: int) -> dict[str, Any]:
    factory = TraceFactory(seed=22)
    loaded = 0
    pending: list[SpanRecord] = []
    rewards: list[RewardIn] = []
    sample: dict[str, Any] = {}
    started = time.perf_counter()
    for trace in factory.traces(spans - BIG_TRACE):
        records = records_of(trace)
        pending += records
        chat = records[1]
        rewards.append(
            RewardIn(
                name="quality",
                value=random.random(),
                span_id=chat.span_id,
                trace_id=chat.trace_id,
                tags=[trace.experiment],
            )
        )
        sample = {"trace": trace.trace_id, "span": chat.span_id}
        if len(pending) >= BATCH:
            await store.ingest(pending, rewards)
            loaded += len(pending)
            pending, rewards = [], []
            if loaded % 100_000 < BATCH:
                print(f"  {loaded:,} spans, {time.perf_counter() - started:.0f} s", flush=True)
    big = big_trace(random.Random(5), factory.clock + 10**9)
    await store.ingest(pending + big, rewards)
    seed, _ = await store.create_prompt(
        PromptIn(agent="planner", content="Plan {{ x }}.", status="candidate")
    )
    await store.approve_prompt(seed["id"], ApproveIn(), approved_by="bench")
    for i in range(20):
        await store.create_prompt(
            PromptIn(
                agent="planner",
                content=f"Plan {{{{ x }}}} ({i}).",
                parent_ids=[seed["id"]],
                status="candidate",
                created_by="apo",
                note=f"apo run bench: mutation {i}",
                fitness={"success": random.random(), "tokens": random.randint(100, 900), "n": 30},
            )
        )
    return {
        "sample": sample,
        "big_trace": big[0].trace_id,
        "big_span": big[5].span_id,
        "load_s": time.perf_counter() - started,
    }


def page_paths(meta: dict[str, Any], task_id: str) -> list[str]:
    trace, span, big = meta["sample"]["trace"], meta["sample"]["span"], meta["big_trace"]
    return [
        "/",
        "/agents/planner",
        "/tasks",
        "/tasks?agent=planner",
        "/tasks?status=succeeded&tag=exp-07",
        f"/tasks/{task_id}",
        f"/traces/{trace}",
        f"/traces/{trace}?span={span}",
        f"/traces/{big}",
        f"/traces/{big}?span={meta['big_span']}",
        "/rewards",
        "/rewards?group_by=agent&tag=exp-07",
        "/patterns",
        "/prompts?agent=planner",
    ]


async def time_pages(store: EvolutionStore, url: str, meta: dict[str, Any], requests: int):
    app = create_app(Settings(store_url=url, api_keys=""), store=store)
    rows = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            task_id = (await store.get_span(meta["sample"]["span"]))["task_id"]
            for path in page_paths(meta, task_id):
                response = await client.get(path)  # warm-up
                assert response.status_code == 200, (path, response.text[:300])
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    response = await client.get(path)
                    times.append((time.perf_counter() - started) * 1000)
                rows.append(
                    (
                        path[:60],
                        f"{percentile(times, 50):.0f}",
                        f"{percentile(times, 95):.0f}",
                        f"{len(response.content) / 1024:.0f}",
                    )
                )
    return rows


def first_paint(url: str, trace_id: str) -> dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from browser import chromium

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "evolution_store",
            "serve",
            "--db",
            url,
            "--port",
            str(port),
            "--otlp-http-port",
            "0",
            "--otlp-grpc-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "EVOLUTION_API_KEYS"},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        results: dict[str, list[float]] = {"fcp": [], "dcl": [], "frame": [], "worst": []}
        with chromium() as browser:
            for _ in range(5):
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.goto(f"{base}/traces/{trace_id}")
                timing = page.evaluate("""() => new Promise(done => {
                    new PerformanceObserver((list, observer) => {
                        observer.disconnect();
                        const nav = performance.getEntriesByType('navigation')[0];
                        done({fcp: list.getEntries()[0].startTime,
                              dcl: nav.domContentLoadedEventEnd});
                    }).observe({type: 'paint', buffered: true});
                })""")
                frames = page.evaluate("""() => new Promise(done => {
                    const times = []; let last = performance.now(); const steps = 120;
                    const height = document.documentElement.scrollHeight; let i = 0;
                    function step(now) {
                        times.push(now - last); last = now;
                        window.scrollTo(0, height * (++i) / steps);
                        if (i < steps) requestAnimationFrame(step); else done(times.slice(1));
                    }
                    requestAnimationFrame(step);
                })""")
                results["fcp"].append(timing["fcp"])
                results["dcl"].append(timing["dcl"])
                results["frame"].append(percentile(frames, 50))
                results["worst"].append(max(frames))
                page.context.close()
        return {key: percentile(values, 50) for key, values in results.items()}
    finally:
        server.terminate()
        server.wait(30)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans to store")
    parser.add_argument("--db", help="SQLite file to keep and reuse (default: a scratch file)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per page")
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium paint")
    return parser.parse_args()


async def measure_pages(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Fill (or reuse) the store, time every page, print; returns the URL and the load."""

    path = args.db or os.path.join(tempfile.mkdtemp(prefix="ui-bench-"), "ui.db")
    url = f"sqlite:///{path}"
    sidecar = Path(path + ".json")
    wanted = {"spans": args.spans, "version": LOAD_VERSION}
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    print(machine_note())
    if meta.get("load") != wanted or not os.path.exists(path):
        remove_sqlite(path)
        print(f"loading {args.spans:,} spans into {path}")
        async with await EvolutionStore.open(url) as store:
            meta = {"load": wanted, **(await load(store, args.spans))}
        sidecar.write_text(json.dumps(meta))
        print(f"loaded in {meta['load_s']:.0f} s; {os.path.getsize(path) / 2**20:,.0f} MB")
    else:
        print(f"reusing {path} ({args.spans:,} spans)")

    async with await EvolutionStore.open(url) as store:
        rows = await time_pages(store, url, meta, args.requests)
    print(f"\nserver time per page, {args.requests} requests each (ms), HTML size (KiB)")
    print_table(("page", "p50 ms", "p95 ms", "KiB"), rows)

    return url, meta


def main() -> None:
    args = parse_args()
    url, meta = asyncio.run(measure_pages(args))
    try:
        if not args.no_browser:
            # Playwright's sync API runs outside any event loop.
            paint = first_paint(url, meta["big_trace"])
            print(f"\n{BIG_TRACE:,}-span trace in headless Chromium (median of 5 loads):")
            print_table(
                ("first contentful paint", "DOMContentLoaded", "scroll frame p50", "worst frame"),
                [
                    (
                        f"{paint['fcp']:.0f} ms",
                        f"{paint['dcl']:.0f} ms",
                        f"{paint['frame']:.1f} ms",
                        f"{paint['worst']:.0f} ms",
                    )
                ],
            )
    finally:
        if not args.db:
            remove_sqlite(url.removeprefix("sqlite:///"))


if __name__ == "__main__":
    main()
