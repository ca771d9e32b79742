"""Where an optimisation run leaves its trail: every candidate a registry prompt with its
lineage, every metric call a task, execution and reward, every gate a regression experiment,
every call of the reflection LLM a span. The engine talks to one `Recorder`; `NullRecorder`
keeps nothing, `StoreRecorder` writes through the `EvolutionStore` facade (no SQL here).

Ids the store sees (`run` = the run id, `example` = the example id, `prompt` = a prompt id):

- task ``apo:{run}:{example}`` (one per example and run; each candidate scored on it is an
  execution of it), execution ``apo:{run}:{example}:{prompt}``, reward
  ``apo:{run}:{example}:{prompt}:score`` (all three idempotent, so a retried write is harmless);
  an id past the store's 200 characters keeps its head and ends in a digest of the whole.
- the LLM's spans share one trace per run (its id derives from the run id), under a root span
  ``apo.optimize`` written at `close()`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from ...errors import Conflict
from ...models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from ...registry_models import (
    ExperimentIn,
    ExperimentStopIn,
    PromptIn,
    PromptStatusIn,
    ResultIn,
    ResultsIn,
)
from ...store import EvolutionStore
from ..llm import call_span
from .candidates import Candidate
from .evaluation import EvalRecord

if TYPE_CHECKING:
    from ..llm import LLMCall
    from .gate import GateVerdict

__all__ = ["OPTIMIZER_AGENT", "NullRecorder", "Recorder", "StoreRecorder"]

log = logging.getLogger(__name__)

#: the agent name the optimiser's own spans carry (DESIGN §7)
OPTIMIZER_AGENT = "evolution.optimizer"
#: an evaluation at or above this score is a succeeded execution, below it a failed one
SUCCESS_SCORE = 0.5
#: the status path the recorder walks; production is reached only by a person's approval
LIFECYCLE = ("draft", "experimental", "candidate")
#: metric calls written at once; enough for the group-commit writer to coalesce them
WRITE_CONCURRENCY = 32
#: LLM calls kept between flushes; past it the oldest go, counted in `dropped_calls`
MAX_BUFFERED_CALLS = 10_000
#: the store's longest task, execution, reward and experiment example id
MAX_ID = 200
#: the longest feedback a reward holds (RewardIn's limit)
MAX_FEEDBACK = 100_000
#: results per `add_experiment_results` call (ResultsIn's limit)
RESULTS_PER_POST = 10_000


class Recorder(Protocol):
    """What the engine reports while it runs. Every method is async except `llm_call`, which
    the LLM client calls from whatever thread made the call."""

    async def open(self, *, agent: str, run_id: str, seed_prompt: str, settings: dict) -> None:
        """Start a run of `agent` (before any other call)."""

    async def new_candidate(self, candidate: Candidate) -> str:
        """Record a new candidate; returns the id the engine gives it."""

    async def set_status(self, candidate: Candidate, status: str, note: str | None = None) -> None:
        """Move the candidate along draft → experimental → candidate (or to archived)."""

    async def evaluations(self, candidate: Candidate, records: Sequence[EvalRecord]) -> None:
        """Record metric calls the candidate just paid for."""

    async def gate(self, parent: Candidate, child: Candidate, verdict: GateVerdict) -> None:
        """Record a regression gate's runs and verdict."""

    def llm_call(self, call: LLMCall) -> None:
        """Note one call of the reflection LLM (buffered until `flush`)."""

    async def flush(self) -> None:
        """Write what is buffered."""

    async def close(self) -> None:
        """Flush and release what `open` took."""


class NullRecorder:
    """Records nothing: candidates are named ``apo-1``, ``apo-2``, … in creation order."""

    def __init__(self) -> None:
        self._count = 0

    async def open(self, *, agent: str, run_id: str, seed_prompt: str, settings: dict) -> None:
        pass

    async def new_candidate(self, candidate: Candidate) -> str:
        self._count += 1
        return f"apo-{self._count}"

    async def set_status(self, candidate: Candidate, status: str, note: str | None = None) -> None:
        pass

    async def evaluations(self, candidate: Candidate, records: Sequence[EvalRecord]) -> None:
        pass

    async def gate(self, parent: Candidate, child: Candidate, verdict: GateVerdict) -> None:
        pass

    def llm_call(self, call: LLMCall) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def close(self) -> None:
        pass


