"""Pattern learner benchmark: mining 100,000 executions (about 1 M spans) on SQLite, with
planted effects among about 200 candidate conditions. Target (issue 20): ≤ 30 s, ≤ 500 MB.

    .venv/bin/python bench/patterns_bench.py                   # 100,000 executions, both outcomes
    .venv/bin/python bench/patterns_bench.py --quick           # 10,000 executions
    .venv/bin/python bench/patterns_bench.py --db /tmp/patterns.db --outcomes status

Load (not timed, printed): `--executions` executions of five agents and ten task names, each
a task and an execution with a `config` (temperature, top_p, max_tokens, k, style, retrieval,
region, bucket, prompt_id) made through `EvolutionStore.create_task` / `start_execution`
from many concurrent calls (the writer group-commits them), then its `--spans` spans (a root,
three chat spans with a model and token counts, one to four tool spans, steps) and one
`reward` linked to the execution, through `EvolutionStore.ingest` in batches — the store's
own fast path. The root span's status settles the execution (succeeded or failed). A file
given with `--db` is kept, and reused when it holds the same load (a sidecar `.json` says).

Planted (success probability 0.6 before them; the reward is that probability plus noise):

    config.temperature > 0.5                 -0.12   failure, overall
    tool read_file before run_python         +0.10   success, overall
    prompt = p3                              -0.10   failure, overall
    error = RateLimitError (6 % of runs)     -0.25   failure, overall
    model = llama-3.1-70b, agent coder only  -0.20   failure, in agent:coder
    tool calculator used                     tokens x 0.7, outcome unchanged: optimization

Null: top_p, max_tokens, k, style, retrieval, region, bucket, the task names, 60 + 3 tags and
TimeoutError (6 %, drawn apart from RateLimitError); with the planted ones, 200 candidate
conditions overall. A reported pattern on a null feature is a false discovery. Patterns on
features that overlap a planted one — another temperature cut, the agent coder, any tool but
calculator (a run using one uses more tools: slower, and likelier to hold the planted pair) —
are counted apart as "related".

Measure: each outcome is mined in a fresh process (so its peak RSS is the miner's own, not
the loader's): `execution_facts` (the set-based read), then `find_patterns`' phases
(conditions; tests, screens and scipy; findings, agent check, patterns), then
`save_patterns`. Peak RSS is the process's `ru_maxrss`, beside what psutil sampled.
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
from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn

AGENTS = ("planner", "researcher", "coder", "critic", "summarizer")
TASK_NAMES = tuple(f"task-{i}" for i in range(10))
MODELS = ("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-70b")
#: drawn 1-3 per run; `calculator` is added apart (below), so using it says nothing of the rest
TOOLS = ("web_search", "read_file", "run_python", "sql_query", "fetch_url", "send_email")
TOOLS += ("summarize",)
EXPERIMENT_TAGS = tuple(f"exp-{i:02d}" for i in range(60))
ENV_TAGS = ("env:prod", "env:staging", "env:dev")
STYLES = ("terse", "friendly", "formal", "detailed")
REGIONS = tuple(f"region-{i}" for i in range(10))
PROMPTS = ("p1", "p2", "p3", "p4")

#: condition -> (kind, context) each planted effect should be reported as
PLANTED = {
    ("config.temperature > 0.5", "overall"): "failure",
    ("tool read_file before run_python", "overall"): "success",
    ("prompt = p3", "overall"): "failure",
    ("error = RateLimitError", "overall"): "failure",
    ("model = llama-3.1-70b", "agent:coder"): "failure",
    ("tool calculator used", "overall"): "optimization",
}
#: features with no effect: a pattern on one of them is a false discovery
NULL_CONFIG = frozenset({"top_p", "max_tokens", "k", "style", "retrieval", "region", "bucket"})


# -- the load ------------------------------------------------------------------------------------


def execution_plan(index: int, rng: random.Random) -> dict[str, Any]:
    """One execution's features and outcome, drawn from `rng`."""
    agent = rng.choice(AGENTS)
    model = rng.choice(MODELS)
    tools = rng.sample(TOOLS, rng.randint(1, 3))
    if rng.random() < 0.3:
        tools.insert(rng.randint(0, len(tools)), "calculator")
    # Drawn apart: were they exclusive, a TimeoutError would mean "no RateLimitError".
    errors = [name for name in ("RateLimitError", "TimeoutError") if rng.random() < 0.06]
    config = {
        "temperature": rng.randint(0, 10) / 10,
        "top_p": rng.choice((0.8, 0.9, 0.95, 1.0)),
        "max_tokens": rng.choice((256, 512, 1024, 2048)),
        "k": rng.randint(1, 10),
        "style": rng.choice(STYLES),
        "retrieval": rng.random() < 0.5,
        "region": rng.choice(REGIONS),
        "bucket": f"b{rng.randint(0, 19)}",
        "prompt_id": rng.choice(PROMPTS),
    }
    p = 0.6
    p -= 0.12 if config["temperature"] > 0.5 else 0
    if "read_file" in tools and "run_python" in tools:
        p += 0.10 if tools.index("read_file") < tools.index("run_python") else 0
    p -= 0.10 if config["prompt_id"] == "p3" else 0
    p -= 0.25 if "RateLimitError" in errors else 0
    p -= 0.20 if agent == "coder" and model == "llama-3.1-70b" else 0
    return {
        "task_id": f"pt-{index}",
        "execution_id": f"pe-{index}",
        "task_name": rng.choice(TASK_NAMES),
        "agent": agent,
        "model": model,
        "tools": tools,
        "errors": errors,
        "tags": [rng.choice(EXPERIMENT_TAGS), rng.choice(ENV_TAGS)],
        "config": config,
        "succeeded": rng.random() < p,
        "reward": min(1.0, max(0.0, p + rng.gauss(0, 0.2))),
        "token_scale": 0.7 if "calculator" in tools else 1.0,
    }


