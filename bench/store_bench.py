"""Store benchmark: batch span insert through `EvolutionStore` beside a raw baseline, and the
two reads learners lean on (one trace's spans, rewards by tag) on a large database.

    .venv/bin/python bench/store_bench.py                 # SQLite + Postgres, 100k-span reads
    .venv/bin/python bench/store_bench.py --full          # reads at 1,000,000 spans
    .venv/bin/python bench/store_bench.py --backends sqlite --runs 5

Insert: `--insert-spans` agent-like spans (traces of 10 spans, gen_ai attributes, ~500-byte
input/output, 3 tags) go through `store.ingest` as batches of `--batch` from `--concurrency`
concurrent tasks, so the writer group-commits them; the clock stops when every call has
returned, i.e. every span is committed. The raw baseline, in the same run, inserts the very rows
the store wrote (read back from it: same width) into a table built from the store's own DDL
(same indexes), with the same PRAGMAs and the store's mean transaction size: SQLite
`executemany`, Postgres `COPY` straight into the indexed table. The store does more than the
baseline (tags and attribute-index rows, tasks, executions, sequence numbers, reward
resolution), so the ratio is the price of all that.

Reads: load `--spans` spans through the store, add `--rewards` rewards (default one per 50
spans; tagged with one of 50
experiment tags, targeting a span, a trace, or a conversation-id link selector), then time
`list_spans(trace_id=…)` and `list_rewards(tag=…, limit=100)` for random traces and tags
(warm cache, after a few untimed queries). Figures are medians of `--runs` for inserts; p50/p95
over `--queries` for reads. The machine is small and shared: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from _common import (
    DEFAULT_POSTGRES_URL,
    EXPERIMENT_TAGS,
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
    spread,
)

from evolution_store import EvolutionStore
from evolution_store.backends.sqlite import PRAGMAS, apply_pragmas
from evolution_store.models import RewardIn, SpanRecord
from evolution_store.queries import RewardQuery, SpanQuery

#: spans generated and loaded at a time when building the read database (bounds memory)
LOAD_CHUNK = 100 * 512


def records_of(trace: BenchTrace) -> list[SpanRecord]:
    return [
        SpanRecord(
            trace_id=trace.trace_id,
            span_id=span.span_id,
            parent_span_id=span.parent_span_id,
            name=span.name,
            kind="client" if span.kind == 3 else "internal",
            start_time=span.start_time,
            end_time=span.end_time,
            status_code="ok",
            attributes=span.attributes,
            resource=trace.resource,
            scope={"name": "bench.agent", "version": "1.0"},
            tags=list(span.tags),
        )
        for span in trace.spans
    ]


def make_records(factory: TraceFactory, spans: int) -> tuple[list[SpanRecord], list[BenchTrace]]:
    traces = list(factory.traces(spans))
    records = [record for trace in traces for record in records_of(trace)]
    return records, traces


async def drive(
    store: EvolutionStore, batches: Sequence[Sequence[SpanRecord]], workers: int
) -> tuple[float, int]:
    """Ingest every batch from `workers` concurrent tasks. Returns (seconds, accepted)."""
    pending = iter(batches)
    accepted = 0

    async def worker() -> None:
        nonlocal accepted
        for batch in pending:  # one shared iterator: each batch is taken once
            result = await store.ingest(batch)
            accepted += result.accepted

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - started, accepted


# -- insert throughput ---------------------------------------------------------------------


async def insert_run(url: str, args: argparse.Namespace, run: int) -> dict[str, float]:
    records, _ = make_records(TraceFactory(seed=100 + run), args.insert_spans)
    records = records[: args.insert_spans]
    store = await EvolutionStore.open(url)
    try:
        groups_before = store.writer.groups_committed
        seconds, accepted = await drive(store, batched(records, args.batch), args.concurrency)
        groups = store.writer.groups_committed - groups_before
    finally:
        await store.close()
    if accepted != len(records):
        raise SystemExit(f"store accepted {accepted} of {len(records)} spans")
    return {"rate": len(records) / seconds, "group": len(records) / max(groups, 1)}


def raw_sqlite_baseline(store_path: str, raw_path: str, rows: int, txn: int) -> float:
    """rows/s of plain sqlite3 executemany of the store's own rows into a same-DDL table."""
    source = sqlite3.connect(store_path)
    try:
        ddl = [
            sql
            for (sql,) in source.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'spans' AND sql IS NOT NULL "
                "ORDER BY type = 'table' DESC"
            )
        ]
        columns = [row[1] for row in source.execute("PRAGMA table_info(spans)")]
        names = ", ".join(f'"{name}"' for name in columns)
        data = source.execute(f"SELECT {names} FROM spans ORDER BY pk LIMIT ?", (rows,)).fetchall()
    finally:
        source.close()
    remove_sqlite(raw_path)
    target = sqlite3.connect(raw_path, isolation_level=None)
    try:
        apply_pragmas(target)
        for sql in ddl:
            target.execute(sql)
        marks = ", ".join("?" for _ in columns)
        insert = f"INSERT INTO spans ({names}) VALUES ({marks}) ON CONFLICT DO NOTHING"
        started = time.perf_counter()
        for chunk in batched(data, txn):
            target.execute("BEGIN IMMEDIATE")
            target.executemany(insert, chunk)
            target.execute("COMMIT")
        seconds = time.perf_counter() - started
    finally:
        target.close()
        remove_sqlite(raw_path)
    return len(data) / seconds


