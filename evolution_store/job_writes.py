"""Writes of the worker (`evolution-store worker`) — each an operation the group-commit writer
runs in its transaction: a job run requested, claimed, finished, and the report it stored.

A run moves `requested → running → succeeded | failed` and never back. The API server only
requests runs (it never runs a learner, DESIGN §7); a worker claims one with an update that
names the status it expects, so two workers on one database never both run it.
"""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import Conflict, InvalidInput, NotFound
from .group_commit import WriteContext
from .schema import job_runs, reports
from .span_rows import dumps

#: The jobs a worker runs, with what each does (`GET /jobs` lists them).
JOBS = {
    "analysis": "the lab technician's analysis of recent runs, stored as a report",
    "patterns": "pattern mining over the stored executions (evolution-store learn patterns)",
}
JOB_STATUSES = ("requested", "running", "succeeded", "failed")
FINAL_STATUSES = ("succeeded", "failed")
TRIGGERS = ("schedule", "manual")
#: the longest error text kept with a failed run
MAX_ERROR_CHARS = 4000


def check_job(job: str) -> str:
    """`job` if the worker knows it; else `NotFound` naming the jobs there are."""
    if job not in JOBS:
        raise NotFound(f"no job named {job!r}: the jobs are {', '.join(JOBS)}")
    return job


def check_choice(value: str, allowed: tuple[str, ...] | dict[str, str], field: str) -> str:
    """`value` if it is one of `allowed`; else `InvalidInput` naming them."""
    if value not in allowed:
        raise InvalidInput(f"{field} must be one of {', '.join(allowed)}", field=field)
    return value


async def request_run(
    conn: AsyncConnection,
    ctx: WriteContext,
    job: str,
    *,
    trigger: str,
    agent: str | None,
) -> str:
    """Ask for a run of `job`; returns its id. A run of the same job and agent that is still
    waiting for a worker is returned instead of a second one: pressing "run now" twice, or
    the schedule coming due beside a manual request, runs the job once."""
    check_job(job)
    check_choice(trigger, TRIGGERS, "trigger")
    waiting = await conn.execute(
        sa.select(job_runs.c.id)
        .where(
            job_runs.c.job == job,
            job_runs.c.status == "requested",
            job_runs.c.agent.is_(None) if agent is None else job_runs.c.agent == agent,
        )
        .order_by(job_runs.c.requested_at, job_runs.c.id)
        .limit(1)
    )
    found = waiting.scalar()
    if found is not None:
        return found
    run_id = secrets.token_hex(8)
    await conn.execute(
        sa.insert(job_runs).values(
            id=run_id,
            job=job,
            status="requested",
            trigger=trigger,
            agent=agent,
            requested_at=ctx.now_ns,
        )
    )
    return run_id


async def claim_run(
    conn: AsyncConnection,
    ctx: WriteContext,
    *,
    worker: str,
    jobs: tuple[str, ...],
    run_id: str | None = None,
) -> str | None:
    """Mark the oldest requested run of one of `jobs` (or the run `run_id`, if it is still
    requested) running for `worker`; returns its id, or None when there is none to claim.

    The update names the status it expects: a run another worker claimed in between is not
    claimed twice (its update finds no row)."""
    query = sa.select(job_runs.c.id).where(
        job_runs.c.status == "requested", job_runs.c.job.in_(jobs)
    )
    if run_id is not None:
        query = query.where(job_runs.c.id == run_id)
    found = (
        await conn.execute(query.order_by(job_runs.c.requested_at, job_runs.c.id).limit(1))
    ).scalar()
    if found is None:
        return None
    claimed = await conn.execute(
        sa.update(job_runs)
        .where(job_runs.c.id == found, job_runs.c.status == "requested")
        .values(status="running", started_at=ctx.now_ns, worker=worker[:200])
    )
    return found if claimed.rowcount == 1 else None


async def finish_run(
    conn: AsyncConnection,
    ctx: WriteContext,
    run_id: str,
    *,
    status: str,
    error: str | None = None,
    report_id: str | None = None,
    result: dict[str, Any] | None = None,
) -> None:
    """Record how a running run ended. Raises `NotFound`, and `Conflict` if it is not running
    (finished already, or never claimed)."""
    check_choice(status, FINAL_STATUSES, "status")
    row = (await conn.execute(sa.select(job_runs.c.status).where(job_runs.c.id == run_id))).first()
    if row is None:
        raise NotFound(f"job run {run_id!r} not found")
    if row[0] != "running":
        raise Conflict(f"job run {run_id!r} is {row[0]}, not running")
    await conn.execute(
        sa.update(job_runs)
        .where(job_runs.c.id == run_id)
        .values(
            status=status,
            finished_at=ctx.now_ns,
            error=None if error is None else error[:MAX_ERROR_CHARS],
            report_id=report_id,
            result=None if result is None else dumps(result),
        )
    )


async def save_report(
    conn: AsyncConnection,
    ctx: WriteContext,
    *,
    kind: str,
    agent: str | None,
    summary: dict[str, Any],
    body: dict[str, Any],
    markdown: str | None = None,
    html: str | None = None,
    window: tuple[int | None, int | None] = (None, None),
    job_run_id: str | None = None,
) -> str:
    """Store a report; returns its id. Raises `InvalidInput` for an empty kind or a summary
    or body that is not an object."""
    if not isinstance(kind, str) or not kind.strip() or len(kind) > 32:
        raise InvalidInput("kind must be a name of 1 to 32 characters", field="kind")
    for name, value in (("summary", summary), ("body", body)):
        if not isinstance(value, dict):
            raise InvalidInput(f"{name} must be an object", field=name)
    report_id = secrets.token_hex(8)
    await conn.execute(
        sa.insert(reports).values(
            id=report_id,
            kind=kind,
            agent=agent,
            created_at=ctx.now_ns,
            window_start=window[0],
            window_end=window[1],
            summary=dumps(summary),
            body=dumps(body),
            markdown=markdown,
            html=html,
            job_run_id=job_run_id,
        )
    )
    return report_id