def execution_spans(plan: dict[str, Any], spans: int, rng: random.Random) -> list[SpanRecord]:
    """The execution's spans: root, three chat spans with its tools between them (the rest of
    its tools after), then steps up to `spans`."""
    trace = f"{rng.getrandbits(128) or 1:032x}"
    start = time.time_ns() - 3_600 * 10**9
    ids = {
        "evolution.task.id": plan["task_id"],
        "evolution.execution.id": plan["execution_id"],
        "gen_ai.agent.name": plan["agent"],
    }
    root_id = f"{rng.getrandbits(64) or 1:016x}"
    children: list[SpanRecord] = []
    clock = start

    def child(name: str, millis: tuple[int, int] | None, attributes: dict[str, Any]) -> None:
        nonlocal clock
        span_id = f"{rng.getrandbits(64) or 1:016x}"
        end = clock + (rng.randint(*millis) if millis else 1) * 10**6
        children.append(
            SpanRecord(
                trace_id=trace,
                span_id=span_id,
                parent_span_id=root_id,
                name=name,
                start_time=clock,
                end_time=end,
                attributes={**ids, **attributes},
                tags=plan["tags"] if "gen_ai.request.model" in attributes else [],
                status_code="ok",
            )
        )
        clock = end

    def use(tool: str) -> None:
        tool_call = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
        child(f"execute_tool {tool}", (20, 300), tool_call)

    for step in range(3):
        tokens = int(rng.randint(200, 600) * plan["token_scale"])
        chat = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": plan["model"],
            "gen_ai.usage.input_tokens": tokens,
            "gen_ai.usage.output_tokens": tokens // 4,
            "step": step,
        }
        child(f"chat {plan['model']}", (200, 900), chat)
        if step < len(plan["tools"]):
            use(plan["tools"][step])
    for tool in plan["tools"][3:]:
        use(tool)
    if plan["errors"]:
        failing = next(span for span in children if "gen_ai.tool.name" in span.attributes)
        failing.status_code = "error"
        failing.status_message = f"{plan['errors'][0]}: try later"
        failing.events = [
            {
                "name": "exception",
                "time_unix_nano": failing.start_time,
                "attributes": {"exception.type": error},
            }
            for error in plan["errors"]
        ]
    while len(children) < spans - 1:
        child("step", None, {})
    root = SpanRecord(
        trace_id=trace,
        span_id=root_id,
        name=f"invoke_agent {plan['agent']}",
        start_time=start,
        end_time=clock + 10**6,
        attributes={**ids, "gen_ai.operation.name": "invoke_agent"},
        tags=plan["tags"],
        status_code="ok" if plan["succeeded"] else "error",
    )
    return [root, *children]


