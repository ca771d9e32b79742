"""`/executions/{id}`: read an attempt, set its status (its task's status follows)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from evolution_store.models import StatusIn

from ..deps import ReadAuth, StoreDep

router = APIRouter(prefix="/executions", tags=["executions"], dependencies=[ReadAuth])


@router.get("/{execution_id}")
async def get_execution(execution_id: str, store: StoreDep) -> dict[str, Any]:
    """One execution. 404 if unknown."""
    return await store.get_execution(execution_id)


@router.patch("/{execution_id}")
async def set_execution_status(
    execution_id: str, body: StatusIn, store: StoreDep
) -> dict[str, Any]:
    """Set an execution's status (running, succeeded, failed, timeout). The task's status
    follows its latest execution."""
    return await store.set_execution_status(execution_id, body.status)
