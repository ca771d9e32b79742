"""The worker (`evolution-store worker`): the lab technician's analysis and pattern mining on a
schedule, and "run now" requests, in a process of their own beside the server (DESIGN §7: the
server never runs a learner, so long analyses never stall ingest).

Every run is a row of `job_runs` — requested (by the schedule or `POST /jobs/{name}/run`),
claimed, then succeeded or failed with its error — and what it found is a stored report
(`GET /reports`). A failing job is recorded and the worker goes on.

The schedule adapts: each job comes due `every` after its last scheduled run, and sooner
while the success rate falls — the interval halves for each consecutive analysis that saw it
drop, down to `min_every` — so a worsening agent is looked at more often, and the interval
returns to `every` once it stops falling. `next_run_at` is that rule as a pure function.

    settings = WorkerSettings(every=3600, agent="support")
    await run_worker("sqlite:///evolution.db", settings, once=False, on_run=print)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .db_errors import first_line
from .errors import EvolutionStoreError
from .job_writes import JOBS

if TYPE_CHECKING:
    from .store import EvolutionStore

log = logging.getLogger(__name__)

DEFAULT_EVERY = 3600.0
DEFAULT_MIN_EVERY = 300.0
#: how often an idle worker looks for "run now" requests (a read, not a write)
POLL_SECONDS = 2.0
#: a fall in success rate smaller than this between two analyses is noise, not a trend
MIN_DROP = 0.01
#: the analyses the schedule looks back over
HISTORY = 8


# -- the schedule (pure) ------------------------------------------------------------------------


def consecutive_drops(rates: Sequence[float | None], *, min_drop: float = MIN_DROP) -> int:
    """How many analyses in a row, ending with the newest, saw the success rate fall by more
    than `min_drop` from the analysis before. `rates` are oldest first; an analysis without a
    rate (no finished execution in its window) says nothing about the trend and is skipped."""
    known = [rate for rate in rates if rate is not None]
    drops = 0
    for newer, older in zip(reversed(known), list(reversed(known))[1:], strict=False):
        if older - newer <= min_drop:
            break
        drops += 1
    return drops


def interval(
    rates: Sequence[float | None],
    *,
    every: float = DEFAULT_EVERY,
    min_every: float = DEFAULT_MIN_EVERY,
    min_drop: float = MIN_DROP,
) -> float:
    """Seconds between scheduled runs: `every`, halved for each consecutive drop of the
    success rate (`consecutive_drops`), never under `min_every` (nor over `every`)."""
    halvings = min(consecutive_drops(rates, min_drop=min_drop), 32)
    return max(min(min_every, every), every / 2**halvings)


def next_run_at(
    last_run_at: float | None,
    rates: Sequence[float | None],
    *,
    every: float = DEFAULT_EVERY,
    min_every: float = DEFAULT_MIN_EVERY,
    min_drop: float = MIN_DROP,
) -> float:
    """When a job is next due (Unix seconds): `interval` after its last scheduled run
    (`last_run_at`), or at once (0.0) if it never ran on the schedule."""
    if last_run_at is None:
        return 0.0
    return last_run_at + interval(rates, every=every, min_every=min_every, min_drop=min_drop)


# -- the jobs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobOutcome:
    """What a job did: the report it stored, and figures for its run's `result`."""

    report_id: str | None = None
    result: dict[str, Any] | None = None


#: A job: runs for `agent` (None: every agent) as run `run_id`, returns what it did.
Job = Callable[["EvolutionStore", str | None, str], Awaitable[JobOutcome]]


