"""APO: Pareto prompt evolution that learns from failure feedback, gated against regressions.

One iteration makes one child of a population member: by reflection (an LLM reads the parent's
failures — on a fresh train minibatch, and those already known on train and valset — with
their feedback, and rewrites it), by crossover of two members that succeed on different
examples, or by a heuristic mutation. The child is screened on the train examples involved
and, if it beats its parent there, judged by the regression gate on the valset (target first,
then control, stopping as soon as the verdict is known). Children that pass become `candidate`s and
join the population, which NSGA-II trims over (success, -tokens, -latency). The search sees
only `trainset` and `valset`, and never makes more than `max_metric_calls` metric calls.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import random
import secrets
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..llm import LLMBudgetExhausted, LLMCall, resolve_llm
from .candidates import Candidate, OptimizeResult, Progress
from .coaching import coach_step
from .evaluation import BudgetExhausted, EvalRecord, EvaluateFn, Evaluation, Evaluator, example_ids
from .gate import GateVerdict, judge, plan_gate, regressions, target_improved
from .guardrails import refusal, template_variables
from .mutations import HEURISTIC_MUTATIONS, MutationContext, crossover, different
from .pareto import nsga2_survivors, pareto_front
from .recorder import NullRecorder, Recorder, StoreRecorder
from .reflection import Failure, meta_prompt, parse_reply
from .span_capture import SpanCapture

__all__ = ["ApoSettings", "optimize_prompt", "optimize_prompt_async"]

_PASS = 1.0 - 1e-9


@dataclass(frozen=True)
class ApoSettings:
    """Every tuning knob of the search, with its default (keyword arguments of
    `optimize_prompt`)."""

    population_size: int = 8  # members NSGA-II keeps as parents
    minibatch_size: int = 3  # fresh train examples the parent is run on per reflection
    max_failures_shown: int = 12  # failing examples (input + feedback) shown to the LLM
    reflect_on_valset: bool = True  # show the parent's valset failures too (already paid for)
    crossover_rate: float = 0.3  # chance an iteration crosses two complementary members
    heuristic_rate: float = 0.1  # chance of a heuristic mutation while an LLM is available
    gate_noise: float = 0.05  # rate a passing example fails on a rerun (0: deterministic)
    gate_alpha: float = 0.05  # level of the gate's control-regression test
    gate_gain_alpha: float = 1.0  # level of the sign test that the valset gain beats noise
    max_prompt_chars: int | None = None  # length cap; default max(2000, 4 x the seed's)
    max_llm_calls: int = 1000  # cap on LLM calls per run
    max_llm_tokens: int = 5_000_000  # cap on LLM tokens (in + out) per run
    concurrency: int = 1  # metric calls in flight at once (async evaluate only)
    exploit_rate: float = 0.5  # chance the parent is simply the best member
    max_idle_iterations: int = 30  # stop after this many iterations spending no metric call


@dataclass
class _Run:
    """The mutable state of one optimisation."""

    settings: ApoSettings
    rng: random.Random
    evaluator: Evaluator
    recorder: Recorder
    llm: Any
    train: list[tuple[str, Mapping[str, Any]]]
    val: list[tuple[str, Mapping[str, Any]]]
    required_variables: set[str]
    max_chars: int
    agent: str
    run_id: str
    population: list[Candidate] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    seen_prompts: set[str] = field(default_factory=set)
    tried_pairs: set[tuple[str, str]] = field(default_factory=set)
    spend: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("baseline", "reflection", "screening", "gate"), 0)
    )
    warnings: list[str] = field(default_factory=list)
    llm_calls: int = 0
    generation: int = 0
    train_order: list[int] = field(default_factory=list)
    shown: Counter[str] = field(default_factory=Counter)

    def warn_once(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            warnings.warn(message, RuntimeWarning, stacklevel=4)


def _run_id(seed_prompt: str, seed: int) -> str:
    """Names the run in the store: the seed prompt's digest, the seed, and a random part so
    that running again records a new run (the search itself uses only the seeded rng)."""
    digest = hashlib.sha256(seed_prompt.encode()).hexdigest()[:8]
    return f"{digest}-{seed}-{secrets.token_hex(3)}"


# -- evaluation ---------------------------------------------------------------------------------


async def _evaluate_many(
    run: _Run,
    candidate: Candidate,
    examples: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    split: str,
    phase: str,
    stop: Callable[[dict[str, Evaluation]], bool] | None = None,
) -> tuple[dict[str, Evaluation], bool]:
    """Evaluate `candidate` on `examples` in order, `concurrency` at a time; after each chunk
    `stop(results so far)` may end it early. Returns the results and whether all were done
    (False when the budget ran out or `stop` said so)."""
    results: dict[str, Evaluation] = {}
    records: list[EvalRecord] = []
    chunk = max(1, run.settings.concurrency)
    complete = True
    try:
        for start in range(0, len(examples), chunk):
            part = examples[start : start + chunk]
            outcomes = await asyncio.gather(
                *(run.evaluator(candidate.prompt, example) for _id, example in part),
                return_exceptions=True,
            )
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            for (example_id, example), outcome in zip(part, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    continue
                evaluation, paid = outcome
                results[example_id] = evaluation
                if paid:
                    run.spend[phase] += 1
                    records.append(EvalRecord(example_id, example, split, evaluation))
            if failure is not None:
                raise failure
            if stop is not None and start + chunk < len(examples) and stop(results):
                complete = False
                break
    except BudgetExhausted:
        complete = False
    if records:
        await run.recorder.evaluations(candidate, records)
    if run.evaluator.errors:
        first = run.evaluator.first_error
        run.warn_once(
            f"evaluate() raised ({type(first).__name__}: {first}); "
            "such calls count as failures (score 0)"
        )
    return results, complete


def _val_measure(candidate: Candidate, results: Mapping[str, Evaluation]) -> None:
    candidate.measure(
        {i: e.score for i, e in results.items()},
        {i: (e.tokens or 0.0, e.latency_ms or 0.0) for i, e in results.items()},
    )


# -- choosing parents ---------------------------------------------------------------------------


def _select_parent(run: _Run) -> Candidate:
    """A member chosen in proportion to the valset examples on which it is among the best
    (an instance-level Pareto frontier, so a member that alone solves a few examples keeps
    being explored), plus one share for each member of the objective front."""
    population = run.population
    if len(population) == 1:
        return population[0]
    if run.rng.random() < run.settings.exploit_rate:
        return _best(population)
    weights = [0] * len(population)
    for example_id in population[0].scores:
        top = max(c.scores.get(example_id, 0.0) for c in population)
        for index, c in enumerate(population):
            if c.scores.get(example_id, 0.0) >= top - 1e-9 and top > 0:
                weights[index] += 1
    front = {id(c) for c in pareto_front(population)}
    weights = [w + (1 if id(c) in front else 0) for w, c in zip(weights, population, strict=True)]
    if not any(weights):
        return run.rng.choice(population)
    return run.rng.choices(population, weights=weights, k=1)[0]


def _passes(candidate: Candidate) -> set[str]:
    return {i for i, s in candidate.scores.items() if s >= _PASS}


def _crossover_pair(run: _Run) -> tuple[Candidate, Candidate] | None:
    """Two members each passing valset examples the other fails, the pair covering the most
    examples together first; pairs already crossed are skipped."""
    best: tuple[int, Candidate, Candidate] | None = None
    for i, a in enumerate(run.population):
        for b in run.population[i + 1 :]:
            if (a.id, b.id) in run.tried_pairs:
                continue
            pa, pb = _passes(a), _passes(b)
            if not (pa - pb) or not (pb - pa):
                continue
            union = len(pa | pb)
            if best is None or union > best[0]:
                best = (union, a, b)
    if best is None:
        return None
    _, a, b = best
    run.tried_pairs.add((a.id, b.id))
    # The better member leads: its instructions come first and the gate judges against it.
    return (a, b) if (a.success or 0) >= (b.success or 0) else (b, a)


# -- making children ----------------------------------------------------------------------------


def _next_train(run: _Run, k: int) -> list[tuple[str, Mapping[str, Any]]]:
    """The next `k` train examples of an epoch-shuffled order (every example is used before
    any is used again)."""
    batch = []
    for _ in range(min(k, len(run.train))):
        if not run.train_order:
            run.train_order = list(range(len(run.train)))
            run.rng.shuffle(run.train_order)
        batch.append(run.train[run.train_order.pop()])
    return batch


def _known_train_results(run: _Run, candidate: Candidate) -> list[tuple[str, Mapping, Evaluation]]:
    known = []
    for example_id, example in run.train:
        evaluation = run.evaluator.cached(candidate.prompt, example)
        if evaluation is not None:
            known.append((example_id, example, evaluation))
    return known


async def _reflection_batch(
    run: _Run, parent: Candidate
) -> tuple[list[tuple[str, Mapping[str, Any]]], list[tuple[str, Mapping, Evaluation]], list]:
    """The screening batch, the failures to show and the train examples the parent passes
    (read once: finding them walks the whole trainset). The parent runs on a fresh train
    minibatch; failures already known (on train, and with `reflect_on_valset` on the valset,
    where the parent was scored in full) are added at no cost, distinct feedback and those
    not shown before first, so one LLM call sees as many kinds of problem as it can. The
    screening batch is the train part: the valset part is judged by the gate."""
    batch = _next_train(run, run.settings.minibatch_size)
    await _evaluate_many(run, parent, batch, split="train", phase="reflection")
    known = _known_train_results(run, parent)
    passes = [x for _i, x, e in known if e.score >= _PASS]
    if run.settings.reflect_on_valset:
        known += [
            (i, x, e)
            for i, x in run.val
            if (e := run.evaluator.cached(parent.prompt, x)) is not None
        ]
    fresh_ids = {i for i, _ in batch}
    failing = [(i, x, e) for i, x, e in known if e.score < _PASS]
    failing.sort(key=lambda r: (run.shown[r[0]], r[0] not in fresh_ids))
    chosen: list[tuple[str, Mapping, Evaluation]] = []
    feedbacks: set[str] = set()
    limit = run.settings.max_failures_shown
    for record in failing:  # distinct symptoms first, then the rest
        if record[2].feedback not in feedbacks and len(chosen) < limit:
            chosen.append(record)
            feedbacks.add(record[2].feedback)
    for record in failing:
        if record not in chosen and len(chosen) < limit:
            chosen.append(record)
    run.shown.update(i for i, _, _ in chosen)
    train_ids = {i for i, _ in run.train}
    screen = list(batch) + [(i, x) for i, x, _ in chosen if i in train_ids and i not in fresh_ids]
    return screen, chosen, passes


def _ask_llm(run: _Run, messages: list[dict]) -> str | None:
    """The LLM's reply, or None when there is no usable LLM (said once; the run goes on with
    heuristics)."""
    if run.llm is None:
        return None
    if run.llm_calls >= run.settings.max_llm_calls:
        run.warn_once(f"LLM call cap reached ({run.settings.max_llm_calls}); heuristics only now")
        run.llm = None
        return None
    run.llm_calls += 1
    try:
        return run.llm.complete(messages)
    except LLMBudgetExhausted as exc:
        run.warn_once(f"LLM budget spent ({exc}); heuristic mutations only from now on")
    except Exception as exc:  # noqa: BLE001 - any LLM failure means: go on without it
        run.warn_once(
            f"no LLM reachable ({type(exc).__name__}: {exc}); falling back to heuristic mutations"
        )
    run.llm = None
    return None


async def _propose(run: _Run) -> tuple[str, Candidate, list[Candidate], list, str] | None:
    """(operator, lead parent, all parents, screening batch, child text), or None when this
    iteration produced nothing worth evaluating."""
    rng = run.rng
    pair = _crossover_pair(run) if rng.random() < run.settings.crossover_rate else None
    if pair is not None:
        lead, other = pair
        return "crossover", lead, [lead, other], [], crossover(lead.prompt, other.prompt)
    parent = _select_parent(run)
    screen, failures, passes = await _reflection_batch(run, parent)
    use_llm = run.llm is not None and rng.random() >= run.settings.heuristic_rate
    if use_llm and failures:
        shown = [Failure(x, e.feedback, e.score) for _i, x, e in failures]
        messages = meta_prompt(parent.prompt, shown, len(passes))
        reply = await asyncio.to_thread(_ask_llm, run, messages)
        if reply is not None:
            return "reflection", parent, [parent], screen, parse_reply(reply, parent.prompt) or ""
    if use_llm and not failures:
        return None  # the parent passes this minibatch: nothing to reflect on (as GEPA skips)
    name = rng.choice(sorted(HEURISTIC_MUTATIONS))
    context = MutationContext(
        failures=[(x, e.feedback) for _i, x, e in failures],
        passes=passes,
    )
    return name, parent, [parent], screen, HEURISTIC_MUTATIONS[name](parent.prompt, rng, context)


def _screen_passed(
    run: _Run,
    parent: Candidate,
    child: Candidate,
    results: Mapping[str, Evaluation],
    screen: list,
) -> bool:
    """The child must beat its parent on the screening batch (strictly: a tie is not worth a
    gate's calls). Where the parent passed the whole batch there is nothing to beat: a
    reflection child (made from failures elsewhere) must only not fall, any other child must
    also be shorter (a cheaper prompt is progress on the front)."""
    child_total = parent_total = 0.0
    for example_id, example in screen:
        if example_id not in results:
            return False
        child_total += results[example_id].score
        parent_total += run.evaluator.cached(parent.prompt, example).score  # type: ignore[union-attr]
    if child_total > parent_total + 1e-9:
        return True
    if parent_total < len(screen) * _PASS or child_total < parent_total - 1e-9:
        return False
    return child.origin == "reflection" or len(child.prompt) < len(parent.prompt)


async def _gate(run: _Run, parent: Candidate, child: Candidate) -> GateVerdict:
    """Judge the child on the valset examples its parent was scored on: target first (a
    child that fixes nothing is refused before control is paid for), then control, stopping
    at the first regression the noise allowance cannot absorb."""
    settings = run.settings
    plan = plan_gate(
        parent.scores, settings.gate_noise, settings.gate_alpha, settings.gate_gain_alpha
    )
    by_id = dict(run.val)
    target = [(i, by_id[i]) for i in plan.target_ids]
    control = [(i, by_id[i]) for i in plan.control_ids]
    run.rng.shuffle(control)
    scores: dict[str, float] = {}

    results, complete = await _evaluate_many(run, child, target, split="val", phase="gate")
    scores.update({i: e.score for i, e in results.items()})
    if complete and (not plan.target_ids or target_improved(plan, parent.scores, scores)):

        def too_many(done: dict[str, Evaluation]) -> bool:
            merged = {**scores, **{i: e.score for i, e in done.items()}}
            return len(regressions(plan, parent.scores, merged)) > plan.allowed_regressions

        results_c, complete = await _evaluate_many(
            run, child, control, split="val", phase="gate", stop=too_many
        )
        results.update(results_c)
        scores.update({i: e.score for i, e in results_c.items()})
    if len(scores) == len(parent.scores):
        _val_measure(child, results)
    cheaper = child.tokens is not None and (child.tokens < (parent.tokens or 0.0) - 1e-9)
    return judge(plan, parent.scores, scores, cheaper=cheaper, complete=complete)


async def _iterate(run: _Run) -> bool:
    """One child, start to verdict. Returns whether it spent any metric call."""
    before = run.evaluator.calls
    proposal = await _propose(run)
    if proposal is None:
        return run.evaluator.calls > before
    origin, parent, parents, screen, text = proposal
    if not text or not different(text, parent.prompt) or text in run.seen_prompts:
        return run.evaluator.calls > before
    run.seen_prompts.add(text)
    run.generation += 1
    child = Candidate(
        id="",
        prompt=text,
        parent_ids=[p.id for p in parents],
        origin=origin,
        generation=run.generation,
    )
    refused = refusal(text, required_variables=run.required_variables, max_chars=run.max_chars)
    child.id = await run.recorder.new_candidate(child)
    run.candidates.append(child)
    if refused:
        await _retire(run, child, f"refused by guardrails: {refused}")
        return run.evaluator.calls > before
    if screen:
        results, _ = await _evaluate_many(run, child, screen, split="train", phase="screening")
        if not _screen_passed(run, parent, child, results, screen):
            await _retire(run, child, "did not beat its parent on the screening minibatch")
            return True
    await run.recorder.set_status(child, "experimental", "passed screening; gate next")
    child.status = "experimental"
    verdict = await _gate(run, parent, child)
    await run.recorder.gate(parent, child, verdict)
    if not verdict.passed:
        await _retire(run, child, verdict.reason)
        return True
    child.status = "candidate"
    child.note = verdict.reason
    await run.recorder.set_status(child, "candidate", verdict.reason)
    run.population.append(child)
    run.population = nsga2_survivors(run.population, run.settings.population_size)
    return True


async def _retire(run: _Run, child: Candidate, reason: str) -> None:
    child.status = "archived"
    child.note = reason
    await run.recorder.set_status(child, "archived", reason)


# -- the run ------------------------------------------------------------------------------------


def _best(population: Sequence[Candidate]) -> Candidate:
    return max(
        population, key=lambda c: (c.success or 0.0, -(c.tokens or 0.0), -(c.latency_ms or 0.0))
    )


async def _baseline(run: _Run, seed_prompt: str) -> Candidate:
    seed = Candidate(id="", prompt=seed_prompt, parent_ids=[], origin="seed", generation=0)
    seed.id = await run.recorder.new_candidate(seed)
    run.seen_prompts.add(seed_prompt)
    run.candidates.append(seed)
    results, _ = await _evaluate_many(run, seed, run.val, split="val", phase="baseline")
    if results and run.evaluator.errors == len(results):
        # Every call failing is a bug in evaluate, not a bad prompt: searching on is pointless.
        raise RuntimeError(
            f"evaluate() raised on every valset example; the first: {run.evaluator.first_error!r}"
        ) from run.evaluator.first_error
    _val_measure(seed, results)
    seed.status = "experimental"
    await run.recorder.set_status(seed, "experimental", "the seed prompt, scored on the valset")
    run.population.append(seed)
    return seed


def _report(run: _Run, progress: Callable[[Progress], None] | None) -> None:
    if progress is None:
        return
    best = _best(run.population)
    progress(
        Progress(
            calls_used=run.evaluator.calls,
            budget=run.evaluator.budget,
            best_success=best.success or 0.0,
            front_size=len(pareto_front(run.population)),
            generation=run.generation,
        )
    )


def _examples(name: str, examples: Sequence[Mapping[str, Any]], prefix: str) -> list:
    if not isinstance(examples, Sequence) or isinstance(examples, str | bytes):
        raise TypeError(f"{name} must be a list of dicts")
    for index, example in enumerate(examples):
        if not isinstance(example, Mapping):
            raise TypeError(f"{name}[{index}] is {type(example).__name__}, not a dict")
    ids = example_ids(examples, prefix)
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name} has two examples with the same id")
    return list(zip(ids, examples, strict=True))


def _split_apart(train: list, val: list) -> list:
    """The valset with `val:` before any id that names a different train example (two
    splits numbered from 0, say), so every id means one example in the store and the gate."""
    by_id = dict(train)
    return [
        (f"val:{i}" if i in by_id and by_id[i] != example else i, example) for i, example in val
    ]


async def optimize_prompt_async(
    seed_prompt: str,
    trainset: Sequence[Mapping[str, Any]],
    valset: Sequence[Mapping[str, Any]] | None,
    evaluate: EvaluateFn,
    *,
    llm: Any = "http://127.0.0.1:1234/v1",
    llm_model: str | None = None,
    max_metric_calls: int = 2000,
    seed: int = 0,
    store: Any = None,
    agent: str = "agent",
    progress: Callable[[Progress], None] | None = None,
    coach: Any = None,
    **tuning: Any,
) -> OptimizeResult:
    """`optimize_prompt` for callers already in an event loop (an `EvolutionStore` opened in
    that loop can be passed as `store`)."""
    known = {f.name for f in fields(ApoSettings)}
    unknown = set(tuning) - known
    if unknown:
        raise TypeError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
    settings = ApoSettings(**tuning)
    if not isinstance(seed_prompt, str) or not seed_prompt.strip():
        raise ValueError("seed_prompt must be a non-empty string")
    if max_metric_calls < 1:
        raise ValueError("max_metric_calls must be at least 1")
    train = _examples("trainset", trainset, "train")
    val = _split_apart(train, _examples("valset", valset, "val")) if valset else list(train)
    if not train:
        raise ValueError("trainset is empty")
    recorder: Recorder = NullRecorder() if store is None else StoreRecorder(store)
    run_id = _run_id(seed_prompt, seed)

    def on_call(call: LLMCall) -> None:
        recorder.llm_call(call)

    client = resolve_llm(
        llm,
        llm_model,
        max_calls=settings.max_llm_calls,
        max_tokens=settings.max_llm_tokens,
        on_call=on_call,
    )
    if client is not None and getattr(client, "on_call", on_call) is None:
        client.on_call = on_call  # a ChatLLM handed in: trace its calls too
    capture = SpanCapture()
    run = _Run(
        settings=settings,
        rng=random.Random(seed),
        evaluator=Evaluator(evaluate, max_metric_calls, capture if capture.available else None),
        recorder=recorder,
        llm=client,
        train=train,
        val=val,
        required_variables=template_variables(seed_prompt),
        max_chars=settings.max_prompt_chars or max(2000, 4 * len(seed_prompt)),
        agent=agent,
        run_id=run_id,
    )
    await recorder.open(
        agent=agent,
        run_id=run_id,
        seed_prompt=seed_prompt,
        settings={"seed": seed, "max_metric_calls": max_metric_calls, **vars(settings)},
    )
    try:
        baseline = await _baseline(run, seed_prompt)
        _report(run, progress)
        idle = iteration = 0
        while run.evaluator.remaining > 0 and idle < settings.max_idle_iterations:
            seen = len(run.candidates)
            spent = await _iterate(run)
            idle = 0 if spent else idle + 1
            _report(run, progress)
            if coach is not None:
                iteration += 1
                run.settings = await coach_step(coach, run, iteration, seen)
        await recorder.flush()
    finally:
        await recorder.close()
        if isinstance(llm, str) and client is not None:
            client.close()
    # Members NSGA-II dropped as parents passed their gate all the same: all are offered.
    promoted = [baseline] + [c for c in run.candidates if c.status == "candidate"]
    return OptimizeResult(
        best=_best(promoted),
        front=pareto_front(promoted),
        candidates=run.candidates,
        baseline=baseline,
        metric_calls=run.evaluator.calls,
        budget=max_metric_calls,
        generations=run.generation,
        spend=dict(run.spend),
        llm_calls=run.llm_calls,
        run_id=run_id,
        warnings=list(run.warnings),
    )


@functools.wraps(optimize_prompt_async, assigned=("__annotations__", "__type_params__"))
def optimize_prompt(*args: Any, **kwargs: Any) -> OptimizeResult:
    """Evolve `seed_prompt` to succeed more often on `evaluate`, at no more than
    `max_metric_calls` calls of it. `evaluate(prompt, example)` (sync or async) returns an
    `Evaluation` or a float score in [0, 1]. `llm` is an OpenAI-compatible base URL, an object
    with `.complete(messages) -> str`, or None (heuristic mutations only). With `store` (a
    database URL or an `EvolutionStore`) every candidate, evaluation, gate and LLM call is
    recorded. Same seed, evaluations and LLM replies give the same result. Tuning keywords:
    `ApoSettings`. `coach` (a `Coach`) may retune them, and the LLM's temperature, while the
    run goes (see `apo.coaching`). (The signature is `optimize_prompt_async`'s.)"""
    coroutine = optimize_prompt_async(*args, **kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from inside an event loop (a notebook): run ours on a thread of its own.
    outcome: dict[str, Any] = {}

    def runner() -> None:
        try:
            outcome["result"] = asyncio.run(coroutine)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=runner, name="apo")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
