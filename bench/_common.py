"""Shared pieces of the benchmarks: agent-like traces, percentiles, a scratch Postgres
database, and the table printer. Not a test helper: nothing here asserts anything.

The traces look like what an instrumented agent sends: a root `invoke_agent` span, chat spans
with gen_ai token counts, model names, a conversation id and ~500-byte OpenInference
`input.value`/`output.value`, and tool spans; every span carries a few tags. They are plain
dicts so each bench turns them into what it sends (`SpanRecord`s, OTLP protobuf or JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SPANS_PER_TRACE = 10
#: experiment tags: one per trace, on its spans and on the rewards that judge it
EXPERIMENT_TAGS = tuple(f"exp-{i:02d}" for i in range(50))
ENV_TAGS = ("env:prod", "env:staging", "env:dev")
AGENTS = ("planner", "researcher", "coder", "critic", "summarizer")
MODELS = ("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b")
TOOLS = ("web_search", "read_file", "run_python")
_WORDS = [
    "the",
    "agent",
    "plan",
    "step",
    "tool",
    "call",
    "result",
    "observation",
    "answer",
    "question",
    "context",
    "retrieve",
    "document",
    "summary",
    "reason",
    "verify",
    "code",
    "test",
    "error",
    "retry",
    "user",
    "system",
    "assistant",
    "prompt",
    "model",
    "token",
    "search",
    "query",
    "file",
    "python",
    "output",
    "input",
    "value",
    "score",
    "reward",
    "policy",
    "learn",
]


@dataclass(slots=True)
class BenchSpan:
    span_id: str
    parent_span_id: str | None
    name: str
    kind: int  # OTLP SpanKind number: 1 internal, 3 client
    start_time: int
    end_time: int
    attributes: dict[str, Any]
    tags: list[str]


@dataclass(slots=True)
class BenchTrace:
    trace_id: str
    resource: dict[str, Any]
    spans: list[BenchSpan] = field(default_factory=list)
    conversation_id: str = ""
    experiment: str = ""


class TraceFactory:
    """Deterministic agent-like traces of `SPANS_PER_TRACE` spans (seeded, so runs compare)."""

    def __init__(self, seed: int = 7, text_bytes: int = 500) -> None:
        self.rng = random.Random(seed)
        self.text_bytes = text_bytes
        self.clock = time.time_ns() - 86_400 * 10**9

    def text(self) -> str:
        """~`text_bytes` of fresh random words: compresses like prose (~3x), not like a repeat."""
        return " ".join(self.rng.choices(_WORDS, k=self.text_bytes // 4))[: self.text_bytes]

    def _hex(self, bits: int) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def trace(self) -> BenchTrace:
        rng = self.rng
        agent = rng.choice(AGENTS)
        trace = BenchTrace(
            trace_id=self._hex(128),
            resource={"service.name": f"agent-{agent}", "deployment.environment": "bench"},
            conversation_id=str(uuid.UUID(int=rng.getrandbits(128))),
            experiment=rng.choice(EXPERIMENT_TAGS),
        )
        tags = [trace.experiment, rng.choice(ENV_TAGS), f"agent:{agent}"]
        self.clock += 1_000_000_000
        start = self.clock
        root_id = self._hex(64)
        children: list[BenchSpan] = []
        at = start + 1_000_000
        input_tokens_total = output_tokens_total = 0
        for index in range(SPANS_PER_TRACE - 1):
            span_id = self._hex(64)
            duration = rng.randint(50, 900) * 1_000_000
            if index % 3 == 2:
                tool = rng.choice(TOOLS)
                attributes: dict[str, Any] = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "gen_ai.agent.name": agent,
                    "gen_ai.conversation.id": trace.conversation_id,
                    "openinference.span.kind": "TOOL",
                    "input.value": self.text(),
                    "output.value": self.text(),
                }
                name, kind = f"execute_tool {tool}", 1
            else:
                model = rng.choice(MODELS)
                input_tokens = rng.randint(200, 4000)
                output_tokens = rng.randint(20, 800)
                input_tokens_total += input_tokens
                output_tokens_total += output_tokens
                attributes = {
                    "gen_ai.operation.name": "chat",
                    "gen_ai.system": "openai",
                    "gen_ai.agent.name": agent,
                    "gen_ai.request.model": model,
                    "gen_ai.response.model": model,
                    "gen_ai.response.id": f"chatcmpl-{self._hex(96)}",
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.output_tokens": output_tokens,
                    "gen_ai.conversation.id": trace.conversation_id,
                    "openinference.span.kind": "LLM",
                    "input.value": self.text(),
                    "output.value": self.text(),
                }
                name, kind = f"chat {model}", 3
            children.append(
                BenchSpan(span_id, root_id, name, kind, at, at + duration, attributes, tags)
            )
            at += duration + 1_000_000
        root = BenchSpan(
            root_id,
            None,
            f"invoke_agent {agent}",
            1,
            start,
            at,
            {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "gen_ai.conversation.id": trace.conversation_id,
                "session.id": f"session-{rng.randint(0, 9999)}",
                "user.id": f"user-{rng.randint(0, 999)}",
                "openinference.span.kind": "AGENT",
                "input.value": self.text(),
                "output.value": self.text(),
                "gen_ai.usage.input_tokens": input_tokens_total,
                "gen_ai.usage.output_tokens": output_tokens_total,
            },
            tags,
        )
        trace.spans = [root, *children]
        return trace

    def traces(self, spans: int) -> Iterator[BenchTrace]:
        """Enough traces for at least `spans` spans."""
        for _ in range(-(-spans // SPANS_PER_TRACE)):
            yield self.trace()


def batched(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# -- statistics --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """`median (min–max)` of several runs, or the single value."""
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


# -- output ------------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(str(h)), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    line = "  ".join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print(
            "  ".join(
                f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def machine_note() -> str:
    """One line on where the figures come from; the machine is small and shared."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs (shared with other work; load average {load}; "
        f"speed {cpu_speed_ms():.0f} ms), "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}"
    )


