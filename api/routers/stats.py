"""`/stats/{agent}`: success rate, latency percentiles, tokens, cost and mean reward."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import Nanos, ReadAuth, StoreDep

router = APIRouter(prefix="/stats", tags=["stats"], dependencies=[ReadAuth])


@router.get("/{agent}")
async def agent_stats(
    agent: str,
    store: StoreDep,
    start_after: Nanos = None,
    start_before: Nanos = None,
) -> dict[str, Any]:
    """Figures for one agent's spans, optionally within a start-time range."""
    return await store.agent_stats(agent, start_after=start_after, start_before=start_before)
