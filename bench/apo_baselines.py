"""The optimisers the APO bench compares, each run against `apo_env.ApoEnv` on one footing.

Every run goes through a `Ledger`: one call of the env's `evaluate` is one metric call, however
the optimiser batches or caches, and no call is made past the budget — the ledger refuses it
(`BudgetSpent`) before the env runs. GEPA checks its `max_metric_calls` only between
iterations, so an iteration that starts just under the budget would overshoot it by up to a
minibatch plus a full valset (66 calls here); GEPA's adapter asks the ledger for the whole
batch first, and when it does not fit the run ends there with the state GEPA had (a
candidate is added only after its whole valset evaluation, so that state is consistent).

- `run_ours`: `evolution_store.learn.optimize_prompt`, the LLM at the fake server's URL.
- `run_gepa`: `gepa.optimize` 0.1.4 with its defaults (or `use_merge=True`) through a
  `GEPAAdapter` over the env; its `reflection_lm` posts GEPA's reflection prompt to the same
  fake server over HTTP, so both talk to the same imperfect LM.
- `run_random`: random heuristic mutants of the seed (1-3 mutations each), each scored on the
  whole valset; the best on val wins.
- `run_ga`: the design's heuristic GA: the seed plus mutants, each parent of the top 3 gets one
  child per generation by one of the design's five mutations, the top 3 survive.

Each returns a `RunResult`: the prompt it would ship, the front it offers, what it spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from apo_env import ApoEnv, Outcome
from gepa import optimize as gepa_optimize
from gepa.core.adapter import EvaluationBatch
from gepa.strategies.eval_policy import FullEvaluationPolicy

from evolution_store.learn import Evaluation, optimize_prompt
from evolution_store.learn.apo.mutations import HEURISTIC_MUTATIONS, MutationContext

COMPONENT = "system_prompt"  # GEPA's name for the one text it evolves
#: The design's GA uses these five (remove_instruction came later, with the engine).
GA_MUTATIONS = ("add_emphasis", "add_constraint", "reorder_instructions", "add_example", "simplify")
GA_KEEP = 3


class BudgetSpent(Exception):
    """The next metric call (or batch) would pass the budget; none was made."""


@dataclass
class Ledger:
    """Counts and makes every metric call of one run, and remembers every valset score."""

    env: ApoEnv
    budget: int
    calls: int = 0
    val_scores: dict[str, dict[str, Outcome]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._val_ids = {example["id"] for example in self.env.val}

    @property
    def remaining(self) -> int:
        return self.budget - self.calls

    def reserve(self, n: int) -> None:
        if n > self.remaining:
            raise BudgetSpent(f"{n} calls asked, {self.remaining} left of {self.budget}")

    def evaluate(self, prompt: str, example: dict[str, Any]) -> Outcome:
        self.reserve(1)
        self.calls += 1
        outcome = self.env.evaluate(prompt, example)
        if example["id"] in self._val_ids:
            self.val_scores.setdefault(prompt, {})[example["id"]] = outcome
        return outcome

    def val_mean(self, prompt: str) -> tuple[float, float, float]:
        """(success, tokens, latency) of a prompt scored on the whole valset."""
        outcomes = list(self.val_scores[prompt].values())
        n = len(outcomes)
        return (
            sum(o.score for o in outcomes) / n,
            sum(o.tokens for o in outcomes) / n,
            sum(o.latency_ms for o in outcomes) / n,
        )

    def fully_scored(self) -> list[str]:
        return [p for p, s in self.val_scores.items() if len(s) == len(self._val_ids)]


@dataclass
class RunResult:
    optimiser: str
    budget: int
    seed: int
    best_prompt: str
    val_success: float  # the shipped prompt's success on val, as the optimiser measured it
    front: list[str]  # the prompts it offers as its Pareto front
    metric_calls: int
    llm_calls: int
    seconds: float
    note: str = ""


def _rank(ledger: Ledger, prompt: str) -> tuple[float, float, float]:
    success, tokens, latency = ledger.val_mean(prompt)
    return (success, -tokens, -latency)


def non_dominated(points: dict[str, tuple[float, float, float]]) -> list[str]:
    """Keys whose (success, tokens, latency) no other point beats on one and equals on all."""

    def dominates(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
        no_worse = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
        return no_worse and a != b

    return [k for k, p in points.items() if not any(dominates(q, p) for q in points.values())]


def _pool_front(ledger: Ledger, pool: Sequence[str]) -> list[str]:
    return non_dominated({p: ledger.val_mean(p) for p in pool})


def _score_val(ledger: Ledger, prompt: str) -> list[Outcome]:
    ledger.reserve(len(ledger.env.val))
    return [ledger.evaluate(prompt, example) for example in ledger.env.val]


def _context(examples: Sequence[dict[str, Any]], outcomes: Sequence[Outcome]) -> MutationContext:
    return MutationContext(
        failures=[(x, o.feedback) for x, o in zip(examples, outcomes, strict=True) if o.score < 1],
        passes=[x for x, o in zip(examples, outcomes, strict=True) if o.score >= 1],
    )


def _finish(
    name: str, ledger: Ledger, seed: int, best: str, front: list[str], llm: int, started: float
) -> RunResult:
    return RunResult(
        optimiser=name,
        budget=ledger.budget,
        seed=seed,
        best_prompt=best,
        val_success=ledger.val_mean(best)[0],
        front=front,
        metric_calls=ledger.calls,
        llm_calls=llm,
        seconds=time.perf_counter() - started,
    )


# -- ours ---------------------------------------------------------------------------------------


def run_ours(env: ApoEnv, budget: int, seed: int, base_url: str, **tuning: Any) -> RunResult:
    """`tuning`: `ApoSettings` keywords, passed on (the defaults when none)."""
    started = time.perf_counter()
    ledger = Ledger(env, budget)

    def evaluate(prompt: str, example: dict[str, Any]) -> Evaluation:
        o = ledger.evaluate(prompt, example)
        return Evaluation(
            score=o.score, feedback=o.feedback, tokens=o.tokens, latency_ms=o.latency_ms
        )

    result = optimize_prompt(
        env.seed_prompt,
        env.train,
        env.val,
        evaluate,
        llm=base_url,
        max_metric_calls=budget,
        seed=seed,
        **tuning,
    )
    assert result.metric_calls == ledger.calls <= budget, (result.metric_calls, ledger.calls)
    run = _finish(
        "ours",
        ledger,
        seed,
        result.best.prompt,
        [c.prompt for c in result.front],
        result.llm_calls,
        started,
    )
    run.val_success = result.best.success or 0.0
    refused = sum(1 for c in result.candidates if c.note.startswith("regressed control"))
    run.note = "spend " + " ".join(f"{k}={v}" for k, v in result.spend.items())
    run.note += f"; {len(result.candidates)} candidates, {refused} refused for control regressions"
    return run


# -- GEPA ---------------------------------------------------------------------------------------


class _EnvAdapter:
    """GEPA's adapter over the env: evaluate a batch (all of it within the budget, or none),
    and show the reflection LM each example's input, the answer and the feedback."""

    propose_new_texts = None  # GEPA's default reflection, with its default prompt

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def evaluate(
        self, batch: list[dict[str, Any]], candidate: dict[str, str], capture_traces: bool = False
    ) -> EvaluationBatch:
        self.ledger.reserve(len(batch))
        outcomes = [self.ledger.evaluate(candidate[COMPONENT], example) for example in batch]
        traces = [
            {"input": x["input"], "output": o.output, "feedback": o.feedback}
            for x, o in zip(batch, outcomes, strict=True)
        ]
        return EvaluationBatch(
            outputs=[o.output for o in outcomes],
            scores=[o.score for o in outcomes],
            trajectories=traces if capture_traces else None,
        )

    def make_reflective_dataset(
        self,
        candidate: dict[str, str],
        eval_batch: EvaluationBatch,
        components_to_update: list[str],
    ) -> dict[str, list[dict[str, str]]]:
        records = [
            {
                "Inputs": t["input"],
                "Generated Outputs": t["output"],
                "Feedback": t["feedback"] or "The answer was correct.",
            }
            for t in eval_batch.trajectories or []
        ]
        return {name: records for name in components_to_update}


