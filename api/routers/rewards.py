"""`/rewards`: post a reward (its target may not exist yet), query them by tag, name, target
or resolution, summarise them by group, read one.

"Rewards by tag" (`tag=`) is explicit about where the tag sits: `tag_scope=reward` matches the
reward's own tags, `tag_scope=span` the tags of the spans it resolved to, `any` (default) either.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi import status as http

from evolution_store.models import RewardIn
from evolution_store.queries import RewardQuery

from ..deps import Cursor, Limit, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/rewards", tags=["rewards"], dependencies=[ReadAuth])

GroupBy = Annotated[
    str,
    Query(
        pattern=r"^(name|tag|agent|config:.{1,200})$",
        description="`name`, `tag`, `agent`, or `config:<key>` (a key of the execution config)",
    ),
]


def _reward_filters(
    tag: Text = None,
    tag_scope: Literal["any", "reward", "span"] = "any",
    name: Text = None,
    span_id: Text = None,
    trace_id: Text = None,
    execution_id: Text = None,
    task_id: Text = None,
    resolved: bool | None = None,
) -> dict[str, Any]:
    return {
        "tag": tag,
        "tag_scope": tag_scope,
        "name": name,
        "span_id": span_id,
        "trace_id": trace_id,
        "execution_id": execution_id,
        "task_id": task_id,
        "resolved": resolved,
    }


Filters = Annotated[dict[str, Any], Depends(_reward_filters)]


@router.post(
    "",
    status_code=http.HTTP_201_CREATED,
    responses={
        200: {"description": "A reward with this id and content already existed; it is returned"},
        409: {"description": "A reward with this id exists with different content"},
    },
)
async def create_reward(body: RewardIn, store: StoreDep, response: Response) -> dict[str, Any]:
    """Store a reward. Its target (span, trace, execution, task or link selectors) need not
    exist yet: the reward is kept pending and resolved when a matching span arrives.
    Idempotent on `id` (200 when it already existed)."""
    reward, created = await store.add_reward(body)
    response.status_code = http.HTTP_201_CREATED if created else http.HTTP_200_OK
    return reward


@router.get("")
async def list_rewards(
    store: StoreDep, filters: Filters, cursor: Cursor = None, limit: Limit = 100
) -> dict[str, Any]:
    """Rewards matching every filter, each with `resolved` and the `span_ids` it is linked to.
    `resolved=false` lists rewards still waiting for their target."""
    page = await store.list_rewards(RewardQuery(**filters, cursor=cursor, limit=limit))
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/summary")
async def rewards_summary(store: StoreDep, group_by: GroupBy, filters: Filters) -> dict[str, Any]:
    """Count, mean, standard deviation and a 95% confidence interval of reward values per
    group, over the rewards the filters select: `{groups: [{key, count, mean, stdev, ci95}]}`."""
    groups = await store.rewards_summary(group_by, RewardQuery(**filters))
    return {"groups": groups}


@router.get("/{reward_id}")
async def get_reward(reward_id: str, store: StoreDep) -> dict[str, Any]:
    """One reward. 404 if unknown."""
    return await store.get_reward(reward_id)
