"""`JobsStore`: stored analysis reports and the worker's job runs, mixed into `EvolutionStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import job_queries, job_writes

if TYPE_CHECKING:
    from .group_commit import GroupCommitWriter
    from .queries import Page


class JobsStore:
    """Methods of `EvolutionStore` for stored analysis reports and the worker's job runs.
    They read through `_read` and write through the one group-commit writer.

    The API server only requests runs; `evolution-store worker` claims and runs them::

        run = await store.request_job_run("analysis")           # "run now"
        claimed = await store.claim_job_run(worker="host:123")  # the oldest requested run
        report = await store.save_report(kind="analysis", agent=None, summary={}, body={})
        await store.finish_job_run(claimed["id"], status="succeeded", report_id=report["id"])
    """

    # Provided by EvolutionStore: one read on a reader connection, and the group-commit writer.
    _read: Callable[..., Awaitable[Any]]
    _writer: GroupCommitWriter

    # -- reports --------------------------------------------------------------------------------

    async def save_report(
        self,
        *,
        kind: str,
        agent: str | None,
        summary: dict[str, Any],
        body: dict[str, Any],
        markdown: str | None = None,
        html: str | None = None,
        window: tuple[int | None, int | None] = (None, None),
        job_run_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a report (`kind` such as "analysis"; `window` the (start, end) it covers in
        Unix ns); returns it as `get_report` does. `summary` holds the figures a list shows,
        `body` the whole report as JSON."""
        report_id = await self._writer.submit(
            lambda conn, ctx: job_writes.save_report(
                conn,
                ctx,
                kind=kind,
                agent=agent,
                summary=summary,
                body=body,
                markdown=markdown,
                html=html,
                window=window,
                job_run_id=job_run_id,
            ),
            size=len(markdown or "") + len(html or "") + 1024,
        )
        return await self.get_report(report_id)

    async def get_report(self, report_id: str) -> dict[str, Any]:
        """One report with its body and Markdown (`NotFound` if unknown)."""
        return await self._read(job_queries.get_report, report_id)

    async def report_text(self, report_id: str, fmt: str) -> str | None:
        """The report as stored in `fmt` ("markdown" or "html"), None if it has none."""
        return await self._read(job_queries.report_text, report_id, fmt)

    async def list_reports(
        self,
        *,
        kind: str | None = None,
        agent: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Reports newest first, each by its summary."""
        return await self._read(
            job_queries.list_reports, kind=kind, agent=agent, cursor=cursor, limit=limit
        )

    # -- job runs -------------------------------------------------------------------------------

    async def request_job_run(
        self, job: str, *, agent: str | None = None, trigger: str = "manual"
    ) -> dict[str, Any]:
        """Ask a worker to run `job` ("analysis" or "patterns") for `agent` (None: the
        worker's own). A request of the same job and agent still waiting is returned rather
        than a second one. Raises `NotFound` for a job no worker runs."""
        # Refused before the writer: a refusal inside its transaction would retry the writes
        # grouped with it.
        job_writes.check_job(job)
        job_writes.check_choice(trigger, job_writes.TRIGGERS, "trigger")
        run_id = await self._writer.submit(
            lambda conn, ctx: job_writes.request_run(conn, ctx, job, trigger=trigger, agent=agent)
        )
        return await self.get_job_run(run_id)

    async def claim_job_run(
        self,
        *,
        worker: str,
        jobs: tuple[str, ...] = tuple(job_writes.JOBS),
        run_id: str | None = None,
    ) -> dict[str, Any] | None:
        """Mark the oldest requested run of `jobs` (or `run_id`, if still requested) running
        for `worker` and return it; None when there is nothing to claim."""
        claimed = await self._writer.submit(
            lambda conn, ctx: job_writes.claim_run(
                conn, ctx, worker=worker, jobs=jobs, run_id=run_id
            )
        )
        return None if claimed is None else await self.get_job_run(claimed)

    async def finish_job_run(
        self,
        run_id: str,
        *,
        status: str,
        error: str | None = None,
        report_id: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record how a running run ended ("succeeded" or "failed", with its error). Raises
        `NotFound`, and `Conflict` if the run is not running."""
        job_writes.check_choice(status, job_writes.FINAL_STATUSES, "status")
        await self._writer.submit(
            lambda conn, ctx: job_writes.finish_run(
                conn, ctx, run_id, status=status, error=error, report_id=report_id, result=result
            )
        )
        return await self.get_job_run(run_id)

    async def get_job_run(self, run_id: str) -> dict[str, Any]:
        return await self._read(job_queries.get_job_run, run_id)

    async def list_job_runs(
        self,
        *,
        job: str | None = None,
        status: str | None = None,
        trigger: str | None = None,
        agent: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Runs, the most recently requested first."""
        return await self._read(
            job_queries.list_job_runs,
            job=job,
            status=status,
            trigger=trigger,
            agent=agent,
            cursor=cursor,
            limit=limit,
        )

    async def list_jobs(self) -> list[dict[str, Any]]:
        """Each job the worker runs: `{name, description, last_run}`."""
        return await self._read(job_queries.latest_runs)