class _StateGrab:
    """A GEPA callback that keeps a reference to the engine's state, so a run the ledger ends
    mid-iteration still yields what GEPA had found."""

    state: Any = None

    def on_iteration_start(self, event: dict[str, Any]) -> None:
        self.state = event["state"]


class _Quiet:
    def log(self, message: str) -> None:
        pass


def http_reflection_lm(client: httpx.Client, base_url: str) -> Callable[[str], str]:
    """GEPA's `reflection_lm`: its prompt, posted to an OpenAI-compatible server."""

    def complete(prompt: str | list[dict[str, Any]]) -> str:
        complete.calls += 1  # type: ignore[attr-defined]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        response = client.post(
            f"{base_url}/chat/completions", json={"model": "fake-reflection", "messages": messages}
        )
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"] or ""

    complete.calls = 0  # type: ignore[attr-defined]
    return complete


def run_gepa(env: ApoEnv, budget: int, seed: int, base_url: str, *, use_merge: bool) -> RunResult:
    started = time.perf_counter()
    ledger = Ledger(env, budget)
    grab = _StateGrab()
    with httpx.Client(timeout=30) as client:
        reflect = http_reflection_lm(client, base_url)
        try:
            gepa_optimize(
                seed_candidate={COMPONENT: env.seed_prompt},
                trainset=env.train,
                valset=env.val,
                adapter=_EnvAdapter(ledger),
                reflection_lm=reflect,
                max_metric_calls=budget,
                use_merge=use_merge,
                seed=seed,
                logger=_Quiet(),
                callbacks=[grab],
            )
            note = "stopped by GEPA"
        except BudgetSpent:
            note = "stopped by the ledger"
    state = grab.state
    assert state is not None, "GEPA never started an iteration"
    assert state.total_num_evals == ledger.calls <= budget, (state.total_num_evals, ledger.calls)
    pool = [c[COMPONENT] for c in state.program_candidates]
    best = state.program_candidates[FullEvaluationPolicy().get_best_program(state)][COMPONENT]
    name = "gepa+merge" if use_merge else "gepa"
    run = _finish(name, ledger, seed, best, _pool_front(ledger, pool), reflect.calls, started)  # type: ignore[attr-defined]
    run.note = f"{note}; {len(pool)} candidates"
    if use_merge:
        merged = sum(1 for parents in state.parent_program_for_candidate if len(parents) > 1)
        run.note += f", {merged} merged"
    return run


