"""What the pattern learner knows of each execution (`ExecutionFacts`), read set-based.

Executions are read a chunk at a time (`FACTS_CHUNK`, newest first) and each chunk takes three
statements, whatever its size: its executions with their tasks, the spans of those executions
(only the columns the facts need; the two attributes wanted are pulled out of the JSON in SQL,
and only from spans whose text names them), and the rewards of the chosen name linked to any
of them. 100,000 executions are 150 statements, never one per execution, and only one chunk's
rows are in memory at a time.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .backends import in_param, in_value
from .backends.base import Backend
from .errors import InvalidInput
from .schema import executions, reward_links, rewards, spans, tasks
from .span_rows import stored_tags
from .sql import json_member_text

#: executions per chunk: a chunk's rows are what is held besides the facts. 2,000 executions
#: of ten spans are about 30 MB of rows at the peak; 4,000 were no faster.
FACTS_CHUNK = 2000

#: span attributes read for the facts
TOOL_NAME_KEY = "gen_ai.tool.name"
PROMPT_ID_KEY = "evolution.prompt.id"
#: `spans.operation` values (gen_ai.operation.name, openinference.span.kind) of a tool call,
#: compared in lower case
TOOL_OPERATIONS = frozenset({"execute_tool", "tool"})
TOOL_NAME_PREFIX = "tool."
#: characters of a status message kept in an error type
ERROR_MESSAGE_CHARS = 80
SAMPLE_SPANS = 3


@dataclass(frozen=True, slots=True)
class ExecutionFacts:
    """One execution as the pattern learner sees it: its outcome and its features.

    - `agent`: the most frequent `spans.agent` among its spans (ties: the smallest name);
      None when no span names one.
    - `config`: the execution's config JSON. Executions with the same config share one dict
      (memory: 100,000 facts mostly repeat a few configs): read it, never change it.
    - `tags`: the task's tags and its spans' tags, sorted, without repeats.
    - `models`, `span_names`: distinct `spans.model` / span names, sorted.
    - `tools`: its tool uses in span order (`spans.sequence`), repeats kept. A span is a tool
      use when it has the attribute `gen_ai.tool.name`, or its promoted `operation` is
      `execute_tool` or `tool` (any case; OpenInference's span kind `TOOL` lands there), or
      its name starts with `tool.`. The tool is the value of `gen_ai.tool.name` when the span
      has one, else the span's name as it is (a span `tool.search` is the tool `tool.search`).
    - `error_types`: distinct, sorted, from its spans with status `error` only: the
      `exception.type` of each of the span's events named `exception`; a span with none of
      those gives `"error: "` + the first 80 characters of its status message (`"error"` when
      it has no message).
    - `prompt_id`: `config["prompt_id"]` (as text), else the `evolution.prompt.id` attribute
      of its first span (in span order) that has one.
    - `tokens`: the sum of `input_tokens + output_tokens` over its spans, None when no span has
      either (the store keeps tokens on LLM spans only, so nothing is counted twice).
    - `latency_ms`: last span end (its start when it has no end) minus first span start.
    - `cost`: the sum of `spans.cost`, None when no span has one.
    - `reward`: the mean value of the distinct rewards named `reward_name` linked to it: to any
      of its spans (resolved links: span, selector, and the root-span links of trace, execution
      and task targets), to a trace of its spans, to the execution itself, or to its task (a
      task's reward counts for every execution of the task). None without any.
    - `started_at`: the execution's `created_at` (ns).
    - `sample_span_ids`: up to three of its spans, root spans first, then in span order.
    """

    execution_id: str
    task_id: str
    task_name: str
    agent: str | None
    status: str
    config: dict[str, Any]
    tags: tuple[str, ...]
    models: tuple[str, ...]
    tools: tuple[str, ...]
    span_names: tuple[str, ...]
    error_types: tuple[str, ...]
    prompt_id: str | None
    tokens: float | None
    latency_ms: float | None
    cost: float | None
    reward: float | None
    started_at: int
    sample_span_ids: tuple[str, ...]


async def execution_facts(
    conn: AsyncConnection,
    backend: Backend,
    *,
    agent: str | None = None,
    since: int | None = None,
    reward_name: str = "reward",
    limit: int | None = None,
) -> list[ExecutionFacts]:
    """The facts of every execution created at or after `since` (ns), newest first, at most
    `limit` of them. With `agent`, only the executions whose agent (`ExecutionFacts.agent`)
    is `agent`. Raises `InvalidInput` for a limit below 1."""
    if limit is not None and limit < 1:
        raise InvalidInput("limit must be at least 1", field="limit")
    shared = _Shared()
    found: list[ExecutionFacts] = []
    after: tuple[int, str] | None = None
    while limit is None or len(found) < limit:
        chunk = await _read_chunk(
            conn, backend, after, agent=agent, since=since, reward_name=reward_name
        )
        if chunk is None:
            break
        made = _chunk_facts(chunk, reward_name, shared)
        found.extend(facts for facts in made if agent is None or facts.agent == agent)
        if len(chunk.executions) < FACTS_CHUNK:
            break
        after = chunk.last_key()
    return found if limit is None else found[:limit]


@dataclass(slots=True)
class _Chunk:
    """The rows of one chunk: executions (newest first), their spans, their rewards."""

    executions: list[Any]
    spans: list[Any]
    rewards: list[Any]

    def last_key(self) -> tuple[int, str]:
        """Where the next chunk starts: (created_at, id) of the last execution."""
        last = self.executions[-1]
        return last[4], last[0]


async def _read_chunk(
    conn: AsyncConnection,
    backend: Backend,
    after: tuple[int, str] | None,
    *,
    agent: str | None,
    since: int | None,
    reward_name: str,
) -> _Chunk | None:
    """The chunk of executions after `after` with their spans and rewards (see
    `_rewards_statement`), three statements; None past the last execution."""
    dialect = conn.dialect.name
    params: dict[str, Any] = {"chunk": FACTS_CHUNK}
    if agent is not None:
        params["agent"] = agent
    if since is not None:
        params["since"] = since
    if after is not None:
        params["after_created"], params["after_id"] = after
    statement = _executions_statement(dialect, agent is not None, since is not None, bool(after))
    rows = await backend.read_rows(conn, statement, params)
    if not rows:
        return None
    ids = {
        "execution_ids": in_value([row[0] for row in rows], dialect),
        "task_ids": in_value(sorted({row[1] for row in rows}), dialect),
    }
    spans_found = await backend.read_rows(conn, _spans_statement(dialect), ids)
    rewarded = await backend.read_rows(
        conn,
        _rewards_statement(dialect),
        {
            **ids,
            "span_pks": in_value([span[1] for span in spans_found], dialect),
            "trace_ids": in_value(list({span[3] for span in spans_found}), dialect),
            "name": reward_name,
        },
    )
    return _Chunk(rows, spans_found, rewarded)


@functools.cache
def _executions_statement(dialect: str, by_agent: bool, since: bool, after: bool) -> sa.Select[Any]:
    """A chunk of executions, newest first, with their task's name and tags: along
    `ix_executions_created`, after the last row of the previous chunk (`after_created`,
    `after_id`). With an agent, executions without one of its spans are skipped here (one
    index range per execution); whether it is their most frequent agent is checked later."""
    query = sa.select(
        executions.c.id,
        executions.c.task_id,
        executions.c.status,
        executions.c.config,
        executions.c.created_at,
        tasks.c.name,
        tasks.c.tags,
    ).select_from(executions.outerjoin(tasks, tasks.c.id == executions.c.task_id))
    if since:
        query = query.where(executions.c.created_at >= sa.bindparam("since", type_=sa.BigInteger))
    if after:
        query = query.where(
            sa.tuple_(executions.c.created_at, executions.c.id)
            < sa.tuple_(
                sa.bindparam("after_created", type_=sa.BigInteger),
                sa.bindparam("after_id", type_=sa.Text),
            )
        )
    if by_agent:
        ran = sa.select(spans.c.pk).where(
            spans.c.task_id == executions.c.task_id,
            spans.c.execution_id == executions.c.id,
            spans.c.agent == sa.bindparam("agent", type_=sa.Text),
        )
        query = query.where(sa.exists(ran))
    return query.order_by(executions.c.created_at.desc(), executions.c.id.desc()).limit(
        sa.bindparam("chunk", type_=sa.Integer)
    )


def _member_if_named(dialect: str, column: sa.ColumnElement[Any], key: str) -> Any:
    """The text of `column`'s JSON member `key`, parsed only when the text names the key: a
    substring test is far cheaper than parsing every span's attributes, and few spans carry
    the key at all."""
    find = sa.func.strpos if dialect == "postgresql" else sa.func.instr
    named = find(column, sa.literal('"' + key + '"', sa.Text)) > 0
    return sa.case((named, json_member_text(dialect, column, key)))


@functools.cache
def _spans_statement(dialect: str) -> sa.Select[Any]:
    """The spans of a chunk's executions in span order, along `ix_spans_task_sequence`; the
    status message and events of error spans only, the tags of tagged spans only."""
    is_error = spans.c.status_code == "error"
    return (
        sa.select(
            spans.c.execution_id,
            spans.c.pk,
            spans.c.span_id,
            spans.c.trace_id,
            spans.c.parent_span_id.is_(None),
            spans.c.name,
            spans.c.agent,
            spans.c.operation,
            spans.c.model,
            spans.c.input_tokens,
            spans.c.output_tokens,
            spans.c.cost,
            spans.c.start_time,
            spans.c.end_time,
            sa.case((is_error, spans.c.status_message)),
            sa.case((is_error, spans.c.events)),
            sa.case((spans.c.tags != "[]", spans.c.tags)),
            _member_if_named(dialect, spans.c.attributes, TOOL_NAME_KEY),
            _member_if_named(dialect, spans.c.attributes, PROMPT_ID_KEY),
        )
        .where(
            in_param(spans.c.task_id, "task_ids", dialect),
            in_param(spans.c.execution_id, "execution_ids", dialect),
        )
        .order_by(spans.c.task_id, spans.c.sequence)
    )


@functools.cache
def _rewards_statement(dialect: str) -> sa.CompoundSelect[Any]:
    """(what the key names, key, reward pk, name, value) of the rewards linked to a chunk:
    named `name` through `reward_links` from its spans (key: the execution), or of any name
    targeting one of its executions, tasks or traces directly (key: that id), the latter also
    while unresolved. The direct branches leave the name to the caller: given it, SQLite
    would walk `ix_rewards_name` through every reward of the name instead of the target's
    index once per id."""
    named = rewards.c.name == sa.bindparam("name", type_=sa.Text)
    value = (rewards.c.pk, rewards.c.name, rewards.c.value)
    linked = (
        sa.select(sa.literal_column("'execution'"), spans.c.execution_id, *value)
        .select_from(
            reward_links.join(rewards, rewards.c.pk == reward_links.c.reward_pk).join(
                spans, spans.c.pk == reward_links.c.span_pk
            )
        )
        .where(in_param(reward_links.c.span_pk, "span_pks", dialect), named)
    )
    branches = [linked]
    for kind, ids in (("execution", "execution_ids"), ("task", "task_ids"), ("trace", "trace_ids")):
        column = rewards.c[f"target_{kind}_id"]
        branches.append(
            sa.select(sa.literal_column(f"'{kind}'"), column, *value).where(
                in_param(column, ids, dialect), rewards.c.target_kind == kind
            )
        )
    return sa.union_all(*branches)


class _Shared:
    """One object for each distinct value (names, tag and tool tuples, configs) across the
    facts of a call: 100,000 executions mostly repeat a few hundred of them, and the driver
    hands out a new string for every row."""

    def __init__(self) -> None:
        self.values: dict[Any, Any] = {}
        self.configs: dict[str, dict[str, Any]] = {}

    def value(self, value: Any) -> Any:
        # Keyed with the type: True == 1 == 1.0 as dict keys, and a config's True must stay True.
        return self.values.setdefault((type(value), value), value)

    def config(self, text: str | None) -> dict[str, Any]:
        """The parsed config, one dict for every execution with the same JSON text."""
        key = text or "{}"
        config = self.configs.get(key)
        if config is None:
            parsed = _loads(key, {})
            # Configs mostly differ in one or two keys: their values repeat across executions,
            # and one object per distinct value keeps 100,000 configs small.
            config = self.configs[key] = (
                {k: self.value(v) if _hashable(v) else v for k, v in parsed.items()}
                if isinstance(parsed, dict)
                else {}
            )
        return config


def _chunk_facts(chunk: _Chunk, reward_name: str, shared: _Shared) -> list[ExecutionFacts]:
    """The facts of a chunk's executions, from its rows (no I/O)."""
    spans_of: dict[str, list[Any]] = {row[0]: [] for row in chunk.executions}
    by_trace: dict[str, set[str]] = defaultdict(set)
    for span in chunk.spans:
        spans_of[span[0]].append(span)
        by_trace[span[3]].add(span[0])
    by_task: dict[str, list[str]] = defaultdict(list)
    for row in chunk.executions:
        by_task[row[1]].append(row[0])
    values: dict[str, dict[int, float]] = defaultdict(dict)
    for kind, key, pk, name, value in chunk.rewards:
        if name != reward_name:
            continue
        if kind == "execution":
            owners: Any = (key,) if key in spans_of else ()
        elif kind == "task":
            owners = by_task.get(key, ())
        else:
            owners = by_trace.get(key, ())
        for owner in owners:
            values[owner][pk] = value
    return [_facts(row, spans_of[row[0]], values.get(row[0]), shared) for row in chunk.executions]


def _facts(
    row: Any, spans_found: list[Any], rewards_by_pk: dict[int, float] | None, shared: _Shared
) -> ExecutionFacts:
    """One execution's facts from its row and its span rows (`_spans_statement`, in span
    order). One loop with local variables: this runs for every span mined."""
    execution_id, task_id, status, config_text, created_at, task_name, task_tags = row
    agents: dict[str, int] = {}
    tags = set(stored_tags(task_tags))
    models: set[str] = set()
    names: set[str] = set()
    tools: list[str] = []
    errors: set[str] = set()
    span_prompt: str | None = None
    tokens: int | None = None
    cost: float | None = None
    start: int | None = None
    end: int | None = None
    roots: list[str] = []
    others: list[str] = []
    for (
        _,
        _,
        span_id,
        _,
        is_root,
        name,
        agent,
        operation,
        model,
        input_tokens,
        output_tokens,
        span_cost,
        span_start,
        span_end,
        message,
        events,
        span_tags,
        tool_name,
        prompt_id,
    ) in spans_found:
        if agent is not None:
            agents[agent] = agents.get(agent, 0) + 1
        if model is not None:
            models.add(model)
        names.add(name)
        if span_tags is not None:
            tags.update(stored_tags(span_tags))
        if tool_name:
            tools.append(tool_name)
        elif name.startswith(TOOL_NAME_PREFIX) or (
            operation is not None and operation.lower() in TOOL_OPERATIONS
        ):
            tools.append(name)
        if message is not None:  # an error span
            errors.update(_error_types(message, events))
        if prompt_id and span_prompt is None:
            span_prompt = prompt_id
        if input_tokens is not None or output_tokens is not None:
            tokens = (tokens or 0) + (input_tokens or 0) + (output_tokens or 0)
        if span_cost is not None:
            cost = (cost or 0.0) + span_cost
        finish = span_start if span_end is None else span_end
        if start is None or span_start < start:
            start = span_start
        if end is None or finish > end:
            end = finish
        (roots if is_root else others).append(span_id)
    config = shared.config(config_text)
    share = shared.value
    prompt = config.get("prompt_id")
    reward = None
    if rewards_by_pk:
        reward = sum(rewards_by_pk.values()) / len(rewards_by_pk)
    return ExecutionFacts(
        execution_id=execution_id,
        task_id=task_id,
        task_name=share(task_name or ""),
        agent=share(min(agents, key=lambda name: (-agents[name], name)) if agents else None),
        status=share(status),
        config=config,
        tags=share(tuple(sorted(tags))),
        models=share(tuple(sorted(models))),
        tools=share(tuple(tools)),
        span_names=share(tuple(sorted(names))),
        error_types=share(tuple(sorted(errors))),
        prompt_id=share(span_prompt if prompt in (None, "") else str(prompt)),
        tokens=None if tokens is None else float(tokens),
        latency_ms=None if start is None or end is None else (end - start) / 1e6,
        cost=cost,
        reward=reward,
        started_at=created_at,
        sample_span_ids=tuple((roots + others)[:SAMPLE_SPANS]),
    )


def _error_types(message: str, events: str | None) -> list[str]:
    found: list[str] = []
    for event in _loads(events, []):
        if isinstance(event, dict) and event.get("name") == "exception":
            attributes = event.get("attributes")
            kind = attributes.get("exception.type") if isinstance(attributes, dict) else None
            if kind not in (None, ""):
                found.append(str(kind))
    if found:
        return found
    return [f"error: {message[:ERROR_MESSAGE_CHARS]}" if message else "error"]


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # Escaped lone surrogates (stored by the writer's fallback) are valid JSON that only
        # the standard library decodes.
        return json.loads(text)
