"""Prompt registry benchmark: how long `GET /api/v1/agents/{agent}/prompt` takes the server
with 10,000 prompts stored, with and without an A/B experiment running. Target: p50 ≤ 2 ms.

    .venv/bin/python bench/registry_bench.py                       # SQLite + Postgres, ~2 min
    .venv/bin/python bench/registry_bench.py --backends sqlite --requests 5000
    .venv/bin/python bench/registry_bench.py --prompts 1000 --agents 10 --requests 500   # quick

Load: `--prompts` prompts over `--agents` agents (versions 1..N each, ~1 KB seeded Jinja2
templates, all candidates) through `EvolutionStore.create_prompt` from `--concurrency`
concurrent calls, so the writer group-commits them; version 1 of every agent is approved into
production. Postgres gets an ANALYZE afterwards, as autovacuum would have done by then.

Measure: the app `create_app(settings, store=…)` served in-process through
`httpx.ASGITransport` (no socket, no uvicorn). The figure is the **handler time**: an ASGI
wrapper around the app times each request from the moment the app is called until its last
response byte is sent (routing, auth dependency, validation, the store's read, JSON
encoding). The round trip through the in-process client is printed beside it. Requests go one
at a time, each for a random agent and a random sticky key (`key=user-N`), after `--warmup`
untimed requests; p50/p95/p99 over `--requests`. Then every agent gets a running A/B between
versions 1 and 2 (50/50) and the same is timed again: the answer must name the experiment.
The read's statements per request are counted through the store's statement hook.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from _common import (
    _WORDS,
    DEFAULT_POSTGRES_URL,
    machine_note,
    percentile,
    postgres_reachable,
    print_table,
    remove_sqlite,
    scratch_postgres,
)

from api.app import create_app
from evolution_store import EvolutionStore
from evolution_store.config import Settings
from evolution_store.registry_models import ApproveIn, ExperimentIn, PromptIn, VariantIn


class HandlerTimer:
    """ASGI middleware: nanoseconds from the app being called to its response being sent."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.samples: list[int] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter_ns()
        await self.app(scope, receive, send)
        self.samples.append(time.perf_counter_ns() - started)


class StatementCounter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, sql: str, params: Any) -> None:
        self.count += 1


def template(rng: random.Random, agent: str, version: int) -> str:
    """~1 KB of prompt: instructions, a few variables, a loop, all different per version."""
    words = " ".join(rng.choices(_WORDS, k=150))
    return (
        f"You are {agent} (revision {version}). {words}\n"
        "Customer: {{ customer }}\nQuestion: {{ question }}\n"
        "{% for doc in documents %}- {{ doc }}\n{% endfor %}"
    )


async def gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await call()

    return await asyncio.gather(*(one(call) for call in calls))


async def load(store: EvolutionStore, args: argparse.Namespace) -> dict[str, list[str]]:
    """Every agent's prompt ids by version (index 0 = version 1); version 1 approved."""
    rng = random.Random(args.seed)
    agents = [f"agent-{i:03d}" for i in range(args.agents)]
    per_agent = args.prompts // args.agents
    ids: dict[str, list[str]] = {agent: [] for agent in agents}
    started = time.perf_counter()
    for version in range(1, per_agent + 1):
        # One version of every agent per round: versions are numbered in the order they land.
        bodies = [
            PromptIn(agent=agent, content=template(rng, agent, version), status="candidate")
            for agent in agents
        ]
        created = await gather_limited(
            [lambda body=body: store.create_prompt(body) for body in bodies], args.concurrency
        )
        for (prompt, _), agent in zip(created, agents, strict=True):
            ids[agent].append(prompt["id"])
    await gather_limited(
        [
            lambda agent=agent: store.approve_prompt(
                ids[agent][0], ApproveIn(), approved_by="bench"
            )
            for agent in agents
        ],
        args.concurrency,
    )
    elapsed = time.perf_counter() - started
    total = per_agent * len(agents)
    print(
        f"  {store.backend_name}: {total:,} prompts stored in {elapsed:.1f} s "
        f"({total / elapsed:,.0f}/s)",
        file=sys.stderr,
    )
    return ids


async def start_experiments(store: EvolutionStore, ids: dict[str, list[str]]) -> None:
    for agent, versions in ids.items():
        await store.create_experiment(
            ExperimentIn(
                agent=agent,
                variants=[
                    VariantIn(prompt_id=versions[0], weight=0.5),
                    VariantIn(prompt_id=versions[1], weight=0.5),
                ],
            )
        )


