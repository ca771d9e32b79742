"""`/markers`: when something changed (DESIGN §7). Approving or rolling back a prompt, moving
a label, starting or stopping an experiment, applying a pattern: each stores a span named
`evolution.marker` in the same transaction as the change; this lists them, newest first, for
timelines and learners.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..deps import Cursor, Limit, Nanos, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/markers", tags=["markers"], dependencies=[ReadAuth])


@router.get("")
async def list_markers(
    store: StoreDep,
    agent: Text = None,
    kind: Text = None,
    start_after: Nanos = None,
    start_before: Nanos = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Markers, newest first: `{id, trace_id, kind, agent, time, time_unix_nano, before,
    after, attributes}`. `kind` is e.g. `prompt.promoted`, `prompt.rolled_back`,
    `prompt.label_moved`, `experiment.started`, `experiment.stopped`, `pattern.applied`;
    `start_after` / `start_before` bound the time (Unix ns, exclusive)."""
    page = await store.list_markers(
        agent=agent,
        kind=kind,
        start_after=start_after,
        start_before=start_before,
        cursor=cursor,
        limit=limit,
    )
    return {"items": page.items, "next_cursor": page.next_cursor}