# -- heuristic baselines ------------------------------------------------------------------------


def run_random(env: ApoEnv, budget: int, seed: int) -> RunResult:
    started = time.perf_counter()
    ledger = Ledger(env, budget)
    rng = random.Random(seed)
    context = _context(env.val, _score_val(ledger, env.seed_prompt))
    names = sorted(HEURISTIC_MUTATIONS)
    tried = {env.seed_prompt}
    for _attempt in range(10_000):  # mutants that repeat one already tried cost nothing
        if ledger.remaining < len(env.val):
            break
        prompt = env.seed_prompt
        for _ in range(rng.randint(1, 3)):
            prompt = HEURISTIC_MUTATIONS[rng.choice(names)](prompt, rng, context)
        if prompt in tried:
            continue
        tried.add(prompt)
        _score_val(ledger, prompt)
    pool = ledger.fully_scored()
    best = max(pool, key=lambda p: _rank(ledger, p))
    return _finish("random", ledger, seed, best, _pool_front(ledger, pool), 0, started)


def run_ga(env: ApoEnv, budget: int, seed: int) -> RunResult:
    started = time.perf_counter()
    ledger = Ledger(env, budget)
    rng = random.Random(seed)
    contexts = {env.seed_prompt: _context(env.val, _score_val(ledger, env.seed_prompt))}
    population = [env.seed_prompt]
    stalled = 0
    while ledger.remaining >= len(env.val) and stalled < 50:
        children = []
        for parent in population:
            if ledger.remaining < len(env.val):
                break
            for _try in range(5):
                mutation = HEURISTIC_MUTATIONS[rng.choice(GA_MUTATIONS)]
                child = mutation(parent, rng, contexts[parent])
                if child not in contexts:
                    contexts[child] = _context(env.val, _score_val(ledger, child))
                    children.append(child)
                    break
        stalled = 0 if children else stalled + 1
        population = sorted(population + children, key=lambda p: _rank(ledger, p), reverse=True)
        population = population[:GA_KEEP]
    pool = ledger.fully_scored()
    best = max(pool, key=lambda p: _rank(ledger, p))
    return _finish("ga", ledger, seed, best, _pool_front(ledger, pool), 0, started)


OPTIMISERS: dict[str, Callable[[ApoEnv, int, int, str], RunResult]] = {
    "ours": run_ours,
    "gepa": lambda env, budget, seed, url: run_gepa(env, budget, seed, url, use_merge=False),
    "gepa+merge": lambda env, budget, seed, url: run_gepa(env, budget, seed, url, use_merge=True),
    "random": lambda env, budget, seed, _url: run_random(env, budget, seed),
    "ga": lambda env, budget, seed, _url: run_ga(env, budget, seed),
}