def analysis_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures of an analysis report (`AnalysisReport.to_dict()`), for lists
    and for the schedule, which reads `success_rate`."""
    executions = report.get("executions") or {}
    opportunities = report.get("opportunities") or []
    return {
        "text": report.get("summary"),
        "executions": executions.get("total"),
        "finished": executions.get("finished"),
        "success_rate": executions.get("success_rate"),
        "ci95": executions.get("ci95"),
        "errors": len(report.get("errors") or []),
        "opportunities": len(opportunities),
        "top_opportunity": opportunities[0].get("title") if opportunities else None,
        "proposals": len(report.get("proposals") or []),
    }


async def run_analysis(store: EvolutionStore, agent: str | None, run_id: str) -> JobOutcome:
    """The lab technician's analysis of the last 24 hours, stored as an "analysis" report
    with its Markdown and HTML. No proposals: drafting prompts is a person's call
    (`evolution-store analyze --propose`)."""
    from .learn.analysis import analyze

    report = await analyze(store, agent=agent)
    body = report.to_dict()
    window = body.get("window") or {}
    summary = analysis_summary(body)
    stored = await store.save_report(
        kind="analysis",
        agent=agent,
        summary=summary,
        body=body,
        markdown=report.to_markdown(),
        html=report.to_html(),
        window=(window.get("since_unix_nano"), window.get("until_unix_nano")),
        job_run_id=run_id,
    )
    figures = {key: summary[key] for key in ("executions", "success_rate", "opportunities")}
    return JobOutcome(stored["id"], figures)


def patterns_markdown(found: list[dict[str, Any]], counts: dict[str, int]) -> str:
    """A pattern mining run for people: the counts, then each pattern's explanation."""
    lines = [
        "# Patterns",
        "",
        f"{len(found)} pattern(s) found: {counts['new']} new, {counts['updated']} seen "
        f"before, {counts['stale']} no longer found (now stale).",
        "",
    ]
    for pattern in found:
        q_value = (pattern.get("evidence") or {}).get("q_value")
        q_text = "" if q_value is None else f" (q = {q_value:.2g})"
        explanation = pattern.get("explanation") or ""
        lines.append(f"- **{pattern['kind']}** `{pattern['condition']}`{q_text}: {explanation}")
    return "\n".join(lines).rstrip() + "\n"


async def run_patterns(store: EvolutionStore, agent: str | None, run_id: str) -> JobOutcome:
    """Pattern mining over every stored execution (as `evolution-store learn patterns` with
    its defaults): patterns stored, those no longer found marked stale, and a "patterns"
    report of what was found."""
    from .learn.patterns import mine_patterns

    found = await mine_patterns(store, agent=agent, save=False)
    counts = await store.save_patterns(found, scope={"agent": agent})
    summary = {"patterns": len(found), **counts}
    stored = await store.save_report(
        kind="patterns",
        agent=agent,
        summary=summary,
        body={"patterns": found, "counts": counts},
        markdown=patterns_markdown(found, counts),
        job_run_id=run_id,
    )
    return JobOutcome(stored["id"], summary)


DEFAULT_JOBS: dict[str, Job] = {"analysis": run_analysis, "patterns": run_patterns}


# -- the worker ---------------------------------------------------------------------------------


@dataclass
class WorkerSettings:
    """How a worker runs: `every` and `min_every` in seconds (the schedule above), `agent`
    (None: every agent), `poll` seconds between looks for "run now" requests."""

    every: float = DEFAULT_EVERY
    min_every: float = DEFAULT_MIN_EVERY
    agent: str | None = None
    poll: float = POLL_SECONDS
    jobs: tuple[str, ...] = field(default_factory=lambda: tuple(JOBS))


def _seconds(iso: str | None) -> float | None:
    return None if iso is None else datetime.fromisoformat(iso).timestamp()


