"""Lab technician benchmark: `analyze` over 100,000 executions (800,000 spans) on SQLite.

    .venv/bin/python bench/analysis_bench.py                  # 100,000 executions
    .venv/bin/python bench/analysis_bench.py --quick          # 10,000 executions
    .venv/bin/python bench/analysis_bench.py --db /tmp/analysis.db   # kept and reused

Load (not timed, printed): executions of five agents and ten task names, each a root span,
three chat spans, two to four tool spans (one of three tools); 8 % of runs fail on a tool
whose error message carries a request id and a number (so every message is distinct and the
grouping has to merge them). Spans name their task and execution, which the store creates
on the fly; the root's status settles the execution.

Measure: `analyze(store)` over the whole load, end to end, in a fresh process (so its peak
RSS is the analysis's own, not the loader's): wall time and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time

from _common import machine_note, remove_sqlite

from evolution_store import EvolutionStore
from evolution_store.models import SpanRecord

AGENTS = ("planner", "researcher", "coder", "critic", "summarizer")
TOOLS = ("web_search", "read_file", "run_python")
BATCH = 5_000
MS = 1_000_000


def run_spans(index: int, rng: random.Random, now: int) -> list[SpanRecord]:
    task, execution = f"t{index}", f"t{index}-e1"
    agent = AGENTS[index % len(AGENTS)]
    trace = f"{index + 1:032x}"
    common = {"gen_ai.agent.name": agent, "evolution.task.id": task}
    common["evolution.execution.id"] = execution
    failed = rng.random() < 0.08
    start = now + index * 1000
    root = f"{index + 1:08x}00000000"
    spans = []
    offset = 0
    for step in range(3 + rng.randint(2, 4)):
        is_chat = step < 3
        ms = rng.randint(50, 900) if is_chat else rng.randint(5, 400)
        name = "chat" if is_chat else f"tool.{TOOLS[step % 3]}"
        attributes = dict(common)
        attributes["gen_ai.operation.name"] = "chat" if is_chat else "execute_tool"
        error = failed and step == 3
        message = f"request req-{rng.getrandbits(40):x} failed after {rng.randint(1, 60)} s"
        spans.append(
            SpanRecord(
                trace_id=trace,
                span_id=f"{index + 1:08x}{step + 1:08x}",
                parent_span_id=root,
                name=name,
                start_time=start + offset,
                end_time=start + offset + ms * MS,
                status_code="error" if error else "ok",
                status_message=message if error else "",
                attributes=attributes,
            )
        )
        offset += ms * MS
    spans.append(
        SpanRecord(
            trace_id=trace,
            span_id=root,
            name="invoke_agent",
            start_time=start,
            end_time=start + offset,
            status_code="error" if failed else "ok",
            attributes=dict(common),
        )
    )
    return spans


async def load(url: str, executions: int) -> float:
    rng = random.Random(7)
    now = time.time_ns()
    started = time.perf_counter()
    async with await EvolutionStore.open(url) as store:
        spans: list[SpanRecord] = []
        for index in range(executions):
            spans.extend(run_spans(index, rng, now))
            if len(spans) >= BATCH:
                await store.ingest(spans)
                spans = []
        if spans:
            await store.ingest(spans)
    return time.perf_counter() - started


async def measure(url: str) -> dict:
    from evolution_store.learn import analyze

    async with await EvolutionStore.open(url) as store:
        started = time.perf_counter()
        report = await analyze(store)
        seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "executions": report.executions["total"],
        "operations": len(report.operations),
        "error_groups": len(report.errors),
        "top": report.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 executions")
    parser.add_argument("--db", help="SQLite file to load (kept); default: a temporary one")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(asyncio.run(measure(args.measure))))
        return
    executions = 10_000 if args.quick else args.executions
    path = args.db or os.path.join(tempfile.mkdtemp(), "analysis.db")
    url = f"sqlite:///{path}"
    if not os.path.exists(path):
        seconds = asyncio.run(load(url, executions))
        print(f"loaded {executions:,} executions in {seconds:.1f} s into {path}")
    child = subprocess.run(
        [sys.executable, __file__, "--measure", url], capture_output=True, text=True, check=True
    )
    print(machine_note())
    print(json.dumps(json.loads(child.stdout), indent=2))
    if not args.db:
        remove_sqlite(path)


if __name__ == "__main__":
    main()