async def raw_postgres_baseline(url: str, rows: int, txn: int) -> float:
    """rows/s of asyncpg COPY of the store's own rows straight into a same-index table."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE raw_spans (LIKE spans INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING INDEXES)"
        )
        data = await conn.fetch("SELECT * FROM spans ORDER BY pk LIMIT $1", rows)
        columns = list(data[0].keys())
        tuples = [tuple(record) for record in data]
        started = time.perf_counter()
        for chunk in batched(tuples, txn):
            async with conn.transaction():
                await conn.copy_records_to_table("raw_spans", records=chunk, columns=columns)
        seconds = time.perf_counter() - started
        await conn.execute("DROP TABLE raw_spans")
    finally:
        await conn.close()
    return len(tuples) / seconds


async def insert_bench(backend: str, args: argparse.Namespace) -> list[Any]:
    store_rates, raw_rates, ratios, groups = [], [], [], []
    for run in range(args.runs):
        if backend == "sqlite":
            path = os.path.join(args.dir, f"insert-{run}.db")
            remove_sqlite(path)
            result = await insert_run(f"sqlite:///{path}", args, run)
            txn = max(1, round(result["group"]))
            raw = raw_sqlite_baseline(path, path + ".raw", args.insert_spans, txn)
            remove_sqlite(path)
        else:
            async with scratch_postgres(args.postgres_url, "bench_insert") as url:
                result = await insert_run(url, args, run)
                txn = max(1, round(result["group"]))
                raw = await raw_postgres_baseline(url, args.insert_spans, txn)
        store_rates.append(result["rate"])
        raw_rates.append(raw)
        ratios.append(result["rate"] / raw)
        groups.append(result["group"])
        print(
            f"  {backend} run {run + 1}: store {result['rate']:,.0f} spans/s, "
            f"raw {raw:,.0f} rows/s, mean group {result['group']:,.0f} spans",
            file=sys.stderr,
        )
    return [
        backend,
        spread(store_rates),
        spread(raw_rates),
        spread(ratios, "{:.2f}"),
        f"{median(groups):,.0f}",
    ]


# -- reads at scale --------------------------------------------------------------------------


def make_rewards(rng: random.Random, traces: list[tuple[str, str, str, str]], count: int):
    """Rewards judging random traces: 70% a span, 20% the trace, 10% a conversation link."""
    rewards = []
    for index in range(count):
        trace_id, span_id, conversation_id, experiment = rng.choice(traces)
        source = rng.choice(("llm", "code", "human"))
        roll = rng.random()
        target: dict[str, Any]
        if roll < 0.7:
            target = {"span_id": span_id, "trace_id": trace_id}
        elif roll < 0.9:
            target = {"trace_id": trace_id}
        else:
            target = {"links": {"gen_ai.conversation.id": conversation_id}}
        rewards.append(
            RewardIn(
                id=f"bench-reward-{index}",
                name=rng.choice(("correctness", "helpfulness", "task_success")),
                value=round(rng.random(), 3),
                source=source,
                tags=[experiment, f"judge:{source}"],
                feedback="looks right" if rng.random() < 0.3 else None,
                **target,
            )
        )
    return rewards


async def timed_queries(count: int, make_query, run_query, check=None) -> list[float]:
    for _ in range(min(20, count)):  # warm-up, untimed
        await run_query(make_query())
    timings = []
    for _ in range(count):
        query = make_query()
        started = time.perf_counter()
        result = await run_query(query)
        timings.append((time.perf_counter() - started) * 1000)
        if check is not None:
            check(result)
    return timings


async def read_bench(url: str, backend: str, spans: int, args: argparse.Namespace) -> list[Any]:
    factory = TraceFactory(seed=7)
    rng = random.Random(11)
    targets: list[tuple[str, str, str, str]] = []
    store = await EvolutionStore.open(url)
    try:
        loaded, load_seconds = 0, 0.0
        while loaded < spans:
            records, traces = make_records(factory, min(LOAD_CHUNK, spans - loaded))
            targets.extend(
                (t.trace_id, t.spans[1].span_id, t.conversation_id, t.experiment) for t in traces
            )
            seconds, accepted = await drive(store, batched(records, args.batch), args.concurrency)
            if accepted != len(records):
                raise SystemExit(f"store accepted {accepted} of {len(records)} spans")
            load_seconds += seconds
            loaded += len(records)
            if sys.stderr.isatty() or loaded >= spans:
                print(
                    f"\r  {backend}: loaded {loaded:,} spans ({loaded / load_seconds:,.0f} "
                    "spans/s)",
                    end="\n" if loaded >= spans else "",
                    file=sys.stderr,
                    flush=True,
                )

        count = args.rewards if args.rewards is not None else max(1, spans // 50)
        rewards = make_rewards(rng, targets, count)
        gate = asyncio.Semaphore(64)

        async def add(reward: RewardIn) -> None:
            async with gate:
                await store.add_reward(reward)

        started = time.perf_counter()
        await asyncio.gather(*(add(reward) for reward in rewards))
        reward_seconds = time.perf_counter() - started
        if backend == "postgres" and not args.no_analyze:
            await analyze_postgres(url)

        def one_trace_check(page: Any) -> None:
            if len(page.items) != 10:
                raise SystemExit(f"a trace returned {len(page.items)} spans, not 10")

        trace_ms = await timed_queries(
            args.queries,
            lambda: SpanQuery(trace_id=rng.choice(targets)[0], limit=100),
            store.list_spans,
            one_trace_check,
        )
        by_tag: dict[str, list[float]] = {}
        returned: list[int] = []
        for scope in ("any", "reward"):
            by_tag[scope] = await timed_queries(
                args.queries,
                lambda scope=scope: RewardQuery(
                    tag=rng.choice(EXPERIMENT_TAGS), tag_scope=scope, limit=100
                ),
                store.list_rewards,
                lambda page: returned.append(len(page.items)),
            )
    finally:
        await store.close()
    return [
        backend,
        f"{spans:,}",
        f"{len(rewards):,}",
        f"{spans / load_seconds:,.0f}",
        f"{len(rewards) / reward_seconds:,.0f}",
        f"{percentile(trace_ms, 50):.2f} / {percentile(trace_ms, 95):.2f}",
        f"{percentile(by_tag['any'], 50):.2f} / {percentile(by_tag['any'], 95):.2f}",
        f"{percentile(by_tag['reward'], 50):.2f} / {percentile(by_tag['reward'], 95):.2f}",
        f"{median(returned):.0f}",
    ]


async def analyze_postgres(url: str) -> None:
    """ANALYZE, as autovacuum would have done by now on a server where it is on: planner
    statistics from an empty database turn rewards-by-tag into a nested re-scan (seconds)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        autovacuum = await conn.fetchval("SHOW autovacuum")
        started = time.perf_counter()
        await conn.execute("ANALYZE")
        print(
            f"  postgres: ANALYZE before the reads ({time.perf_counter() - started:.1f} s; "
            f"autovacuum is {autovacuum} on this server)",
            file=sys.stderr,
        )
    finally:
        await conn.close()