async def load(url: str, executions: int, spans: int, seed: int) -> dict[str, float]:
    """Tasks and executions first (their config), then spans and rewards; seconds of each."""
    store = await EvolutionStore.open(url)
    rng = random.Random(seed)
    plans = [execution_plan(index, rng) for index in range(executions)]
    seconds: dict[str, float] = {}
    try:
        clock = time.perf_counter()
        queue = iter(plans)

        async def create() -> None:
            for plan in queue:
                task = TaskIn(id=plan["task_id"], name=plan["task_name"])
                await store.create_task(task)
                run = ExecutionIn(id=plan["execution_id"], config=plan["config"])
                await store.start_execution(plan["task_id"], run)

        await asyncio.gather(*(create() for _ in range(256)))
        seconds["tasks and executions"] = time.perf_counter() - clock

        clock = time.perf_counter()
        span_rng = random.Random(seed + 1)
        batches = [plans[i : i + 200] for i in range(0, len(plans), 200)]
        pending = iter(batches)

        async def ingest() -> None:
            for batch in pending:
                records = [s for plan in batch for s in execution_spans(plan, spans, span_rng)]
                rewards = [
                    RewardIn(value=plan["reward"], execution_id=plan["execution_id"])
                    for plan in batch
                ]
                await store.ingest(records, rewards)

        await asyncio.gather(*(ingest() for _ in range(4)))
        seconds["spans and rewards"] = time.perf_counter() - clock
    finally:
        await store.close()
    return seconds


# -- mining (in a process of its own) -------------------------------------------------------------


async def mine(url: str, outcome: str, min_support: int, fdr: float) -> dict[str, Any]:
    from evolution_store.learn.patterns import MinerSettings, find_patterns

    sampler = RssSampler()
    baseline = sampler.baseline
    store = await EvolutionStore.open(url, migrate=False)
    try:
        clock = time.perf_counter()
        facts = await store.execution_facts(reward_name="reward")
        facts_seconds = time.perf_counter() - clock
        settings = MinerSettings(outcome=outcome, min_support=min_support, fdr=fdr)
        result = find_patterns(facts, settings)
        clock = time.perf_counter()
        counts = await store.save_patterns(result.patterns, scope={"agent": None})
        save_seconds = time.perf_counter() - clock
    finally:
        await store.close()
    sampled = sampler.stop()
    phases = {"facts query": facts_seconds, **result.diagnostics["seconds"], "save": save_seconds}
    return {
        "outcome": outcome,
        "phases": phases,
        "total": sum(phases.values()),
        "baseline_mb": baseline / 2**20,
        "sampled_peak_mb": sampled / 2**20,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "diagnostics": {k: v for k, v in result.diagnostics.items() if k != "seconds"},
        "saved": counts,
        "patterns": [
            {
                "condition": p["condition"],
                "context": _context(p["context"]),
                "kind": p["kind"],
                "feature": p["feature"],
                "q": p["evidence"]["q_value"],
                "difference": p["effect"]["difference"],
                "outcome": p["effect"]["outcome"],
            }
            for p in result.patterns
        ],
    }


def _context(context: dict[str, Any]) -> str:
    parts = [f"agent:{context['agent']}"] if context.get("agent") else []
    parts += [f"task:{context['task_name']}"] if context.get("task_name") else []
    return " ".join(parts) or "overall"


def classify(pattern: dict[str, Any]) -> str:
    """planted (the very condition and context), related (shares a planted feature), null."""
    if (pattern["condition"], pattern["context"]) in PLANTED:
        return "planted"
    feature = pattern["feature"]
    kind, key, value = feature["type"], feature.get("key"), feature.get("value")
    if kind == "config":
        return "null" if key in NULL_CONFIG else "related"
    if kind in ("tag", "task"):
        return "null"
    if kind == "error":
        return "null" if value == "TimeoutError" else "related"
    # agent, model, prompt: each touched by a planted effect. Every tool condition is too: a
    # run that uses one tool uses more tools, so it is slower and likelier to hold the pair.
    return "related"


