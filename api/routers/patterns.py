"""`/patterns`: what goes with success and failure (DESIGN §7), as the pattern learner stored it
(`evolution-store learn patterns` mines in its own process; this router only serves the rows),
and applying one: turning it into an A/B experiment or a config proposal, with a marker.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from ..deps import Approver, Cursor, Limit, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/patterns", tags=["patterns"], dependencies=[ReadAuth])

PatternKind = Literal["success", "failure", "optimization"]
PatternStatus = Literal["active", "stale", "applied"]
Context = Annotated[
    str | None,
    Query(
        max_length=1000,
        pattern=r"^(overall|agent:.+|task:.+)$",
        description="`overall` (mined over every run), `agent:<name>` or `task:<name>`",
    ),
]
MaxQ = Annotated[
    float | None,
    Query(ge=0, le=1, description="Only patterns whose q-value (after Benjamini–Hochberg) is ≤"),
]


@router.get("")
async def list_patterns(
    store: StoreDep,
    agent: Text = None,
    kind: PatternKind | None = None,
    status: PatternStatus | None = None,
    context: Context = None,
    max_q: MaxQ = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Patterns, strongest evidence first: by q-value, then by the size of the effect.
    `agent` matches the agent of the pattern's context; `context` picks one context exactly."""
    page = await store.list_patterns(
        agent=agent,
        kind=kind,
        status=status,
        context=context,
        max_q=max_q,
        cursor=cursor,
        limit=limit,
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/{pattern_id}")
async def get_pattern(pattern_id: str, store: StoreDep) -> dict[str, Any]:
    """One pattern: its condition and context, the effect with its 95 % interval, and the
    evidence (test, p, q, n on each side, sample span ids from both sides). 404 if unknown."""
    return await store.get_pattern(pattern_id)


@router.post(
    "/{pattern_id}/apply",
    responses={
        409: {
            "description": "The pattern cannot be applied (the answer says why: not a "
            "setting the store can change, nothing to test a prompt against, an A/B already "
            "running), or it is stale or already applied"
        }
    },
)
async def apply_pattern(pattern_id: str, store: StoreDep, approver: Approver) -> dict[str, Any]:
    """Turn an active pattern into a proposal a person reviews: `prompt = P` → an A/B
    experiment of P against the agent's production prompt (a failing production P: against
    the version before it); a config condition → a proposal record `{change: {config.K: …}}`.
    Writes a `pattern.applied` marker and answers the pattern, `applied` saying what was done,
    when and by whom (the write key's fingerprint). Needs a write key."""
    return await store.apply_pattern(pattern_id, applied_by=approver)