def cpu_speed_ms() -> float:
    """Milliseconds one core takes for a fixed pure-Python loop (best of 5): the same machine
    ran at very different speeds from one day to the next (its neighbours vary), so figures
    from different runs compare only beside this."""

    def loop() -> float:
        started = time.perf_counter()
        total = 0
        for i in range(1_000_000):
            total += i
        return time.perf_counter() - started

    return min(loop() for _ in range(5)) * 1000


# -- scratch Postgres --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def scratch_postgres(base_url: str, prefix: str, *, keep: bool = False) -> AsyncIterator[str]:
    """A fresh database next to `base_url`'s, dropped afterwards unless `keep`. Yields its URL."""
    import asyncpg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    head, _, _ = base_url.rpartition("/")
    try:
        yield f"{head}/{name}"
    finally:
        if not keep:
            admin = await asyncpg.connect(base_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


async def postgres_reachable(base_url: str) -> str | None:
    """None if Postgres answers, else the reason it does not."""
    try:
        import asyncpg

        conn = await asyncpg.connect(base_url, timeout=5)
        await conn.close()
    except Exception as exc:  # any failure means "skip Postgres", with the reason shown
        return f"{type(exc).__name__}: {exc}"
    return None


def remove_sqlite(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


class RssSampler:
    """psutil's RSS of this process every 20 ms, on a daemon thread; `baseline` is the RSS
    when it started."""

    def __init__(self) -> None:
        import psutil  # a test extra; only the benches that sample memory need it

        self.process = psutil.Process()
        self.baseline = self.peak = self.process.memory_info().rss
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> int:
        self.stopped.set()
        self.thread.join()
        return max(self.peak, self.process.memory_info().rss)


def holds_load(path: str, wanted: dict[str, Any]) -> bool:
    """Whether the SQLite file at `path` holds the load `wanted` describes, as its sidecar
    `<path>.json` (written by `remember_load`) says: a bench given `--db` fills it once."""
    sidecar = path + ".json"
    if not (os.path.exists(path) and os.path.exists(sidecar)):
        return False
    with open(sidecar) as file:
        return json.load(file) == wanted


def remember_load(path: str, wanted: dict[str, Any]) -> None:
    with open(path + ".json", "w") as file:
        json.dump(wanted, file)


def forget_load(path: str) -> None:
    """Remove a scratch database and its sidecar."""
    remove_sqlite(path)
    with contextlib.suppress(FileNotFoundError):
        os.remove(path + ".json")
