"""Export benchmark: an agent's LLM calls as fine-tuning datasets, from a SQLite store of
1,000,000 LLM spans. Target (issue 21): memory stays flat whatever the store's size.

    .venv/bin/python bench/export_bench.py                      # 1,000,000 spans
    .venv/bin/python bench/export_bench.py --spans 100000       # the same at a tenth
    .venv/bin/python bench/export_bench.py --db /tmp/export.db --formats trl-sft,trl-dpo

Load (not timed, printed): `--spans` chat spans in the GenAI conventions (a user question in
`gen_ai.input.messages`, an answer in `gen_ai.output.messages`, ~300 bytes of messages), ten
to a task, through `EvolutionStore.ingest` in batches, with a `reward` linked to every other
span by its id in the same call. Questions come from a pool of `--prompts` (20,000), answers
from four per question, so `trl-dpo` has real pairs to find. A file given with `--db` is
kept, and reused when it holds the same load (a sidecar `.json` says).

Measure: each format is exported in a fresh process (so its peak RSS is the export's, not the
loader's): seconds, records, file size, the RSS after opening the store (baseline) and the
peak (ru_maxrss, and psutil sampled every 20 ms). "Flat" means the peak above the baseline
does not grow with `--spans`, except `trl-dpo`'s, which holds each distinct prompt's distinct
rewarded completions (it grows with `--prompts`, not with spans).
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
from typing import Any

from _common import (
    RssSampler,
    forget_load,
    holds_load,
    machine_note,
    print_table,
    remember_load,
    remove_sqlite,
)

from evolution_store import EvolutionStore
from evolution_store.models import RewardIn, SpanRecord

AGENT = "helper"
FORMATS = ("trl-sft", "trl-dpo", "trl-kto", "triplets", "verl")
SPANS_PER_TASK = 10
START = 1_750_000_000_000_000_000


def chat_span(index: int, rng: random.Random, prompts: int) -> SpanRecord:
    question = rng.randrange(prompts)
    answer = rng.randrange(4)
    user = f"Question {question}: what should the agent do about ticket {question * 7919 % 10007}?"
    reply = f"Answer {answer} to question {question}: " + "escalate, then reply politely. " * 3
    return SpanRecord(
        trace_id=f"{index // SPANS_PER_TASK + 1:032x}",
        span_id=f"{index + 1:016x}",
        name="chat",
        start_time=START + index * 1000,
        end_time=START + index * 1000 + 500,
        attributes={
            "gen_ai.agent.name": AGENT,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "m1",
            "evolution.task.id": f"task-{index // SPANS_PER_TASK}",
            "gen_ai.input.messages": json.dumps([{"role": "user", "content": user}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "content": reply}]),
        },
    )


async def load(url: str, spans: int, prompts: int, seed: int) -> float:
    store = await EvolutionStore.open(url)
    rng = random.Random(seed)
    clock = time.perf_counter()
    starts = iter(range(0, spans, 2000))
    try:

        async def ingest() -> None:
            for first in starts:
                records = [
                    chat_span(i, rng, prompts) for i in range(first, min(first + 2000, spans))
                ]
                rewards = [
                    RewardIn(value=round(rng.random(), 2), span_id=r.span_id, trace_id=r.trace_id)
                    for r in records[::2]
                ]
                await store.ingest(records, rewards)

        await asyncio.gather(*(ingest() for _ in range(4)))
    finally:
        await store.close()
    return time.perf_counter() - clock


async def export_one(url: str, fmt: str, out: str) -> dict[str, Any]:
    from evolution_store.learn.export import export

    store = await EvolutionStore.open(url, migrate=False)
    sampler = RssSampler()
    try:
        clock = time.perf_counter()
        records = await export(store, fmt, agent=AGENT, out=out, min_reward=0.5)
        seconds = time.perf_counter() - clock
    finally:
        await store.close()
    return {
        "format": fmt,
        "seconds": seconds,
        "records": records,
        "file_mb": os.path.getsize(out) / 2**20,
        "baseline_mb": sampler.baseline / 2**20,
        "sampled_peak_mb": sampler.stop() / 2**20,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--prompts", type=int, default=20_000, help="distinct questions")
    parser.add_argument("--db", help="SQLite file to keep (and reuse when it holds the load)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated")
    parser.add_argument(
        "--export", nargs=3, metavar=("URL", "FORMAT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.export:  # the child process
        print(json.dumps(asyncio.run(export_one(*args.export))))
        return

    print(machine_note())
    workdir = tempfile.mkdtemp(prefix="export-bench-")
    path = args.db or os.path.join(workdir, "export.db")
    url = f"sqlite:///{path}"
    wanted = {"spans": args.spans, "prompts": args.prompts, "seed": args.seed, "v": 1}
    if holds_load(path, wanted):
        print(f"reusing {path}: {args.spans:,} LLM spans")
    else:
        remove_sqlite(path)
        print(f"loading {args.spans:,} LLM spans into {path} ...")
        print(f"loaded in {asyncio.run(load(url, args.spans, args.prompts, args.seed)):.1f} s")
        remember_load(path, wanted)

    rows = []
    for fmt in args.formats.split(","):
        out = os.path.join(workdir, f"out.{fmt}")
        command = [sys.executable, __file__, "--export", url, fmt, out]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"exporting {fmt} failed")
        found = json.loads(done.stdout.strip().splitlines()[-1])
        os.remove(out)
        rows.append(
            [
                fmt,
                f"{found['records']:,}",
                f"{found['seconds']:.1f}",
                f"{found['records'] / found['seconds']:,.0f}",
                f"{found['file_mb']:,.0f}",
                f"{found['baseline_mb']:.0f}",
                f"{found['peak_mb']:.0f}",
                f"{found['peak_mb'] - found['baseline_mb']:.0f}",
            ]
        )
    print(f"{args.spans:,} LLM spans, {args.prompts:,} distinct prompts, min_reward 0.5")
    print_table(
        ["format", "records", "s", "records/s", "file MB", "base MB", "peak MB", "peak-base"],
        rows,
    )
    if args.db is None:
        forget_load(path)
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