async def read_bench_for(backend: str, args: argparse.Namespace) -> list[Any]:
    if backend == "sqlite":
        path = os.path.join(args.dir, "reads.db")
        remove_sqlite(path)
        try:
            row = await read_bench(f"sqlite:///{path}", backend, args.spans, args)
            size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
        finally:
            if args.keep:
                print(f"  kept sqlite:///{path}", file=sys.stderr)
            else:
                remove_sqlite(path)
        return [*row, f"{size / 2**20:,.0f} MB"]
    async with scratch_postgres(args.postgres_url, "bench_reads", keep=args.keep) as url:
        if args.keep:
            print(f"  keeping {url}", file=sys.stderr)
        row = await read_bench(url, backend, args.pg_spans, args)
        import asyncpg

        conn = await asyncpg.connect(url)
        try:
            size = await conn.fetchval("SELECT pg_database_size(current_database())")
        finally:
            await conn.close()
    return [*row, f"{size / 2**20:,.0f} MB"]


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, metavar="URL")
    parser.add_argument("--runs", type=int, default=3, help="insert runs (median is reported)")
    parser.add_argument("--insert-spans", type=int, default=100_000, metavar="N")
    parser.add_argument("--batch", type=int, default=512, help="spans per ingest call")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent ingest calls")
    parser.add_argument("--spans", type=int, default=100_000, help="spans in the read database")
    parser.add_argument("--pg-spans", type=int, help="Postgres read database [default: --spans]")
    parser.add_argument("--full", action="store_true", help="read database of 1,000,000 spans")
    parser.add_argument(
        "--rewards", type=int, help="rewards in the read database [default: spans / 50]"
    )
    parser.add_argument("--queries", type=int, default=200, help="timed queries of each kind")
    parser.add_argument("--only", choices=("insert", "reads"), help="run one half of the benchmark")
    parser.add_argument("--dir", help="where SQLite files go [default: a fresh /tmp dir]")
    parser.add_argument(
        "--no-analyze",
        action="store_true",
        help="skip the ANALYZE that Postgres gets before the reads",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the read databases (to EXPLAIN queries)"
    )
    args = parser.parse_args(argv)
    if args.full:
        args.spans = 1_000_000
    if args.pg_spans is None:
        args.pg_spans = args.spans
    args.dir = args.dir or tempfile.mkdtemp(prefix="evolution-store-bench-")
    return args


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # keep the tables after the progress lines
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if "postgres" in backends:
        reason = await postgres_reachable(args.postgres_url)
        if reason:
            print(f"Postgres skipped: {reason}")
            backends.remove("postgres")
    print(f"evolution-store store bench — {machine_note()}")
    print(
        f"SQLite PRAGMAs: page_size={PRAGMAS['page_size']}, "
        f"journal_mode={PRAGMAS['journal_mode']}, "
        f"synchronous={PRAGMAS['synchronous']}, "
        f"wal_autocheckpoint={PRAGMAS['wal_autocheckpoint']} (baseline uses the same)"
    )
    if args.only != "reads":
        rows = [await insert_bench(backend, args) for backend in backends]
        print(
            f"\nBatch insert: {args.insert_spans:,} spans, {args.concurrency} concurrent ingest "
            f"calls x {args.batch} spans; median (min–max) of {args.runs} runs"
        )
        print_table(
            ["backend", "store spans/s", "raw baseline rows/s", "store/raw", "spans/txn"],
            rows,
        )
        print(
            "raw baseline: the store's own rows, same DDL, PRAGMAs and transaction size; "
            "SQLite executemany, Postgres COPY. Target: >= 20,000 spans/s on SQLite."
        )
    if args.only != "insert":
        rows = [await read_bench_for(backend, args) for backend in backends]
        print(
            f"\nReads: rewards tagged with 50 experiment tags; {args.queries} random queries "
            "of each kind, warm cache; ms p50 / p95"
        )
        print_table(
            [
                "backend",
                "spans",
                "rewards",
                "load spans/s",
                "rewards/s",
                "one trace",
                "rewards by tag",
                "tag_scope=reward",
                "rows",
                "db size",
            ],
            rows,
        )
        print(
            "one trace = list_spans(trace_id) (10 spans); rewards by tag = list_rewards(tag, "
            "limit=100), tag on the reward or its spans; rows = rewards returned (median). "
            "Postgres is ANALYZEd before the reads unless --no-analyze. "
            "Targets at 1M spans: one trace <= 5 ms, rewards by tag <= 10 ms."
        )
    with contextlib.suppress(OSError):
        os.rmdir(args.dir)


if __name__ == "__main__":
    asyncio.run(main())
