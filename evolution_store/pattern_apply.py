"""Applying a mined pattern (DESIGN §7): from "runs like this do better" to a change a person
can review, recorded with a `pattern.applied` marker.

Apply promotes nothing: production changes only by an approval. A prompt pattern starts an
A/B experiment, which serves P to half of the agent's keys while it runs (stop it with
`/experiments/{id}/stop`); a config pattern is only put on record, since the store does not
hold an agent's config. What apply does depends on the pattern's feature (`feature.type`):

    prompt = P, success or optimization   an A/B experiment, 50/50, of the agent's production
                                          prompt (first, the baseline) against P; 409 when the
                                          agent has no production prompt, or P is production
    prompt = P, failure                   P is production: an A/B of P (first) against the
                                          version that was production before it, which is a
                                          rollback proposal; else 409 (archive P instead)
    config.K = v | <= t | > t             a proposal record, `{"change": {"config.K": …}}`: the
                                          side that did better (success, optimization) or the
                                          other side (failure: `!= v`, `> t`, `<= t`)
    agent, task, tool, tool pair, error,  409 "not a setting the store can change: <why>"
    tag, model

The pattern must be `active`: an applied one is a 409 naming when and by whom, a stale one (no
longer significant in the latest mining) a 409 asking to mine again. Everything — the
experiment with its own `experiment.started` marker, the `pattern.applied` marker and the
pattern's `applied` record — is one write in the group-commit writer's transaction: all of it
is stored, or none (an A/B already running for the agent is a 409 and stores nothing).

The marker is attributed to the agent of the pattern's context (for a prompt, the prompt's
agent); a config pattern mined over every agent is marked under agent `*`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from . import experiment_writes, pattern_queries, pattern_writes, registry_queries
from .errors import Conflict, NotFound
from .group_commit import WriteContext
from .marker_writes import write_marker
from .registry_models import ExperimentIn, VariantIn
from .rows import iso

MARKER_KIND = "pattern.applied"
#: the attribute naming the pattern on its marker
PATTERN_ATTRIBUTE = "evolution.pattern.id"
#: the marker's agent for a pattern mined over every agent
ALL_AGENTS = "*"
#: the most archived versions read per page when looking for the previous production prompt
_PAGE = 1000

#: feature type -> why apply cannot turn it into a change
NOT_A_SETTING = {
    "agent": "which agent runs a task is the caller's choice, not a stored setting",
    "task": "the task is what was asked, not how it was run",
    "tool": "which tools an agent calls is decided while it runs; change its prompt or its "
    "tools to steer it",
    "tool_pair": "the order of tool calls is decided while the agent runs; change its prompt "
    "or its tools to steer it",
    "error": "an error is an outcome, not a setting; the pattern points at what to fix",
    "tag": "tags label runs; they do not change how a run goes",
    "model": "the model is read from the spans, not from a stored setting; put it in the "
    "execution's config (config.model) for apply to propose it",
}


@dataclass(frozen=True)
class Proposal:
    """What applying one pattern will do, decided from the pattern alone (`plan`)."""

    #: "experiment" (an A/B in the prompt registry) or "proposal" (a config change on record)
    action: str
    #: the agent of the pattern's context; for a prompt, filled from the registry
    agent: str | None
    #: for an experiment: the prompt the pattern is about, and whether it did better
    prompt_id: str | None = None
    prompt_wins: bool = True
    #: for a proposal: {"config.K": the side to move to}, and the side it moves from
    change: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)


def plan(pattern: dict[str, Any]) -> Proposal:
    """The change `pattern` can become, or `Conflict` saying why it cannot be applied."""
    _check_status(pattern)
    feature = pattern.get("feature") or {}
    kind = pattern.get("kind")
    feature_type = feature.get("type")
    agent = (pattern.get("context") or {}).get("agent")
    if feature_type in NOT_A_SETTING:
        raise Conflict(
            f"pattern {pattern['id']!r} ({pattern['condition']}) is not a setting the store "
            f"can change: {NOT_A_SETTING[feature_type]}"
        )
    if feature_type == "prompt" and feature.get("op") == "=":
        return Proposal(
            action="experiment",
            agent=agent,
            prompt_id=str(feature.get("value")),
            prompt_wins=kind != "failure",
        )
    if feature_type == "config" and feature.get("op") in _SIDES and feature.get("key"):
        name = f"config.{feature['key']}"
        better, worse = _SIDES[feature["op"]](feature.get("value"))
        if kind == "failure":
            better, worse = worse, better
        return Proposal(action="proposal", agent=agent, change={name: better}, before={name: worse})
    raise Conflict(
        f"pattern {pattern['id']!r} ({pattern['condition']}) cannot be applied: no rule turns "
        f"a {feature_type!r} condition with op {feature.get('op')!r} into a change"
    )


def _check_status(pattern: dict[str, Any]) -> None:
    status = pattern.get("status")
    if status == "applied":
        applied = pattern.get("applied") or {}
        by = applied.get("applied_by", "someone")
        when = applied.get("applied_at")
        raise Conflict(
            f"pattern {pattern['id']!r} was already applied by {by} "
            f"({iso(when) if isinstance(when, int) else 'at an unknown time'}): {_what(applied)}"
        )
    if status != "active":
        raise Conflict(
            f"pattern {pattern['id']!r} is {status}: the latest mining no longer found it "
            f"significant; mine again and apply an active pattern"
        )


def _what(applied: dict[str, Any]) -> str:
    if applied.get("experiment_id"):
        return f"experiment {applied['experiment_id']!r}"
    return f"proposal {applied.get('proposal')}"


def _equals(value: Any) -> tuple[Any, Any]:
    return value, f"!= {value}"


def _at_most(value: Any) -> tuple[Any, Any]:
    return f"<= {value}", f"> {value}"


def _above(value: Any) -> tuple[Any, Any]:
    return f"> {value}", f"<= {value}"


#: a config condition's op -> (the condition as a setting, its opposite)
_SIDES = {"=": _equals, "<=": _at_most, ">": _above}


# -- the write -----------------------------------------------------------------------------------


async def apply_in_transaction(
    conn: AsyncConnection, ctx: WriteContext, pattern_id: str, *, applied_by: str
) -> dict[str, Any]:
    """The write behind `EvolutionStore.apply_pattern`, inside the writer's transaction: the
    pattern is read here, so two applies of one pattern take turns and the second is refused.
    Returns the `applied` record."""
    pattern = await pattern_queries.get_pattern(conn, pattern_id)
    proposal = plan(pattern)
    applied: dict[str, Any] = {"action": proposal.action}
    if proposal.action == "experiment":
        agent, variants = await _variants(conn, pattern, proposal)
        experiment_id = await experiment_writes.create_experiment(
            conn,
            ctx,
            ExperimentIn(
                agent=agent,
                kind="ab",
                variants=[VariantIn(prompt_id=prompt_id, weight=0.5) for prompt_id in variants],
            ),
        )
        applied |= {"agent": agent, "experiment_id": experiment_id, "variants": variants}
        before = {"prompt_id": variants[0]}
        after = {"experiment_id": experiment_id, "variants": variants}
        attributes = {experiment_writes.EXPERIMENT_ATTRIBUTE: experiment_id}
    else:
        agent = proposal.agent
        applied |= {"agent": agent, "proposal": {"change": proposal.change}}
        before, after, attributes = proposal.before, proposal.change, {}
    applied["marker_span_id"] = await write_marker(
        conn,
        ctx,
        agent=agent or ALL_AGENTS,
        kind=MARKER_KIND,
        before=before,
        after={**after, "pattern_id": pattern_id, "condition": pattern["condition"]},
        attributes={PATTERN_ATTRIBUTE: pattern_id, **attributes},
    )
    applied |= {"applied_at": ctx.now_ns, "applied_by": applied_by}
    await pattern_writes.mark_applied(conn, ctx, pattern_id, applied)
    return applied


async def _variants(
    conn: AsyncConnection, pattern: dict[str, Any], proposal: Proposal
) -> tuple[str, list[str]]:
    """(agent, [baseline, challenger]) of the A/B a prompt pattern becomes; `Conflict` when
    there is nothing to test the prompt against."""
    assert proposal.prompt_id is not None  # a prompt plan names its prompt
    prompt_id = proposal.prompt_id
    try:
        prompt = await registry_queries.get_prompt(conn, prompt_id)
    except NotFound:
        raise Conflict(
            f"prompt {prompt_id!r} of pattern {pattern['id']!r} is not in the prompt registry: "
            f"register it to test it"
        ) from None
    agent = prompt["agent"]
    if proposal.agent is not None and proposal.agent != agent:
        raise Conflict(
            f"prompt {prompt_id!r} belongs to agent {agent!r}, but pattern {pattern['id']!r} "
            f"was found in agent {proposal.agent!r}'s runs"
        )
    production = await _production(conn, agent)
    if proposal.prompt_wins:
        if production is None:
            raise Conflict(
                f"agent {agent!r} has no production prompt to test prompt {prompt_id!r} "
                f"against: review it and approve it (POST /prompts/{prompt_id}/approve)"
            )
        if production == prompt_id:
            raise Conflict(f"prompt {prompt_id!r} is already agent {agent!r}'s production prompt")
        return agent, [production, prompt_id]
    if production != prompt_id:
        raise Conflict(
            f"prompt {prompt_id!r} does worse but is not agent {agent!r}'s production prompt "
            f"(it is {prompt['status']}): archive it (POST /prompts/{prompt_id}/status "
            f'{{"status": "archived"}}) so it is no longer tried'
        )
    previous = await _previous_production(conn, agent)
    if previous is None:
        raise Conflict(
            f"prompt {prompt_id!r} is agent {agent!r}'s production prompt and does worse, but "
            f"no earlier version was ever production to roll back to: register a better one"
        )
    return agent, [prompt_id, previous]


async def _production(conn: AsyncConnection, agent: str) -> str | None:
    try:
        return (await registry_queries.get_label(conn, agent, "production"))["prompt_id"]
    except NotFound:
        return None


async def _previous_production(conn: AsyncConnection, agent: str) -> str | None:
    """The archived version approved last: the production prompt before the current one
    (a rollback re-approves a version, so its approval time is the latest)."""
    best: tuple[datetime, str] | None = None
    cursor: str | None = None
    while True:
        page = await registry_queries.list_prompts(
            conn, agent=agent, status="archived", cursor=cursor, limit=_PAGE
        )
        for prompt in page.items:
            if prompt["approved_at"] is None:
                continue
            # Compared as times: ISO text leaves out a zero fraction of a second.
            approved = datetime.fromisoformat(prompt["approved_at"])
            if best is None or approved > best[0]:
                best = (approved, prompt["id"])
        cursor = page.next_cursor
        if cursor is None:
            return None if best is None else best[1]
