"""`/prompts`: the prompt registry (DESIGN §7). Register a version (idempotent on agent,
content and parents), list and read them, their lineage and diffs, move one along its
lifecycle, approve one into production (or roll back to an archived one).

Labels and "the prompt an agent should use now" are per agent: `api/routers/agents.py`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi import status as http

from evolution_store.registry_models import ApproveIn, PromptIn, PromptStatusIn

from ..deps import Approver, Cursor, Limit, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/prompts", tags=["prompts"], dependencies=[ReadAuth])

PromptStatus = Literal["draft", "experimental", "candidate", "production", "archived"]
Creator = Literal["human", "apo", "pattern", "coach", "lab", "ppo"]
Label = Annotated[str | None, Query(min_length=1, max_length=100)]


@router.post(
    "",
    status_code=http.HTTP_201_CREATED,
    responses={
        200: {
            "description": "The same agent, content and parents were posted before; that "
            "prompt is returned"
        },
    },
)
async def create_prompt(body: PromptIn, store: StoreDep, response: Response) -> dict[str, Any]:
    """Register a new version of `agent`'s prompt: 201 with its `id` and `version` (1, 2, …
    per agent); it takes the label `latest`. Posting the same agent, content and parents again
    answers 200 with the stored prompt (learners retry). `content` is a Jinja2 template: a
    syntax error is a 422 naming the line. Unknown `parent_ids` are a 422."""
    prompt, created = await store.create_prompt(body)
    response.status_code = http.HTTP_201_CREATED if created else http.HTTP_200_OK
    return prompt


@router.get("")
async def list_prompts(
    store: StoreDep,
    agent: Text = None,
    status: PromptStatus | None = None,
    label: Label = None,
    created_by: Creator | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Prompts, newest first, filtered by agent, status, a label naming them, and creator."""
    page = await store.list_prompts(
        agent=agent, status=status, label=label, created_by=created_by, cursor=cursor, limit=limit
    )
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/{prompt_id}")
async def get_prompt(prompt_id: str, store: StoreDep) -> dict[str, Any]:
    """One prompt with its status, labels, fitness and approval. 404 if unknown."""
    return await store.get_prompt(prompt_id)


@router.get("/{prompt_id}/lineage")
async def prompt_lineage(prompt_id: str, store: StoreDep) -> dict[str, Any]:
    """`{prompt, ancestors, descendants}`, nearest first, each with its status and fitness."""
    return await store.prompt_lineage(prompt_id)


@router.get("/{prompt_id}/diff")
async def prompt_diff(
    prompt_id: str,
    store: StoreDep,
    against: Annotated[str, Query(min_length=1, max_length=64, description="The other prompt")],
) -> dict[str, Any]:
    """`{from, to, diff}`: a unified diff from `against`'s content to this prompt's. 404 if
    either is unknown."""
    return await store.prompt_diff(prompt_id, against)


@router.post(
    "/{prompt_id}/status",
    responses={
        409: {
            "description": "Not an allowed move from the prompt's status; the "
            "answer names the allowed ones"
        }
    },
)
async def set_prompt_status(
    prompt_id: str, body: PromptStatusIn, store: StoreDep
) -> dict[str, Any]:
    """Move a prompt: draft → experimental → candidate, or any status → archived. Production
    is reached only by approval (`/approve`); any other move is a 409 naming the allowed ones."""
    return await store.set_prompt_status(prompt_id, body)


@router.post(
    "/{prompt_id}/approve",
    responses={409: {"description": "The prompt is neither a candidate nor archived"}},
)
async def approve_prompt(
    prompt_id: str, store: StoreDep, approver: Approver, body: ApproveIn | None = None
) -> dict[str, Any]:
    """Make a candidate (or an archived version: a rollback) the agent's production prompt.
    The previous production prompt is archived, the label `production` moves, and a marker is
    written. Needs a write key; `approved_by` records the key's fingerprint, never the key.
    The body (`{note}`) is optional."""
    return await store.approve_prompt(prompt_id, body or ApproveIn(), approved_by=approver)
