"""Reads of the worker's rows: job runs newest first, and the stored reports — listed by
their summaries (a report's body and renderings can be large), read whole one at a time."""

from __future__ import annotations

from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .errors import NotFound
from .job_writes import JOB_STATUSES, JOBS, TRIGGERS, check_choice
from .queries import Page, keyset_page
from .rows import iso
from .schema import job_runs, reports


def job_run_dict(m: Any) -> dict[str, Any]:
    """A stored run as the API returns it."""
    return {
        "id": m["id"],
        "job": m["job"],
        "status": m["status"],
        "trigger": m["trigger"],
        "agent": m["agent"],
        "requested_at": iso(m["requested_at"]),
        "started_at": iso(m["started_at"]),
        "finished_at": iso(m["finished_at"]),
        "worker": m["worker"],
        "error": m["error"],
        "report_id": m["report_id"],
        "result": None if m["result"] is None else orjson.loads(m["result"]),
    }


async def get_job_run(conn: AsyncConnection, run_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(job_runs).where(job_runs.c.id == run_id))).first()
    if row is None:
        raise NotFound(f"job run {run_id!r} not found")
    return job_run_dict(row._mapping)


async def list_job_runs(
    conn: AsyncConnection,
    *,
    job: str | None = None,
    status: str | None = None,
    trigger: str | None = None,
    agent: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Runs, the most recently requested first. Raises `InvalidInput` for an unknown job,
    status or trigger, a limit outside 1–1000, or a cursor this server did not issue."""
    query = sa.select(job_runs)
    if job is not None:
        query = query.where(job_runs.c.job == check_choice(job, JOBS, "job"))
    if status is not None:
        query = query.where(job_runs.c.status == check_choice(status, JOB_STATUSES, "status"))
    if trigger is not None:
        query = query.where(job_runs.c.trigger == check_choice(trigger, TRIGGERS, "trigger"))
    if agent is not None:
        query = query.where(job_runs.c.agent == agent)
    order = [job_runs.c.requested_at, job_runs.c.id]
    rows, next_cursor = await keyset_page(
        conn, query, order, cursor=cursor, limit=limit, descending=True
    )
    return Page([job_run_dict(row._mapping) for row in rows], next_cursor)


async def latest_runs(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Each job with its description and its most recently requested run (None if never)."""
    jobs = []
    for job, description in JOBS.items():
        row = (
            await conn.execute(
                sa.select(job_runs)
                .where(job_runs.c.job == job)
                .order_by(job_runs.c.requested_at.desc(), job_runs.c.id.desc())
                .limit(1)
            )
        ).first()
        last = None if row is None else job_run_dict(row._mapping)
        jobs.append({"name": job, "description": description, "last_run": last})
    return jobs


def report_dict(m: Any, *, whole: bool) -> dict[str, Any]:
    """A stored report: its summary, and with `whole` its body and Markdown (the HTML is
    served on its own, `report_html`)."""
    report = {
        "id": m["id"],
        "kind": m["kind"],
        "agent": m["agent"],
        "created_at": iso(m["created_at"]),
        "window": {"start": iso(m["window_start"]), "end": iso(m["window_end"])},
        "summary": orjson.loads(m["summary"]),
        "job_run_id": m["job_run_id"],
        "has_html": m["has_html"],
    }
    if whole:
        report["body"] = orjson.loads(m["body"])
        report["markdown"] = m["markdown"]
    return report


_SUMMARY_COLUMNS = [
    reports.c.id,
    reports.c.kind,
    reports.c.agent,
    reports.c.created_at,
    reports.c.window_start,
    reports.c.window_end,
    reports.c.summary,
    reports.c.job_run_id,
    reports.c.html.is_not(None).label("has_html"),
]


async def get_report(conn: AsyncConnection, report_id: str) -> dict[str, Any]:
    row = (
        await conn.execute(
            sa.select(*_SUMMARY_COLUMNS, reports.c.body, reports.c.markdown).where(
                reports.c.id == report_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"report {report_id!r} not found")
    return report_dict(row._mapping, whole=True)


async def report_text(conn: AsyncConnection, report_id: str, fmt: str) -> str | None:
    """The report rendered as `fmt` ("markdown" or "html"); None when it was stored without
    that rendering. Raises `NotFound`."""
    column = {"markdown": reports.c.markdown, "html": reports.c.html}[fmt]
    row = (await conn.execute(sa.select(column).where(reports.c.id == report_id))).first()
    if row is None:
        raise NotFound(f"report {report_id!r} not found")
    return row[0]


async def list_reports(
    conn: AsyncConnection,
    *,
    kind: str | None = None,
    agent: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Reports newest first, by their summaries (no body). Raises `InvalidInput` for a limit
    outside 1–1000 or a cursor this server did not issue."""
    query = sa.select(*_SUMMARY_COLUMNS)
    if kind is not None:
        query = query.where(reports.c.kind == kind)
    if agent is not None:
        query = query.where(reports.c.agent == agent)
    order = [reports.c.created_at, reports.c.id]
    rows, next_cursor = await keyset_page(
        conn, query, order, cursor=cursor, limit=limit, descending=True
    )
    return Page([report_dict(row._mapping, whole=False) for row in rows], next_cursor)
