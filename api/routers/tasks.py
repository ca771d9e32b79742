"""`/tasks`: create (idempotent on id), list, read, set status; a task's executions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi import status as http

from evolution_store.models import ExecutionIn, StatusIn, TaskIn

from ..deps import Cursor, Limit, ReadAuth, StoreDep

router = APIRouter(prefix="/tasks", tags=["tasks"], dependencies=[ReadAuth])

TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


@router.post(
    "",
    status_code=http.HTTP_201_CREATED,
    responses={200: {"description": "A task with this id already existed; it is returned as is"}},
)
async def create_task(body: TaskIn, store: StoreDep, response: Response) -> dict[str, Any]:
    """Create a task. Idempotent on `id`: posting a known id answers 200 with the stored task."""
    task, created = await store.create_task(body)
    response.status_code = http.HTTP_201_CREATED if created else http.HTTP_200_OK
    return task


@router.get("")
async def list_tasks(
    store: StoreDep,
    status: TaskStatus | None = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Tasks, newest first, filtered by status and tag. Follow `next_cursor` for the next page."""
    page = await store.list_tasks(status=status, tag=tag, cursor=cursor, limit=limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/{task_id}")
async def get_task(task_id: str, store: StoreDep) -> dict[str, Any]:
    """One task. 404 if unknown."""
    return await store.get_task(task_id)


@router.patch("/{task_id}")
async def set_task_status(task_id: str, body: StatusIn, store: StoreDep) -> dict[str, Any]:
    """Set a task's status (queued, running, succeeded, failed, cancelled)."""
    return await store.set_task_status(task_id, body.status)


@router.post("/{task_id}/executions", status_code=http.HTTP_201_CREATED)
async def start_execution(
    task_id: str,
    store: StoreDep,
    body: ExecutionIn | None = None,
) -> dict[str, Any]:
    """Start a new attempt of the task: attempt 1, or n+1 for a retry. 404 if the task is
    unknown. The body (`{config: {...}}`) is optional."""
    return await store.start_execution(task_id, body or ExecutionIn())


@router.get("/{task_id}/executions")
async def list_executions(task_id: str, store: StoreDep) -> dict[str, Any]:
    """Every attempt of the task, oldest first. 404 if the task is unknown."""
    await store.get_task(task_id)
    return {"items": await store.list_executions(task_id), "next_cursor": None}
