"""A genetic algorithm coached by an LLM while it runs: minimise the Rastrigin function, starting
from poor parameters (a tiny population, almost no mutation), with a `Coach` that reads the
recent generations every few generations and retunes the GA without ever pausing it.

    python examples/coach_ga.py                          # stand-in LLM, offline, a few seconds
    python examples/coach_ga.py --store sqlite:///ga.db  # also record the coach's trail
    python examples/coach_ga.py --llm http://127.0.0.1:1234/v1 --model qwen2.5-7b-instruct

Without `--llm`, a stand-in LLM (a loopback OpenAI-compatible server that answers after a
delay, as a model would) gives the advice a sensible model gives for this state. To use a real
model, start LM Studio's local server (Developer tab → Start Server, default port 1234) with
an instruct model loaded and pass its base URL with `--llm` (or set EVOLUTION_LLM_BASE_URL);
any OpenAI-compatible server works the same.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import time

from evolution_store.learn import Coach
from evolution_store.learn.fake_llm import FakeChatServer

DIMENSIONS = 6
#: what the coach may change, and within which bounds
PARAMETERS = {"population": (4, 200), "mutation_rate": (0.0, 1.0), "sigma": (0.001, 2.0)}
POOR_START = {"population": 6, "mutation_rate": 0.01, "sigma": 0.01, "elite": 2, "tournament": 3}


def rastrigin(x: list[float]) -> float:
    """0 at the origin, a local minimum at every integer point: easy to get stuck in."""
    return 10 * len(x) + sum(v * v - 10 * math.cos(2 * math.pi * v) for v in x)


def next_generation(population: list[list[float]], cfg: dict, rng: random.Random) -> list:
    """Elitism, tournament selection, blend crossover and Gaussian mutation."""
    ranked = sorted((rastrigin(x), x) for x in population)
    children = [list(x) for _score, x in ranked[: cfg["elite"]]]
    size = min(cfg["tournament"], len(ranked))
    while len(children) < cfg["population"]:
        a, b = (min(rng.sample(ranked, size))[1] for _ in range(2))
        child = [(u + v) / 2 + rng.uniform(-0.5, 0.5) * (u - v) for u, v in zip(a, b, strict=True)]
        child = [
            v + rng.gauss(0, cfg["sigma"]) if rng.random() < cfg["mutation_rate"] else v
            for v in child
        ]
        children.append([max(-5.12, min(5.12, v)) for v in child])
    return children


def stand_in_llm(messages: list[dict]) -> str:
    """What a sensible model answers for this GA: grow a tiny population, mutate more when the
    run has stalled; nothing once the parameters are reasonable."""
    prompt = messages[-1]["content"]
    config = json.loads(re.search(r"\(complete\)\n(.*?)\n\n##", prompt, re.S).group(1))
    advice = []
    if config["population"] < 40:
        advice.append(("population", 60, "six individuals cannot keep diversity"))
    if config["mutation_rate"] < 0.1:
        advice.append(("mutation_rate", 0.3, "best has stalled: mutation is too rare to escape"))
    if config["sigma"] < 0.1:
        advice.append(("sigma", 0.4, "steps of 0.01 cannot leave a Rastrigin basin (width 1)"))
    return json.dumps(
        {
            "assessment": "stalled in a local minimum" if advice else "healthy; keep going",
            "recommendations": [{"parameter": p, "value": v, "reason": r} for p, v, r in advice],
        }
    )


def run(coach: Coach, generations: int, seed: int) -> tuple[float, float]:
    rng = random.Random(seed)
    cfg = dict(POOR_START)
    population = [[rng.uniform(-5.12, 5.12) for _ in range(DIMENSIONS)] for _ in range(6)]
    first = None
    for gen in range(generations):
        population = next_generation(population, cfg, rng)
        scored = sorted((rastrigin(x), x) for x in population)
        scores = [score for score, _x in scored]
        first = scores[0] if first is None else first
        time.sleep(0.005)  # stands in for a real fitness function's cost
        spread = max(max(col) - min(col) for col in zip(*population, strict=True))
        coach.observe(
            gen,
            metrics={"best": scores[0], "mean": sum(scores) / len(scores), "diversity": spread},
            config=cfg,
            log_lines=[f"best individual {[round(v, 3) for v in scored[0][1]]}"],
        )
        cfg = coach.apply(cfg)  # never waits: returns cfg with whatever advice has arrived
    return first, scores[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llm", help="OpenAI-compatible base URL (default: a stand-in LLM)")
    parser.add_argument("--model", help="model name for --llm (default EVOLUTION_LLM_MODEL)")
    parser.add_argument("--store", help="database URL to record the coach's trail in")
    parser.add_argument("--generations", type=int, default=250)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()

    stand_in = None if args.llm else FakeChatServer(stand_in_llm, delay=0.1).start()
    try:
        with Coach(
            args.llm or stand_in.base_url,
            args.model,
            parameters=PARAMETERS,
            interval=10,
            max_log_generations=20,
            metric="best",
            goal="min",
            store=args.store,
            run_id=f"coach-ga-{args.seed}" if args.store else None,
        ) as coach:
            first, last = run(coach, args.generations, args.seed)
    finally:
        if stand_in is not None:
            stand_in.close()

    print(f"best {first:.2f} -> {last:.2f} over {args.generations} generations")
    for application in coach.applications:
        changes = ", ".join(f"{p} {a} -> {b}" for p, (a, b) in application.changes.items())
        print(f"applied at generation {application.generation}: {changes}")
    stats = coach.stats()
    print(
        f"analyses {stats['analyses']} (skipped {stats['skipped']}, failed {stats['failed']}); "
        f"recommendations {stats['recommendations']}: applied {stats['applied']}, "
        f"refused {stats['refused']}"
    )
    for effect in stats["effects"]:
        if effect["change"] is not None:
            print(
                f"after generation {effect['generation']}: mean best {effect['before']:.2f} over "
                f"the {effect['n_before']} generations before, {effect['after']:.2f} over the "
                f"{effect['n_after']} after"
            )
    if args.store:
        print(f"markers: evolution-store serve --db {args.store}, then GET /api/v1/markers")


if __name__ == "__main__":
    main()
