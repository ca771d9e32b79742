"""Prompt optimisers at equal metric-call budgets on the simulated agent of `apo_env.py`.

For each seed: a fresh environment (its own train / val / test examples) and a fresh fake
reflection LM (`FakeReflectionLM`, `--error-rate` of mistakes) behind one `FakeChatServer`;
then every optimiser at every budget. Each run's chosen prompt is judged on the test split,
which no optimiser sees, and so is each member of the front it offers, for the hypervolume.
Figures are means ± sample sd over seeds.

    .venv/bin/python bench/apo_bench.py                        # 500/1000/2000 calls, 5 seeds
    .venv/bin/python bench/apo_bench.py --quick                # 500 calls, 2 seeds
    .venv/bin/python bench/apo_bench.py --only gepa ours --budgets 2000 --seeds 10

**Front hypervolume**: the volume a front dominates in the unit cube of (1 - success,
tokens / T, latency / L) with reference point (1, 1, 1), where T and L are 4x the seed
prompt's mean tokens and latency on the test split (points past them count for nothing);
each front member is placed by its test figures. The front is the optimiser's own: ours its
`result.front`; GEPA, random search and the GA have none, so theirs is the non-dominated set
(val success, tokens, latency) of every prompt they scored on the whole valset.
"""

from __future__ import annotations

import argparse
import ast
import functools
import statistics
import sys
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass
from types import SimpleNamespace

from _common import machine_note, print_table
from apo_baselines import OPTIMISERS, RunResult, run_ours
from apo_env import REFERENCE_PROMPT, ApoEnv, FakeReflectionLM, Judgement
from deap.benchmarks.tools import hypervolume
from scipy import stats

from evolution_store.learn.fake_llm import FakeChatServer

HV_SCALE = 4.0  # T and L: this many times the seed prompt's test tokens and latency


@dataclass
class Measured:
    run: RunResult
    test: Judgement
    hypervolume: float


def front_hypervolume(front: list[Judgement], seed: Judgement) -> float:
    """DEAP's hypervolume (which minimises `-wvalues`) of the front's test figures."""
    max_tokens, max_latency = HV_SCALE * seed.tokens, HV_SCALE * seed.latency_ms
    points = [
        SimpleNamespace(
            fitness=SimpleNamespace(
                wvalues=(
                    j.success - 1.0,
                    -min(1.0, j.tokens / max_tokens),
                    -min(1.0, j.latency_ms / max_latency),
                )
            )
        )
        for j in front
    ]
    return float(hypervolume(points, ref=[1.0, 1.0, 1.0])) if points else 0.0


def _mean_sd(values: list[float], fmt: str = "{:.3f}") -> str:
    if len(values) < 2:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def _run_all(args: argparse.Namespace) -> tuple[dict, dict, Counter, int]:
    results: dict[tuple[str, int], list[Measured]] = defaultdict(list)
    fixed: dict[str, list[Judgement]] = defaultdict(list)  # the seed and reference prompts
    mistakes: Counter[str] = Counter()
    replies = 0
    for seed in range(args.seeds):
        env = ApoEnv(seed)
        seed_judged = env.judge(env.seed_prompt, env.test)
        fixed["seed prompt"].append(seed_judged)
        fixed["reference prompt"].append(env.judge(REFERENCE_PROMPT, env.test))
        lm = FakeReflectionLM(seed, error_rate=args.error_rate)
        with FakeChatServer(lm) as server:
            for budget in args.budgets:
                for name in args.only:
                    started = time.perf_counter()
                    optimiser = OPTIMISERS[name]
                    if name == "ours" and args.tune:
                        optimiser = functools.partial(run_ours, **args.tune)
                    run = optimiser(env, budget, seed, server.base_url)
                    assert run.metric_calls <= budget, (name, budget, run.metric_calls)
                    front = [env.judge(prompt, env.test) for prompt in run.front]
                    measured = Measured(
                        run,
                        env.judge(run.best_prompt, env.test),
                        front_hypervolume(front, seed_judged),
                    )
                    results[(name, budget)].append(measured)
                    print(
                        f"seed {seed} budget {budget} {name}: test {measured.test.success:.3f}, "
                        f"calls {run.metric_calls}, {time.perf_counter() - started:.1f}s"
                        + (f" ({run.note})" if run.note else ""),
                        file=sys.stderr,
                    )
        mistakes.update(lm.mistakes)
        replies += lm.replies
    return results, fixed, mistakes, replies


