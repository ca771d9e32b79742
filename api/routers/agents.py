"""`/agents/{agent}/…`: an agent's labels (movable names for its prompt versions) and the
prompt it should use now, which is what `instrumentation.get_prompt` asks for.

The registry moves `production` (by approval) and `latest` (on every new version) itself;
`PUT` moves any other label.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import AfterValidator

from evolution_store.registry_models import LabelIn

from ..deps import ReadAuth, StoreDep

router = APIRouter(prefix="/agents", tags=["agents"], dependencies=[ReadAuth])


def _label(value: str) -> str:
    # The same rule as the labels `POST /prompts` takes, so every label it stores can be moved.
    if not all(c.isalnum() or c in "._:-" for c in value):
        raise ValueError("labels are 1-100 letters, digits or . _ : -")
    return value


Agent = Annotated[str, Path(min_length=1, max_length=200, description="The agent's name")]
LabelPath = Annotated[str, Path(min_length=1, max_length=100), AfterValidator(_label)]
NOT_FOUND = {404: {"description": "The agent has no prompt under this label"}}


@router.put(
    "/{agent}/labels/{label}",
    responses={
        404: {"description": "No prompt has this `prompt_id`"},
        409: {"description": "`production` and `latest` are moved by the registry itself"},
    },
)
async def set_label(
    agent: Agent, label: LabelPath, body: LabelIn, store: StoreDep
) -> dict[str, Any]:
    """Point the agent's `label` at one of its prompts (a marker records the move):
    `{agent, label, prompt_id, version, updated_at}`. A prompt of another agent is a 422."""
    return await store.set_label(agent, label, body.prompt_id)


@router.get("/{agent}/labels")
async def list_labels(agent: Agent, store: StoreDep) -> dict[str, Any]:
    """Every label of the agent with the prompt it names, by label. One page always (an
    agent has a handful of labels), so `next_cursor` is always null."""
    return {"items": await store.list_labels(agent), "next_cursor": None}


@router.get("/{agent}/prompt", responses=NOT_FOUND)
async def resolve_prompt(
    agent: Agent,
    store: StoreDep,
    label: Annotated[str, Query(min_length=1, max_length=100)] = "production",
    key: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=1000,
            description="Sticky key (a user or session id): the same key gets the same A/B "
            "variant; without one each request draws at random",
        ),
    ] = None,
) -> dict[str, Any]:
    """The prompt the agent should use now: the one `label` names, or, for `production` while
    an A/B experiment runs for the agent, the variant assigned to `key` by weight. The prompt
    with `label`, `experiment_id` and `variant` (both null outside an experiment)."""
    return await store.resolve_prompt(agent, label=label, key=key)