class Worker:
    """Claims and runs job runs of one store, and requests them when the schedule says so.

    Usage::

        worker = Worker(store, WorkerSettings(every=3600))
        finished = await worker.run_once()   # each job now, then any request waiting
        await worker.serve()                 # until worker.stop()
    """

    def __init__(
        self,
        store: EvolutionStore,
        settings: WorkerSettings | None = None,
        *,
        name: str | None = None,
        jobs: dict[str, Job] | None = None,
        on_run: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or WorkerSettings()
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self._jobs = jobs or DEFAULT_JOBS
        self._on_run = on_run
        self._clock = clock
        self._stop = asyncio.Event()
        self._last_scheduled: dict[str, float | None] | None = None

    def stop(self) -> None:
        """Finish the job in progress, then return from `serve` / `run_requested`."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def success_rates(self) -> list[float | None]:
        """The success rates of the worker's agent's latest analyses, oldest first."""
        page = await self.store.list_reports(kind="analysis", limit=HISTORY * 4)
        mine = [report for report in page.items if report["agent"] == self.settings.agent]
        rates = [report["summary"].get("success_rate") for report in mine[:HISTORY]]
        return [rate if isinstance(rate, int | float) else None for rate in reversed(rates)]

    async def due_times(self) -> dict[str, float]:
        """When each job is next due on the schedule (Unix seconds)."""
        if self._last_scheduled is None:
            self._last_scheduled = {job: await self._last_run(job) for job in self.settings.jobs}
        rates = await self.success_rates()
        s = self.settings
        return {
            job: next_run_at(last, rates, every=s.every, min_every=s.min_every)
            for job, last in self._last_scheduled.items()
        }

    async def _last_run(self, job: str) -> float | None:
        # The schedule survives a restart: it continues from the runs stored.
        page = await self.store.list_job_runs(job=job, trigger="schedule", limit=50)
        for run in page.items:
            if run["agent"] == self.settings.agent:
                return _seconds(run["requested_at"])
        return None

    async def request_due(self) -> list[str]:
        """Request a scheduled run of every job that is due; returns their names."""
        due = []
        now = self._clock()
        for job, at in (await self.due_times()).items():
            if at <= now:
                await self.store.request_job_run(job, agent=self.settings.agent, trigger="schedule")
                assert self._last_scheduled is not None
                self._last_scheduled[job] = now
                due.append(job)
        return due

    async def run_requested(self) -> list[dict[str, Any]]:
        """Claim and run requested runs, oldest first, until none is left (or `stop`)."""
        finished = []
        while not self.stopping:
            waiting = await self.store.list_job_runs(status="requested", limit=1)
            if not waiting.items:
                break
            run = await self.store.claim_job_run(worker=self.name, jobs=self.settings.jobs)
            if run is None:
                break  # another worker's, or none of our jobs
            finished.append(await self.execute(run))
        return finished

    async def execute(self, run: dict[str, Any]) -> dict[str, Any]:
        """Run a claimed run and record how it ended; a failure is recorded, never raised."""
        agent = run["agent"] if run["agent"] is not None else self.settings.agent
        try:
            outcome = await self._jobs[run["job"]](self.store, agent, run["id"])
        except Exception as exc:  # any failure of the job is its run's error, and we go on
            log.warning("job %s (run %s) failed", run["job"], run["id"], exc_info=True)
            error = f"{type(exc).__name__}: {first_line(exc)}"
            done = await self.store.finish_job_run(run["id"], status="failed", error=error)
        else:
            done = await self.store.finish_job_run(
                run["id"], status="succeeded", report_id=outcome.report_id, result=outcome.result
            )
        if self._on_run is not None:
            self._on_run(done)
        return done

    async def run_once(self) -> list[dict[str, Any]]:
        """Every job now (trigger "schedule"), then whatever else was requested."""
        for job in self.settings.jobs:
            await self.store.request_job_run(job, agent=self.settings.agent, trigger="schedule")
        return await self.run_requested()

    async def serve(self) -> None:
        """Run the schedule and the requests until `stop()`. A database that fails for a
        while is logged and tried again at the next poll."""
        while not self.stopping:
            try:
                await self.request_due()
                await self.run_requested()
                wait = min((await self.due_times()).values()) - self._clock()
            except EvolutionStoreError as exc:
                log.warning("worker: %s; trying again at the next poll", first_line(exc))
                wait = self.settings.poll
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, min(wait, self.settings.poll)))


async def run_worker(
    store_url: str,
    settings: WorkerSettings,
    *,
    once: bool = False,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Open the store, run a `Worker` (`once`: `run_once`; else `serve` until SIGTERM or
    SIGINT, which let the job in progress finish), close the store. Returns the runs `once`
    finished. Raises `StorageError` when the store cannot be opened."""
    from .store import EvolutionStore

    store = await EvolutionStore.open(store_url)
    worker = Worker(store, settings, on_run=on_run)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, worker.stop)
    try:
        if once:
            return await worker.run_once()
        await worker.serve()
        return []
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await store.close()
