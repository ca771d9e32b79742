"""Writes of experiments — operations the group-commit writer runs in its transaction, so a
start or stop is stored with its marker, a stop with its approval, or none of them.

An experiment's variants are stored in order ([{prompt_id, weight}]): the first is what the
others are tested against. A regression experiment's variants are its baseline first, then
every prompt results are posted for, in the order they first appear.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from . import prompt_writes
from .errors import Conflict, InvalidInput, NotFound
from .group_commit import WriteContext
from .marker_writes import write_marker
from .registry_models import ExperimentIn, ExperimentStopIn, ResultsIn
from .schema import experiment_results, experiments, prompts
from .span_rows import dumps

#: the attribute naming the experiment on its markers
EXPERIMENT_ATTRIBUTE = "evolution.experiment.id"
#: the weight a regression variant gets when results first name it (weights only steer A/B)
REGRESSION_WEIGHT = 1.0


async def create_experiment(
    conn: AsyncConnection, ctx: WriteContext, experiment: ExperimentIn
) -> str:
    """Store a running experiment and its `experiment.started` marker; returns its id.

    Every variant and the baseline must be a prompt (`NotFound`) of `experiment.agent`
    (`InvalidInput`); an agent runs one A/B experiment at a time (`Conflict` naming it), as
    the prompt it is served can come from one experiment only."""
    variants = [{"prompt_id": v.prompt_id, "weight": v.weight} for v in experiment.variants]
    if experiment.kind == "regression":
        assert experiment.baseline is not None  # ExperimentIn requires it
        variants = [v for v in variants if v["prompt_id"] != experiment.baseline]
        variants.insert(0, {"prompt_id": experiment.baseline, "weight": REGRESSION_WEIGHT})
        await _check_prompts(conn, experiment.agent, [experiment.baseline], "baseline")
    await _check_prompts(
        conn, experiment.agent, [v.prompt_id for v in experiment.variants], "variants"
    )
    if experiment.kind == "ab":
        running = (
            await conn.execute(
                sa.select(experiments.c.id).where(
                    experiments.c.agent == experiment.agent,
                    experiments.c.kind == "ab",
                    experiments.c.status == "running",
                )
            )
        ).first()
        if running is not None:
            raise Conflict(
                f"agent {experiment.agent!r} already runs A/B experiment {running[0]!r}: "
                f"stop it first"
            )
    experiment_id = secrets.token_hex(8)
    spec = {
        "metric": experiment.metric,
        "baseline": experiment.baseline,
        "target": experiment.target,
        "control": experiment.control,
    }
    await conn.execute(
        sa.insert(experiments).values(
            id=experiment_id,
            agent=experiment.agent,
            kind=experiment.kind,
            status="running",
            variants=dumps(variants),
            spec=dumps(spec),
            winner=None,
            created_at=ctx.now_ns,
            stopped_at=None,
        )
    )
    await write_marker(
        conn,
        ctx,
        agent=experiment.agent,
        kind="experiment.started",
        before=None,
        after={"experiment_id": experiment_id, "kind": experiment.kind, "variants": variants},
        attributes={EXPERIMENT_ATTRIBUTE: experiment_id},
    )
    return experiment_id


async def _check_prompts(
    conn: AsyncConnection, agent: str, prompt_ids: list[str], field: str
) -> None:
    """`NotFound` naming the first unknown prompt; `InvalidInput` on `field` naming a prompt
    of another agent."""
    if not prompt_ids:
        return
    rows = await conn.execute(
        sa.select(prompts.c.id, prompts.c.agent).where(prompts.c.id.in_(set(prompt_ids)))
    )
    owners = dict(rows.all())
    for prompt_id in prompt_ids:
        if prompt_id not in owners:
            raise NotFound(f"prompt {prompt_id!r} not found")
        if owners[prompt_id] != agent:
            raise InvalidInput(
                f"prompt {prompt_id!r} belongs to agent {owners[prompt_id]!r}, not {agent!r}",
                field=field,
            )


async def _stored(conn: AsyncConnection, experiment_id: str) -> Any:
    row = (
        await conn.execute(sa.select(experiments).where(experiments.c.id == experiment_id))
    ).first()
    if row is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    return row._mapping


def _check_running(stored: Any) -> None:
    if stored["status"] != "running":
        raise Conflict(f"experiment {stored['id']!r} is {stored['status']}, not running")


async def stop_experiment(
    conn: AsyncConnection,
    ctx: WriteContext,
    experiment_id: str,
    stop: ExperimentStopIn,
    *,
    approved_by: str,
) -> None:
    """End a running experiment: `completed` with a winner (one of its variants), `stopped`
    without. With `stop.approve` the winner is approved into production in the same
    transaction: if it cannot be (not a candidate: `Conflict`), the experiment keeps running."""
    stored = await _stored(conn, experiment_id)
    _check_running(stored)
    variant_ids = [v["prompt_id"] for v in orjson.loads(stored["variants"])]
    if stop.winner is not None and stop.winner not in variant_ids:
        raise InvalidInput(
            f"the winner must be one of the experiment's variants: {', '.join(variant_ids)}",
            field="winner",
        )
    status = "completed" if stop.winner is not None else "stopped"
    await conn.execute(
        sa.update(experiments)
        .where(experiments.c.id == experiment_id)
        .values(status=status, winner=stop.winner, stopped_at=ctx.now_ns)
    )
    if stop.approve:
        assert stop.winner is not None  # ExperimentStopIn requires it
        await prompt_writes.approve_prompt(
            conn, ctx, stop.winner, note=stop.note, approved_by=approved_by
        )
    await write_marker(
        conn,
        ctx,
        agent=stored["agent"],
        kind="experiment.stopped",
        before={"status": "running"},
        after={"status": status, "winner": stop.winner},
        attributes={EXPERIMENT_ATTRIBUTE: experiment_id},
    )


async def add_results(
    conn: AsyncConnection, ctx: WriteContext, experiment_id: str, results: ResultsIn
) -> None:
    """Store a running regression experiment's per-example results. A (prompt, example)
    posted again replaces its score, tokens and latency (learners retry); within one post the
    last one wins. A prompt named for the first time becomes a variant."""
    stored = await _stored(conn, experiment_id)
    if stored["kind"] != "regression":
        raise Conflict(
            f"experiment {experiment_id!r} is an A/B experiment: its results come from rewards"
        )
    _check_running(stored)
    latest = {(r.prompt_id, r.example_id): r for r in results.results}
    named = list(dict.fromkeys(prompt_id for prompt_id, _ in latest))
    await _check_prompts(conn, stored["agent"], named, "results")
    variants = orjson.loads(stored["variants"])
    known = {v["prompt_id"] for v in variants}
    added = [{"prompt_id": p, "weight": REGRESSION_WEIGHT} for p in named if p not in known]
    if added:
        await conn.execute(
            sa.update(experiments)
            .where(experiments.c.id == experiment_id)
            .values(variants=dumps([*variants, *added]))
        )
    rows = [
        {
            "experiment_id": experiment_id,
            "prompt_id": r.prompt_id,
            "example_id": r.example_id,
            "score": r.score,
            "tokens": r.tokens,
            "latency_ms": r.latency_ms,
            "created_at": ctx.now_ns,
        }
        for r in latest.values()
    ]
    await conn.execute(_upsert(conn.dialect.name), rows)


def _upsert(dialect: str) -> Any:
    """INSERT … ON CONFLICT (experiment, prompt, example) DO UPDATE the measurements; the
    row's `created_at` stays when it was first posted."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(experiment_results)
    return statement.on_conflict_do_update(
        index_elements=["experiment_id", "prompt_id", "example_id"],
        set_={
            "score": statement.excluded.score,
            "tokens": statement.excluded.tokens,
            "latency_ms": statement.excluded.latency_ms,
        },
    )
