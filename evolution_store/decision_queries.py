"""An agent's logged decisions (DESIGN §7), as the episodes PPO learns from
(`evolution_store.learn.ppo.train_ppo`).

A decision is a span named `evolution.decision` (see `instrumentation._decisions`); an episode
is one execution's decisions of one name, in `sequence` order. A step's reward is the sum of
the rewards linked to its span (`reward_links`); the rewards aimed at the run as a whole (at
its execution, its task or its trace, resolved or not, and those linked to its trace's root
span) are its outcome, credited at the last step, once each.

Set-based: one statement for the decision spans, then one per `CHUNK` decision spans for the
rewards linked to them and one per `CHUNK` executions for the runs' rewards: three in all up to
`CHUNK`, however many executions there are.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .backends import in_param, in_value
from .backends.base import Backend
from .schema import reward_links, rewards, spans

DECISION_SPAN = "evolution.decision"
NAME_ATTR = "evolution.decision.name"
ACTION_ATTR = "evolution.decision.action"
ACTIONS_ATTR = "evolution.decision.actions"
PROB_ATTR = "evolution.decision.prob"
STATE_PREFIX = "evolution.decision.state."

#: ids per reward statement: one bound parameter whatever the count (`in_param`), chunked only
#: so that a huge training set does not build one enormous array
CHUNK = 5000


async def decision_steps(
    conn: AsyncConnection,
    backend: Backend,
    *,
    agent: str,
    decision: str,
    since: int | None = None,
) -> list[dict[str, Any]]:
    """The episodes of `agent`'s decisions named `decision` started at or after `since` (ns),
    in order of their first decision. Each is a dict: `execution_id`, `task_id`,
    `terminal_reward` (the sum of the run-level rewards not already linked to one of its
    steps' spans, included in the last step's reward) and `steps`, a list of dicts in
    `sequence` order: `span_id`, `trace_id`, `execution_id`, `sequence`, `state` ({feature:
    value}), `actions` (list of str), `action`, `prob` (None when not logged or not a
    probability) and `reward`.

    A span that is not a usable decision (no action, no actions list, or an action not in it)
    is left out: no learner could use it, and it is not worth failing the whole run for."""
    dialect = conn.dialect.name
    params: dict[str, Any] = {"agent": agent}
    if since is not None:
        params["since"] = since
    rows = await backend.read_rows(conn, _spans_statement(since is not None), params)
    episodes: dict[str, dict[str, Any]] = {}
    steps_by_pk: dict[int, dict[str, Any]] = {}
    for pk, span_id, trace_id, task_id, execution_id, sequence, start, text in rows:
        # The name is read here, not in SQL: the attributes are JSON text, and a substring
        # test would depend on how the writer spaced and escaped it.
        step = _step(_loads(text), decision)
        if step is None:
            continue
        step.update(
            span_id=span_id,
            trace_id=trace_id,
            execution_id=execution_id,
            sequence=sequence,
            reward=0.0,
        )
        episode = episodes.setdefault(
            execution_id,
            {"execution_id": execution_id, "task_id": task_id, "start": start, "steps": []},
        )
        episode["steps"].append(step)
        steps_by_pk[pk] = step
    if not episodes:
        return []

    # per execution: a reward linked to one of its steps' spans is not credited again at its
    # end; another execution's link (a task's reward on a sibling's root) does not count here
    linked_to_step: dict[str, set[int]] = {}
    pks = list(steps_by_pk)
    for i in range(0, len(pks), CHUNK):
        chunk = pks[i : i + CHUNK]
        found = await backend.read_rows(
            conn, _linked_statement(dialect), {"span_pks": in_value(chunk, dialect)}
        )
        for span_pk, reward_pk, value in found:
            step = steps_by_pk[span_pk]
            step["reward"] += value
            linked_to_step.setdefault(step["execution_id"], set()).add(reward_pk)

    # Run-level rewards by target; a reward reaches an episode once, even when it is both
    # aimed at the execution and linked to the root span that resolving it picked.
    by_target: dict[tuple[str, str], dict[int, float]] = {}
    chosen = list(episodes.values())
    for i in range(0, len(chosen), CHUNK):
        chunk = chosen[i : i + CHUNK]
        traces = sorted({step["trace_id"] for e in chunk for step in e["steps"]})
        found = await backend.read_rows(
            conn,
            _run_statement(dialect),
            {
                "execution_ids": in_value([e["execution_id"] for e in chunk], dialect),
                "task_ids": in_value(sorted({e["task_id"] for e in chunk}), dialect),
                "trace_ids": in_value(traces, dialect),
                "root_trace_ids": in_value(traces, dialect),
            },
        )
        for kind, key, reward_pk, value in found:
            by_target.setdefault((kind, key), {})[reward_pk] = value

    result = []
    for episode in chosen:
        steps = episode["steps"]
        steps.sort(key=lambda step: step["sequence"])
        outcome: dict[int, float] = {}
        targets = [("execution", episode["execution_id"]), ("task", episode["task_id"])]
        for trace_id in dict.fromkeys(step["trace_id"] for step in steps):
            targets += [("trace", trace_id), ("root", trace_id)]
        for target in targets:
            outcome.update(by_target.get(target, {}))
        # A reward linked to a step's own span already counts there (a decision may be the
        # root span itself).
        own = linked_to_step.get(episode["execution_id"], set())
        terminal = sum(v for pk, v in outcome.items() if pk not in own)
        steps[-1]["reward"] += terminal
        result.append(
            {
                "execution_id": episode["execution_id"],
                "task_id": episode["task_id"],
                "terminal_reward": terminal,
                "steps": steps,
                "_start": episode["start"],
            }
        )
    result.sort(key=lambda e: (e["_start"], e["execution_id"]))
    for episode in result:
        del episode["_start"]
    return result


@functools.cache
def _spans_statement(since: bool) -> sa.Select[Any]:
    """The agent's decision spans (any name), along `ix_spans_agent_start`."""
    query = sa.select(
        spans.c.pk,
        spans.c.span_id,
        spans.c.trace_id,
        spans.c.task_id,
        spans.c.execution_id,
        spans.c.sequence,
        spans.c.start_time,
        spans.c.attributes,
    ).where(
        spans.c.agent == sa.bindparam("agent", type_=sa.Text),
        spans.c.name == sa.literal(DECISION_SPAN, sa.Text),
    )
    if since:
        query = query.where(spans.c.start_time >= sa.bindparam("since", type_=sa.BigInteger))
    return query.order_by(spans.c.start_time, spans.c.pk)