def summary(samples_ns: list[int]) -> dict[str, float]:
    ms = [ns / 1e6 for ns in samples_ns]
    return {"p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99)}


async def timed_requests(
    client: httpx.AsyncClient,
    timer: HandlerTimer,
    counter: StatementCounter,
    request: Callable[[random.Random], Awaitable[None]],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Handler-time percentiles of `request`, the client's round trip p50, statements each."""
    rng = random.Random(args.seed + 1)
    for _ in range(args.warmup):
        await request(rng)
    timer.samples.clear()
    counter.count = 0
    round_trips = []
    for _ in range(args.requests):
        started = time.perf_counter_ns()
        await request(rng)
        round_trips.append(time.perf_counter_ns() - started)
    return {
        **summary(timer.samples),
        "round_trip_p50": summary(round_trips)["p50"],
        "statements": counter.count / args.requests,
    }


async def timed_store_calls(
    store: EvolutionStore, agents: list[str], args: argparse.Namespace
) -> dict[str, float]:
    """The store's `resolve_prompt` alone, no HTTP: what the handler adds is the difference."""
    rng = random.Random(args.seed + 2)
    samples = []
    for index in range(args.warmup + args.requests):
        agent, key = rng.choice(agents), f"user-{rng.randrange(100_000)}"
        started = time.perf_counter_ns()
        await store.resolve_prompt(agent, label="production", key=key)
        if index >= args.warmup:
            samples.append(time.perf_counter_ns() - started)
    return summary(samples)


async def analyze_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def bench(url: str, backend: str, args: argparse.Namespace) -> list[list[Any]]:
    counter = StatementCounter()
    store = await EvolutionStore.open(url, statement_hook=counter)
    try:
        ids = await load(store, args)
        if backend == "postgres" and not args.no_analyze:
            await analyze_postgres(url)
        app = create_app(Settings(store_url=url, api_keys=""), store=store)
        timer = HandlerTimer(app)
        agents = list(ids)
        rows = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=timer)
            async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

                async def healthz(rng: random.Random) -> None:
                    assert (await client.get("/healthz")).status_code == 200

                def resolve(ab: bool) -> Callable[[random.Random], Awaitable[None]]:
                    async def request(rng: random.Random) -> None:
                        agent = rng.choice(agents)
                        params = {"label": "production", "key": f"user-{rng.randrange(100_000)}"}
                        response = await client.get(f"/api/v1/agents/{agent}/prompt", params=params)
                        assert response.status_code == 200, response.text
                        answer = response.json()
                        assert answer["agent"] == agent
                        assert (answer["experiment_id"] is not None) == ab

                    return request

                phases = [("GET /healthz (floor)", None, healthz)]
                phases += [("prompt, no A/B", False, resolve(False))]
                phases += [("prompt, A/B running", True, resolve(True))]
                for name, ab, request in phases:
                    if ab:
                        await start_experiments(store, ids)
                    figures = await timed_requests(client, timer, counter, request, args)
                    direct = None
                    if ab is not None:
                        direct = await timed_store_calls(store, agents, args)
                    rows.append(
                        [
                            backend,
                            name,
                            f"{figures['p50']:.2f}",
                            f"{figures['p95']:.2f}",
                            f"{figures['p99']:.2f}",
                            "-" if direct is None else f"{direct['p50']:.2f}",
                            f"{figures['round_trip_p50']:.2f}",
                            f"{figures['statements']:.1f}",
                        ]
                    )
        return rows
    finally:
        await store.close()


async def bench_for(backend: str, args: argparse.Namespace) -> list[list[Any]]:
    if backend == "sqlite":
        path = os.path.join(args.dir, "registry.db")
        remove_sqlite(path)
        try:
            return await bench(f"sqlite:///{path}", backend, args)
        finally:
            remove_sqlite(path)
    async with scratch_postgres(args.postgres_url, "bench_registry") as url:
        return await bench(url, backend, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL, metavar="URL")
    parser.add_argument("--prompts", type=int, default=10_000, help="prompts stored in all")
    parser.add_argument("--agents", type=int, default=100, help="agents they are spread over")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per phase")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per phase")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent creates")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--dir", help="where the SQLite file goes [default: a fresh /tmp dir]")
    parser.add_argument(
        "--no-analyze", action="store_true", help="skip Postgres's ANALYZE after the load"
    )
    args = parser.parse_args(argv)
    if args.prompts < 2 * args.agents:
        parser.error("--prompts must give every agent at least two versions (the A/B needs them)")
    args.dir = args.dir or tempfile.mkdtemp(prefix="evolution-store-bench-")
    return args


async def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    if "postgres" in backends:
        reason = await postgres_reachable(args.postgres_url)
        if reason:
            print(f"Postgres skipped: {reason}")
            backends.remove("postgres")
    print(f"evolution-store registry bench — {machine_note()}")
    rows = []
    for backend in backends:
        rows.extend(await bench_for(backend, args))
    per_agent = args.prompts // args.agents
    print(
        f"\nGET /api/v1/agents/{{agent}}/prompt?label=production&key=… with "
        f"{per_agent * args.agents:,} prompts ({args.agents} agents x {per_agent} versions); "
        f"{args.requests:,} requests per row, one at a time, random agent and key"
    )
    print(
        "measured in-process: httpx.ASGITransport -> create_app(); handler ms = an ASGI "
        "wrapper around the app, call to last byte sent; store call = "
        "store.resolve_prompt() alone, no HTTP"
    )
    print_table(
        [
            "backend",
            "request",
            "handler p50",
            "p95",
            "p99",
            "store call p50",
            "round trip p50",
            "statements/req",
        ],
        rows,
    )
    print("Target: handler p50 <= 2 ms.")


if __name__ == "__main__":
    asyncio.run(main())