class StoreRecorder:
    """Records a run in an `EvolutionStore`, or in the database at a URL, which the recorder
    opens in `open()` and closes in `close()`.

    Usage::

        recorder = StoreRecorder("sqlite:///evolution.db")
        await recorder.open(agent="support", run_id="r1", seed_prompt=seed, settings={})
        seed_id = await recorder.new_candidate(seed_candidate)
        ...
        await recorder.close()

    Store errors (`EvolutionStoreError`) propagate: a run asked to be recorded is not silently
    left unrecorded."""

    def __init__(self, store: EvolutionStore | str) -> None:
        if not isinstance(store, EvolutionStore | str):
            raise TypeError(f"store must be an EvolutionStore or a database URL, not {store!r}")
        self._url = store if isinstance(store, str) else None
        self._store = store if isinstance(store, EvolutionStore) else None
        self._agent = ""
        self._run_id = ""
        self._settings: dict[str, Any] = {}
        self._started_ns = 0
        # prompt id -> version, for the executions' config
        self._versions: dict[str, int] = {}
        # tasks this run created: every candidate scored on an example is one more execution
        self._tasks: set[str] = set()
        self._lock = threading.Lock()
        self._calls: deque[LLMCall] = deque(maxlen=MAX_BUFFERED_CALLS)
        self._call_count = 0
        self.dropped_calls = 0
        self._closed = False

    @property
    def store(self) -> EvolutionStore:
        if self._store is None:
            raise RuntimeError("the recorder is not open: call open() first")
        return self._store

    async def open(self, *, agent: str, run_id: str, seed_prompt: str, settings: dict) -> None:
        if self._store is None:
            assert self._url is not None
            self._store = await EvolutionStore.open(self._url)
        self._agent, self._run_id, self._settings = agent, run_id, dict(settings)
        self._started_ns = time.time_ns()

    # -- the registry ------------------------------------------------------------------------

    async def new_candidate(self, candidate: Candidate) -> str:
        prompt = None
        if not candidate.parent_ids:
            # The seed may be the agent's production prompt: reuse it rather than add a copy.
            prompt = await self._prompt_with(candidate.prompt)
        if prompt is None:
            prompt, _ = await self.store.create_prompt(
                PromptIn(
                    agent=self._agent,
                    content=candidate.prompt,
                    parent_ids=candidate.parent_ids,
                    status="draft",
                    created_by="apo",
                    note=f"apo run {self._run_id}: {candidate.origin}",
                )
            )
        self._versions[prompt["id"]] = prompt["version"]
        return prompt["id"]

    async def _prompt_with(self, content: str) -> dict[str, Any] | None:
        """The agent's prompt with this content: the production one if it is, else the
        newest without parents, else the newest."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await self.store.list_prompts(agent=self._agent, cursor=cursor, limit=100)
            found.extend(p for p in page.items if p["content"] == content)
            cursor = page.next_cursor
            if cursor is None:
                break
        if not found:
            return None
        return max(
            found, key=lambda p: (p["status"] == "production", not p["parent_ids"], p["version"])
        )

    async def set_status(self, candidate: Candidate, status: str, note: str | None = None) -> None:
        """Walk the stored prompt forward to `status` (draft → experimental → candidate, one
        allowed move at a time), recording `candidate.fitness()` with each move. Backward
        moves, moves of production or archived prompts, and repeats with the same fitness are
        skipped; `production` is refused (only a person's approval makes it)."""
        if status == "production":
            raise ValueError("the optimiser never makes a prompt production: approve it instead")
        # Read what is stored now, not what this run last wrote: a person may have archived
        # or approved the prompt meanwhile, and theirs is the last word.
        stored = await self.store.get_prompt(candidate.id)
        fitness = _plain(candidate.fitness())
        renewed = fitness is not None and fitness != stored["fitness"]
        for step in _moves(stored["status"], status, renewed):
            change = PromptStatusIn(status=step, note=note, fitness=fitness)
            try:
                await self.store.set_prompt_status(candidate.id, change)
            except Conflict:
                return  # moved by someone else between the read and this write

    # -- metric calls ------------------------------------------------------------------------

    async def evaluations(self, candidate: Candidate, records: Sequence[EvalRecord]) -> None:
        """One task (per example), execution and reward per record, written concurrently so
        the store's group commit puts many in one transaction."""
        version = self._versions.get(candidate.id)
        await _bounded(
            (self._evaluation(candidate.id, version, record) for record in records),
            WRITE_CONCURRENCY,
        )

    async def _evaluation(self, prompt_id: str, version: int | None, record: EvalRecord) -> None:
        task_id = _fit(f"apo:{self._run_id}:{record.example_id}")
        execution_id = _fit(f"{task_id}:{prompt_id}")
        evaluation = record.evaluation
        if task_id not in self._tasks:
            task = TaskIn(
                id=task_id,
                name="apo.evaluate",
                input=dict(record.example),
                tags=["apo", f"apo-run:{self._run_id}", record.split],
            )
            await self.store.create_task(task)
            self._tasks.add(task_id)
        config = {
            "prompt_id": prompt_id,
            "prompt_version": version,
            "run_id": self._run_id,
            "example_id": record.example_id,
            "split": record.split,
        }
        await self.store.start_execution(task_id, ExecutionIn(id=execution_id, config=config))
        passed = evaluation.score >= SUCCESS_SCORE
        await self.store.set_execution_status(execution_id, "succeeded" if passed else "failed")
        dimensions = {
            "score": evaluation.score,
            "tokens": evaluation.tokens,
            "latency_ms": evaluation.latency_ms,
        }
        await self.store.add_reward(
            RewardIn(
                id=_fit(f"{execution_id}:score"),
                name="score",
                value=evaluation.score,
                dimensions={k: float(v) for k, v in dimensions.items() if v is not None},
                feedback=evaluation.feedback[:MAX_FEEDBACK] or None,
                source="code",
                tags=["apo"],
                execution_id=execution_id,
            )
        )

    # -- the regression gate -----------------------------------------------------------------

    async def gate(self, parent: Candidate, child: Candidate, verdict: GateVerdict) -> None:
        """A regression experiment: the parent's scores on target + control, the child's on
        what it was scored on, completed with the child as winner if it passed, else the parent
        (the baseline held)."""
        if not (verdict.target_ids or verdict.control_ids):
            return  # nothing was compared: the store refuses an experiment without examples
        experiment = await self.store.create_experiment(
            ExperimentIn(
                agent=self._agent,
                kind="regression",
                baseline=parent.id,
                target=[_fit(i) for i in verdict.target_ids],
                control=[_fit(i) for i in verdict.control_ids],
            )
        )
        results = [
            *_results(parent, verdict.parent_scores),
            *_results(child, verdict.child_scores),
        ]
        for start in range(0, len(results), RESULTS_PER_POST):
            chunk = results[start : start + RESULTS_PER_POST]
            await self.store.add_experiment_results(experiment["id"], ResultsIn(results=chunk))
        winner = child.id if verdict.passed else parent.id
        stop = ExperimentStopIn(winner=winner, note=verdict.reason)
        await self.store.stop_experiment(experiment["id"], stop, approved_by="apo")

    # -- the LLM's own calls -----------------------------------------------------------------

    def llm_call(self, call: LLMCall) -> None:
        with self._lock:
            if len(self._calls) == self._calls.maxlen:
                self.dropped_calls += 1
                if self.dropped_calls == 1:
                    log.warning("more than %d LLM calls between flushes", MAX_BUFFERED_CALLS)
            self._calls.append(call)

    async def flush(self) -> None:
        """One span per buffered LLM call, ingested in one batch."""
        with self._lock:
            calls = list(self._calls)
            self._calls.clear()
            first = self._call_count
            self._call_count += len(calls)
        if calls:
            spans = [self._call_span(call, first + n) for n, call in enumerate(calls)]
            await self.store.ingest(spans)

    def _call_span(self, call: LLMCall, index: int) -> SpanRecord:
        return call_span(
            call,
            agent=OPTIMIZER_AGENT,
            trace_id=self._trace_id,
            # Derived from the run and the call's place in it, so a retried flush is idempotent.
            span_id=_hex(f"{self._run_id}:llm:{index}", 16),
            parent_span_id=self._root_span_id,
            attributes={"evolution.apo.run_id": self._run_id},
        )

    @property
    def _trace_id(self) -> str:
        return _hex(f"apo-run:{self._run_id}", 32)

    @property
    def _root_span_id(self) -> str:
        return _hex(f"{self._run_id}:root", 16)

    async def close(self) -> None:
        """Flush the LLM spans, write the run's root span (its settings, its duration), and
        close the store if the recorder opened it. Idempotent."""
        if self._closed or not self._started_ns:
            return
        self._closed = True
        try:
            await self.flush()
            root = SpanRecord(
                trace_id=self._trace_id,
                span_id=self._root_span_id,
                name="apo.optimize",
                start_time=self._started_ns,
                end_time=time.time_ns(),
                attributes={
                    "gen_ai.agent.name": OPTIMIZER_AGENT,
                    "evolution.apo.run_id": self._run_id,
                    "evolution.apo.agent": self._agent,
                    "evolution.apo.settings": _json(self._settings),
                    "evolution.apo.llm_calls": self._call_count,
                },
            )
            await self.store.ingest([root])
        finally:
            if self._url is not None and self._store is not None:
                await self._store.close()
                self._store = None


def _moves(current: str, wanted: str, new_fitness: bool) -> list[str]:
    """The status moves from `current` towards `wanted` the recorder makes: forward along the
    lifecycle one step at a time, to archived from a lifecycle status, or staying put to record
    a new fitness. Never from production or archived."""
    if current not in LIFECYCLE:
        return []
    if wanted == "archived":
        return ["archived"]
    if wanted not in LIFECYCLE:
        raise ValueError(f"unknown prompt status {wanted!r}")
    here, there = LIFECYCLE.index(current), LIFECYCLE.index(wanted)
    if there > here:
        return list(LIFECYCLE[here + 1 : there + 1])
    return [current] if there == here and new_fitness else []


def _results(candidate: Candidate, scores: dict[str, float]) -> list[ResultIn]:
    out = []
    for example_id, score in scores.items():
        tokens, latency = candidate.costs.get(example_id, (None, None))
        out.append(
            ResultIn(
                prompt_id=candidate.id,
                example_id=_fit(example_id),
                score=score,
                tokens=tokens,
                latency_ms=latency,
            )
        )
    return out


async def _bounded(jobs: Iterable[Awaitable[None]], limit: int) -> None:
    """Run `jobs`, at most `limit` at a time; every one finishes before the first error is
    raised, so no write is left running unobserved."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Awaitable[None]) -> None:
        async with gate:
            await job

    outcomes = await asyncio.gather(*(run(job) for job in jobs), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


def _plain(fitness: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fitness as the registry will store it: plain JSON numbers (scipy hands back numpy
    scalars), so it compares equal to what was stored before."""
    if fitness is None:
        return None
    return orjson.loads(orjson.dumps(fitness, option=orjson.OPT_SERIALIZE_NUMPY))


def _json(value: Any) -> str:
    # Settings may hold callables or paths: shown as text rather than refused.
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _hex(text: str, width: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:width]


def _fit(identifier: str) -> str:
    """`identifier`, or, past the store's limit, its head and a digest of the whole (still
    unique and still readable)."""
    if len(identifier) <= MAX_ID:
        return identifier
    return f"{identifier[: MAX_ID - 33]}~{_hex(identifier, 32)}"