@functools.cache
def _linked_statement(dialect: str) -> sa.Select[Any]:
    """(span pk, reward pk, value) of every reward linked to a chunk of decision spans."""
    return (
        sa.select(reward_links.c.span_pk, rewards.c.pk, rewards.c.value)
        .select_from(reward_links.join(rewards, rewards.c.pk == reward_links.c.reward_pk))
        .where(in_param(reward_links.c.span_pk, "span_pks", dialect))
    )


@functools.cache
def _run_statement(dialect: str) -> sa.CompoundSelect[Any]:
    """(kind, id, reward pk, value) of the rewards aimed at a chunk's executions, tasks and
    traces (resolved or not: an unresolved one still says how the run went), and of those
    linked to the root spans of its traces (kind "root", id the trace id)."""
    branches = []
    for kind, ids in (("execution", "execution_ids"), ("task", "task_ids"), ("trace", "trace_ids")):
        column = rewards.c[f"target_{kind}_id"]
        branches.append(
            sa.select(sa.literal_column(f"'{kind}'"), column, rewards.c.pk, rewards.c.value).where(
                in_param(column, ids, dialect), rewards.c.target_kind == kind
            )
        )
    branches.append(
        sa.select(sa.literal_column("'root'"), spans.c.trace_id, rewards.c.pk, rewards.c.value)
        .select_from(
            spans.join(reward_links, reward_links.c.span_pk == spans.c.pk).join(
                rewards, rewards.c.pk == reward_links.c.reward_pk
            )
        )
        # by `uq_spans_identity` (trace_id first), then the link's span index
        .where(
            in_param(spans.c.trace_id, "root_trace_ids", dialect), spans.c.parent_span_id.is_(None)
        )
    )
    return sa.union_all(*branches)


def _step(attributes: Any, decision: str) -> dict[str, Any] | None:
    if not isinstance(attributes, dict) or attributes.get(NAME_ATTR) != decision:
        return None
    action = attributes.get(ACTION_ATTR)
    actions = attributes.get(ACTIONS_ATTR)
    if isinstance(actions, str):  # a list sent as JSON text by a client without list values
        actions = _loads(actions)
    if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
        return None
    if not isinstance(action, str) or action not in actions:
        return None
    prob = attributes.get(PROB_ATTR)
    if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0.0 < prob <= 1.0:
        prob = None
    state = {
        key[len(STATE_PREFIX) :]: value
        for key, value in attributes.items()
        if key.startswith(STATE_PREFIX)
    }
    return {
        "state": state,
        "actions": list(dict.fromkeys(actions)),
        "action": action,
        "prob": None if prob is None else float(prob),
    }


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            return json.loads(text)
        except ValueError:
            return None