# -- the report -----------------------------------------------------------------------------------


def report(result: dict[str, Any]) -> None:
    d = result["diagnostics"]
    print(
        f"\noutcome={result['outcome']}: {d['executions']:,} executions, "
        f"{d['conditions']} candidate conditions, {d['contexts']} contexts, {d['tests']:,} tests "
        f"({d['scipy_tests']:,} rerun one by one with scipy's exact test), "
        f"{d['findings']} findings, "
        f"{d['dropped_by_agent_check']} dropped by the agent check, {d['patterns']} patterns"
    )
    print_table(
        ["phase", "seconds", "share"],
        [
            (name, f"{seconds:.2f}", f"{seconds / result['total']:.0%}")
            for name, seconds in result["phases"].items()
        ]
        + [("total", f"{result['total']:.2f}", "100%")],
    )
    print(
        f"peak RSS {result['peak_mb']:.0f} MB (psutil sampled {result['sampled_peak_mb']:.0f} MB; "
        f"{result['baseline_mb']:.0f} MB after imports)"
    )
    classes: dict[str, list[dict[str, Any]]] = {"planted": [], "related": [], "null": []}
    for pattern in result["patterns"]:
        classes[classify(pattern)].append(pattern)
    found = {(p["condition"], p["context"]): p["kind"] for p in classes["planted"]}
    rows = []
    for (condition, context), kind in PLANTED.items():
        got = found.get((condition, context))
        rows.append((f"{condition} [{context}]", kind, got or "not found"))
    print_table(["planted", "expected", "reported"], rows)
    total = len(result["patterns"])
    nulls = classes["null"]
    print(
        f"{len(classes['planted'])} planted, {len(classes['related'])} related, {len(nulls)} "
        f"null of {total} patterns"
        + (
            ": " + "; ".join(f"{p['condition']} [{p['context']}]" for p in nulls[:5])
            if nulls
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--spans", type=int, default=10, help="spans per execution")
    parser.add_argument("--quick", action="store_true", help="10,000 executions")
    parser.add_argument("--db", help="SQLite file to keep (and reuse when it holds the load)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--outcomes", default="status,reward", help="comma-separated")
    parser.add_argument("--min-support", type=int, default=20)
    parser.add_argument("--fdr", type=float, default=0.05)
    parser.add_argument("--mine", metavar="URL", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.mine:
        for outcome in args.outcomes.split(","):
            found = asyncio.run(mine(args.mine, outcome, args.min_support, args.fdr))
            print(json.dumps(found))
        return
    if args.quick:
        args.executions = 10_000

    print(machine_note())
    workdir = tempfile.mkdtemp(prefix="patterns-bench-")
    path = args.db or os.path.join(workdir, "patterns.db")
    url = f"sqlite:///{path}"
    wanted = {"executions": args.executions, "spans": args.spans, "seed": args.seed, "v": 3}
    if holds_load(path, wanted):
        print(f"reusing {path}: {args.executions:,} executions x {args.spans} spans")
    else:
        remove_sqlite(path)
        print(f"loading {args.executions:,} executions x {args.spans} spans into {path} ...")
        seconds = asyncio.run(load(url, args.executions, args.spans, args.seed))
        print(", ".join(f"{name} {value:.1f} s" for name, value in seconds.items()))
        remember_load(path, wanted)
    size = sum(os.path.getsize(path + s) for s in ("", "-wal") if os.path.exists(path + s))
    print(f"database {size / 2**20:,.0f} MB")

    for outcome in args.outcomes.split(","):
        command = [sys.executable, __file__, "--mine", url, "--outcomes", outcome]
        command += ["--min-support", str(args.min_support), "--fdr", str(args.fdr)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            raise SystemExit(f"mining {outcome} failed")
        report(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.db is None:
        forget_load(path)
        os.rmdir(workdir)


if __name__ == "__main__":
    main()
