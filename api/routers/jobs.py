"""`/jobs`: the worker's jobs (the analysis, pattern mining) and their runs. The server never
runs a learner (DESIGN §7): "run now" records a request that `evolution-store worker` claims
and runs in its own process; the run's row then says how it went and which report it stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path
from fastapi import status as http
from pydantic import BaseModel, ConfigDict, Field

from evolution_store.models import Text as CleanText

from ..deps import Cursor, Limit, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[ReadAuth])

JobName = Annotated[str, Path(min_length=1, max_length=100, description="`analysis` or `patterns`")]
JobStatus = Literal["requested", "running", "succeeded", "failed"]
Trigger = Literal["schedule", "manual"]


class JobRunIn(BaseModel):
    """Body of `POST /jobs/{name}/run` (optional): whose runs the job looks at."""

    model_config = ConfigDict(extra="forbid")

    agent: CleanText | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Only this agent's runs (default: the worker's `--agent`, else all)",
    )


@router.get("")
async def list_job_runs(
    store: StoreDep,
    job: Literal["analysis", "patterns"] | None = None,
    status: JobStatus | None = None,
    trigger: Trigger | None = None,
    agent: Text = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """The jobs, each with its last run (`jobs: [{name, description, last_run}]`), and the
    runs, most recently requested first (`items`, `next_cursor`): `{id, job, status
    (requested|running|succeeded|failed), trigger (schedule|manual), agent, requested_at,
    started_at, finished_at, worker, error, report_id, result}`."""
    page = await store.list_job_runs(
        job=job, status=status, trigger=trigger, agent=agent, cursor=cursor, limit=limit
    )
    return {
        "jobs": await store.list_jobs(),
        "items": page.items,
        "next_cursor": page.next_cursor,
    }


@router.get("/runs/{run_id}")
async def get_job_run(run_id: str, store: StoreDep) -> dict[str, Any]:
    """One run: poll it after "run now" until it has `succeeded` (its `report_id` names the
    report) or `failed` (with its `error`)."""
    return await store.get_job_run(run_id)


@router.post(
    "/{name}/run",
    status_code=http.HTTP_202_ACCEPTED,
    responses={404: {"description": "No job of this name (the jobs: `analysis`, `patterns`)"}},
)
async def run_job(
    name: JobName, store: StoreDep, body: Annotated[JobRunIn | None, Body()] = None
) -> dict[str, Any]:
    """Run a job now: a request a worker picks up within seconds (202, the run `requested`).
    A request of the same job and agent still waiting is answered instead of a second one.
    Needs a write key."""
    agent = body.agent if body is not None else None
    return await store.request_job_run(name, agent=agent, trigger="manual")
