"""`/experiments`: A/B experiments between prompt versions (results live, from the rewards of
executions whose `config.prompt_id` is a variant) and regression records an optimiser fills
with per-example results. Start, list, read, stop (and approve the winner), post results.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from fastapi import status as http

from evolution_store.registry_models import ExperimentIn, ExperimentStopIn, ResultsIn

from ..deps import Approver, Cursor, Limit, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/experiments", tags=["experiments"], dependencies=[ReadAuth])

ExperimentStatus = Literal["running", "completed", "stopped"]


@router.post(
    "",
    status_code=http.HTTP_201_CREATED,
    responses={
        404: {"description": "A variant or the baseline is not a stored prompt"},
        409: {"description": "An A/B experiment already runs for this agent"},
    },
)
async def create_experiment(body: ExperimentIn, store: StoreDep) -> dict[str, Any]:
    """Start an experiment (a marker records it). `ab`: `variants` `[{prompt_id, weight}]`,
    prompts of `agent`, weights summing to 1, one running A/B per agent (else 409); while it
    runs, `GET /agents/{agent}/prompt` hands out its variants. `regression`: a `baseline`
    prompt and `target` / `control` example ids; results are posted to
    `/experiments/{id}/results`. An unknown prompt is a 404, another agent's a 422."""
    return await store.create_experiment(body)


@router.get("")
async def list_experiments(
    store: StoreDep,
    agent: Text = None,
    status: ExperimentStatus | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Experiments, newest first, filtered by agent and status."""
    page = await store.list_experiments(agent=agent, status=status, cursor=cursor, limit=limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/{experiment_id}")
async def get_experiment(experiment_id: str, store: StoreDep) -> dict[str, Any]:
    """One experiment with live `results` per variant. A/B: n, mean, stdev, ci95, mean tokens
    and latency, and a Welch p-value against the first variant. Regression: target and
    control success with intervals."""
    return await store.get_experiment(experiment_id)


@router.post(
    "/{experiment_id}/stop",
    responses={
        409: {"description": "The experiment is not running, or its winner cannot be approved"}
    },
)
async def stop_experiment(
    experiment_id: str,
    store: StoreDep,
    approver: Approver,
    body: ExperimentStopIn | None = None,
) -> dict[str, Any]:
    """Stop a running experiment: `completed` with a `winner` (one of its variants, else
    422), `stopped` without. With `approve: true` the winner is also approved into production
    in the same transaction, recorded with the key's fingerprint; if it cannot be (409), the
    experiment keeps running. Writes a marker. The body is optional."""
    return await store.stop_experiment(
        experiment_id, body or ExperimentStopIn(), approved_by=approver
    )


@router.post(
    "/{experiment_id}/results",
    responses={
        409: {
            "description": "An A/B experiment (its results come from rewards), or one that "
            "is no longer running"
        }
    },
)
async def add_experiment_results(
    experiment_id: str, body: ResultsIn, store: StoreDep
) -> dict[str, Any]:
    """Add a running regression experiment's results: `{results: [{prompt_id, example_id,
    score, tokens?, latency_ms?}]}`; a (prompt, example) posted again replaces its numbers, and
    a prompt named for the first time becomes a variant. Answers the experiment with its
    results recomputed."""
    return await store.add_experiment_results(experiment_id, body)
