"""Coach benchmark: what one generation of a loop costs in `Coach.observe` + `Coach.apply`,
with no analysis running and with one pending on a slow LLM. Target (issue 23): within a
millisecond or so of each other — the loop never waits for the LLM.

    .venv/bin/python bench/coach_bench.py                      # 20,000 generations each
    .venv/bin/python bench/coach_bench.py --generations 100000 --delay 60

The LLM is `FakeChatServer` on loopback answering after `--delay` seconds (longer than the
measured generations take), so the "pending" generations all run with an analysis in flight;
the "idle" coach never reaches its interval. Each generation reports three metrics, a
five-key config and 20 log lines of ~90 characters, as a small GA would.
"""

from __future__ import annotations

import argparse
import json
import time

from _common import machine_note, percentile, print_table

from evolution_store.learn import Coach
from evolution_store.learn.fake_llm import FakeChatServer

BOUNDS = {"mutation_rate": (0.0, 1.0), "population": (4, 200)}
CONFIG = {"mutation_rate": 0.1, "population": 50, "sigma": 0.3, "elite": 2, "ops": ["a", "b"]}
LINES = [f"log line {i} " + "x" * 80 for i in range(20)]


def generations(coach: Coach, count: int, start: int = 0) -> list[float]:
    """Microseconds of observe + apply for each of `count` generations."""
    spent = []
    config = CONFIG
    for generation in range(start, start + count):
        clock = time.perf_counter_ns()
        coach.observe(
            generation,
            metrics={"best": float(generation), "mean": 2.0, "diversity": 0.5},
            config=config,
            log_lines=LINES,
        )
        config = coach.apply(config)
        spent.append((time.perf_counter_ns() - clock) / 1e3)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=20_000)
    parser.add_argument("--delay", type=float, default=30.0, help="the LLM's reply delay, s")
    args = parser.parse_args()
    print(machine_note())
    reply = json.dumps({"assessment": "steady", "recommendations": []})
    rows = []
    with FakeChatServer(reply, delay=args.delay) as server:
        idle = Coach(server.base_url, parameters=BOUNDS, interval=10**9)
        busy = Coach(server.base_url, parameters=BOUNDS, interval=5)
        try:
            generations(busy, 5)  # the fifth generation starts an analysis
            for name, coach, start in (("no analysis", idle, 0), ("analysis pending", busy, 5)):
                spent = generations(coach, args.generations, start)
                rows.append(
                    [
                        name,
                        f"{percentile(spent, 50):.1f}",
                        f"{percentile(spent, 99):.1f}",
                        f"{max(spent):.0f}",
                    ]
                )
            stats = busy.stats()
        finally:
            idle.close()
            busy.close(timeout=0.1)
    print(f"{args.generations:,} generations each; LLM reply delay {args.delay:g} s")
    print_table(["coach", "p50 µs", "p99 µs", "max µs"], rows)
    print(
        f"while pending: analysis in flight {stats['in_flight']}, "
        f"{stats['skipped']} intervals skipped (never queued)"
    )


if __name__ == "__main__":
    main()