def _table(results: dict, fixed: dict, budgets: list[int], names: list[str]) -> None:
    headers = [
        "optimiser",
        "budget",
        "test success",
        "val success",
        "tokens",
        "latency ms",
        "front HV",
        "front",
        "calls used (max)",
        "LLM calls",
        "s / run",
    ]
    rows = []
    for label, judged in fixed.items():
        rows.append(
            [
                label,
                "-",
                _mean_sd([j.success for j in judged]),
                "",
                f"{statistics.mean(j.tokens for j in judged):.0f}",
                f"{statistics.mean(j.latency_ms for j in judged):.0f}",
                "",
                "",
                "",
                "",
                "",
            ]
        )
    for budget in budgets:
        for name in names:
            runs = results[(name, budget)]
            rows.append(
                [
                    name,
                    budget,
                    _mean_sd([m.test.success for m in runs]),
                    _mean_sd([m.run.val_success for m in runs]),
                    f"{statistics.mean(m.test.tokens for m in runs):.0f}",
                    f"{statistics.mean(m.test.latency_ms for m in runs):.0f}",
                    _mean_sd([m.hypervolume for m in runs]),
                    f"{statistics.mean(len(m.run.front) for m in runs):.1f}",
                    f"{statistics.mean(m.run.metric_calls for m in runs):.0f} "
                    f"({max(m.run.metric_calls for m in runs)})",
                    f"{statistics.mean(m.run.llm_calls for m in runs):.0f}",
                    f"{statistics.mean(m.run.seconds for m in runs):.1f}",
                ]
            )
    print_table(headers, rows)


def _target(results: dict, budgets: list[int]) -> None:
    """Ours against the better GEPA at each budget, paired by seed (the same environment and
    LM): the issue's target is +0.05 at 2000 calls and never below at any budget."""
    print()
    for budget in budgets:
        ours = [m.test.success for m in results[("ours", budget)]]
        plain = [m.test.success for m in results[("gepa", budget)]]
        merge = [m.test.success for m in results[("gepa+merge", budget)]]
        better = "gepa+merge" if statistics.mean(merge) > statistics.mean(plain) else "gepa"
        rival = merge if better == "gepa+merge" else plain
        diffs = [a - b for a, b in zip(ours, rival, strict=True)]
        line = f"budget {budget}: ours - {better} = {statistics.mean(diffs):+.3f} (n={len(diffs)}"
        if len(diffs) > 1 and statistics.stdev(diffs) > 0:
            low, high = stats.ttest_rel(ours, rival).confidence_interval(0.95)
            line += f", 95% CI {low:+.3f} to {high:+.3f}"
        print(line + ")")


def _setting(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[500, 1000, 2000])
    parser.add_argument("--seeds", type=int, default=5, help="environments (and LM seeds)")
    parser.add_argument("--only", nargs="+", choices=list(OPTIMISERS), default=list(OPTIMISERS))
    parser.add_argument("--error-rate", type=float, default=0.3, help="the LM's mistake rate")
    parser.add_argument("--quick", action="store_true", help="500 calls, 2 seeds")
    parser.add_argument(
        "--tune",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="ApoSettings for ours, e.g. --tune gate_noise=0.03 population_size=6",
    )
    args = parser.parse_args()
    args.tune = dict(_setting(item) for item in args.tune)
    if args.quick:
        args.budgets, args.seeds = [500], 2
    warnings.simplefilter("ignore", RuntimeWarning)  # an optimiser's own notes, not ours
    print(f"# apo_bench: {machine_note()}")
    env = ApoEnv(0)
    print(
        f"# {len(env.train)} train / {len(env.val)} val / {len(env.test)} test examples a seed; "
        f"{args.seeds} seeds; LM error rate {args.error_rate}; budgets {args.budgets}"
        + (f"; ours tuned {args.tune}" if args.tune else "")
    )
    started = time.perf_counter()
    results, fixed, mistakes, replies = _run_all(args)
    print()
    _table(results, fixed, args.budgets, args.only)
    if {"ours", "gepa", "gepa+merge"} <= set(args.only):
        _target(results, args.budgets)
    made = ", ".join(f"{k} {v}" for k, v in sorted(mistakes.items()))
    print(f"\nLM replies {replies}, with a mistake {sum(mistakes.values())} ({made})")
    print(f"{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
