"""An agent's LLM calls, prompt and completion as chat messages, with their rewards: what the
fine-tuning exports (`evolution_store.learn.export`) read.

Streamed in keyset pages (`batch` spans each, along `ix_spans_agent_start`): three statements
per page whatever its size (the page's spans, the rewards linked to them, the rewards aimed at
their traces, executions and tasks), and only one page's rows in memory at a time, so a
million spans cost what a thousand do.

Where a span's prompt and completion come from, first found wins:

1. GenAI semantic conventions: `gen_ai.input.messages` / `gen_ai.output.messages` (JSON text
   or a list; `{role, parts: [{type: "text", content}]}` or `{role, content}`), with
   `gen_ai.system_instructions` put first as a system message; else the older
   `gen_ai.prompt.<i>.role|content` / `gen_ai.completion.<i>.role|content`.
2. OpenInference: `llm.input_messages.<i>.message.role|content` and
   `llm.output_messages.<i>.message.role|content` (or `message.contents.<j>.message_content.text`).
3. What `@track_evolution` captured: `input.value` / `output.value`. An input whose JSON has a
   `messages` list of `{role, content}` (as chat clients take) gives those messages; an input
   of one argument gives that argument as the user message; anything else its text. The output
   is the assistant message: a string as is, an OpenAI-style chat completion's first choice's
   content, a message's `content`, else its JSON text.

A span without both a prompt and a completion is not an LLM call and is skipped.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .backends import in_param, in_value
from .backends.base import Backend
from .errors import InvalidInput
from .schema import reward_links, rewards, spans

#: spans per page when the caller does not say
DEFAULT_BATCH = 1000
MAX_BATCH = 10_000

#: text that a span's attributes JSON must contain to be read at all: a substring test in SQL
#: is far cheaper than parsing every span's attributes, and most spans are not LLM calls
_MARKERS = (
    '"gen_ai.input.messages"',
    '"gen_ai.prompt.',
    '"llm.input_messages.',
    '"input.value"',
)


async def llm_calls(
    engine: AsyncEngine,
    backend: Backend,
    *,
    agent: str,
    since: int | None = None,
    reward_name: str = "reward",
    batch: int = DEFAULT_BATCH,
) -> AsyncIterator[list[dict[str, Any]]]:
    """Pages of the LLM calls of `agent` (`spans.agent`) started at or after `since` (ns), in
    start order (ties by arrival). Each call is a dict:

    `span_id`, `trace_id`, `task_id`, `execution_id`, `name`, `model`, `operation`,
    `start_time`, `source` ("gen_ai" | "openinference" | "captured"), `prompt` and
    `completion` (lists of `{"role", "content"}`, content as text), `reward` (the mean of the
    distinct rewards named `reward_name` linked to the span itself; when there are none, of
    those aimed at its trace, execution or task: the outcome of the run it was part of; None
    without any) and `reward_count` (how many were averaged).

    A page may hold fewer than `batch` calls (spans that turn out not to be LLM calls are
    dropped after reading); an empty page is never yielded. A connection is held only while a
    page is read, never while the caller works on it. Raises `InvalidInput` for a batch
    outside 1..10,000."""
    if not 1 <= batch <= MAX_BATCH:
        raise InvalidInput(f"batch must be between 1 and {MAX_BATCH}", field="batch")
    after: tuple[int, int] | None = None
    while True:
        async with engine.connect() as conn:
            dialect = conn.dialect.name
            params: dict[str, Any] = {"agent": agent, "batch": batch}
            if since is not None:
                params["since"] = since
            if after is not None:
                params["after_start"], params["after_pk"] = after
            rows = await backend.read_rows(
                conn, _spans_statement(dialect, since is not None, after is not None), params
            )
            if not rows:
                return
            found = await _rewards(conn, backend, dialect, rows, reward_name)
        calls = [call for row in rows if (call := _call(row, found)) is not None]
        if calls:
            yield calls
        if len(rows) < batch:
            return
        after = (rows[-1][8], rows[-1][0])


@functools.cache
def _spans_statement(dialect: str, since: bool, after: bool) -> sa.Select[Any]:
    """A page of the agent's candidate spans, along `ix_spans_agent_start`, after the last
    (start_time, pk) of the previous page."""
    find = sa.func.strpos if dialect == "postgresql" else sa.func.instr
    named = sa.or_(
        *(find(spans.c.attributes, sa.literal(marker, sa.Text)) > 0 for marker in _MARKERS)
    )
    query = sa.select(
        spans.c.pk,
        spans.c.span_id,
        spans.c.trace_id,
        spans.c.task_id,
        spans.c.execution_id,
        spans.c.name,
        spans.c.model,
        spans.c.operation,
        spans.c.start_time,
        spans.c.attributes,
    ).where(spans.c.agent == sa.bindparam("agent", type_=sa.Text), named)
    if since:
        query = query.where(spans.c.start_time >= sa.bindparam("since", type_=sa.BigInteger))
    if after:
        # The plain bound on start_time is implied by the row comparison; it is there because
        # a planner bounds an index range by it, and by a row comparison only when every
        # column of the row is in the index (`pk` is not, on Postgres).
        query = query.where(
            spans.c.start_time >= sa.bindparam("after_start", type_=sa.BigInteger),
            sa.tuple_(spans.c.start_time, spans.c.pk)
            > sa.tuple_(
                sa.bindparam("after_start", type_=sa.BigInteger),
                sa.bindparam("after_pk", type_=sa.BigInteger),
            ),
        )
    return query.order_by(spans.c.start_time, spans.c.pk).limit(
        sa.bindparam("batch", type_=sa.Integer)
    )


@functools.cache
def _linked_statement(dialect: str) -> sa.Select[Any]:
    """(span pk, reward pk, name, value) of the rewards linked to the page's spans. The name
    is left to the caller, as in `_direct_statement`: given it, SQLite walks every reward of
    the name (all of them, usually) rather than the page's links."""
    return (
        sa.select(reward_links.c.span_pk, rewards.c.pk, rewards.c.name, rewards.c.value)
        .select_from(reward_links.join(rewards, rewards.c.pk == reward_links.c.reward_pk))
        .where(in_param(reward_links.c.span_pk, "span_pks", dialect))
    )


@functools.cache
def _direct_statement(dialect: str) -> sa.CompoundSelect[Any]:
    """(kind, id, reward pk, name, value) of the rewards aimed at the page's traces, executions
    and tasks, resolved or not. The name is left to the caller, as in `pattern_facts`: given
    it, SQLite would walk every reward of the name instead of the target's index per id."""
    branches = []
    for kind, ids in (("execution", "execution_ids"), ("task", "task_ids"), ("trace", "trace_ids")):
        column = rewards.c[f"target_{kind}_id"]
        branches.append(
            sa.select(
                sa.literal_column(f"'{kind}'"),
                column,
                rewards.c.pk,
                rewards.c.name,
                rewards.c.value,
            ).where(in_param(column, ids, dialect), rewards.c.target_kind == kind)
        )
    return sa.union_all(*branches)


class _PageRewards:
    """The rewards of one page: by span pk, and by (kind, id) of the run-level targets."""

    def __init__(self) -> None:
        self.by_span: dict[int, dict[int, float]] = {}
        self.by_target: dict[tuple[str, str], dict[int, float]] = {}


async def _rewards(
    conn: Any, backend: Backend, dialect: str, rows: list[Any], reward_name: str
) -> _PageRewards:
    found = _PageRewards()
    linked = await backend.read_rows(
        conn,
        _linked_statement(dialect),
        {"span_pks": in_value([row[0] for row in rows], dialect)},
    )
    for span_pk, pk, name, value in linked:
        if name == reward_name:
            found.by_span.setdefault(span_pk, {})[pk] = value
    direct = await backend.read_rows(
        conn,
        _direct_statement(dialect),
        {
            "trace_ids": in_value(sorted({row[2] for row in rows}), dialect),
            "task_ids": in_value(sorted({row[3] for row in rows}), dialect),
            "execution_ids": in_value(sorted({row[4] for row in rows}), dialect),
        },
    )
    for kind, key, pk, name, value in direct:
        if name == reward_name:
            found.by_target.setdefault((kind, key), {})[pk] = value
    return found


def _call(row: Any, found: _PageRewards) -> dict[str, Any] | None:
    pk, span_id, trace_id, task_id, execution_id, name, model, operation, start, text = row
    attributes = _loads(text)
    if not isinstance(attributes, dict):
        return None
    messages = extract_messages(attributes)
    if messages is None:
        return None
    source, prompt, completion = messages
    values = found.by_span.get(pk)
    if not values:
        values = {}
        for target in (("trace", trace_id), ("execution", execution_id), ("task", task_id)):
            values.update(found.by_target.get(target, {}))
    return {
        "span_id": span_id,
        "trace_id": trace_id,
        "task_id": task_id,
        "execution_id": execution_id,
        "name": name,
        "model": model,
        "operation": operation,
        "start_time": start,
        "source": source,
        "prompt": prompt,
        "completion": completion,
        "reward": sum(values.values()) / len(values) if values else None,
        "reward_count": len(values),
    }


Messages = list[dict[str, str]]


def extract_messages(attributes: dict[str, Any]) -> tuple[str, Messages, Messages] | None:
    """(source, prompt, completion) from a span's attributes, in the order the module
    docstring gives; None when no source has both."""
    prompt = _semconv_messages(attributes.get("gen_ai.input.messages"))
    completion = _semconv_messages(attributes.get("gen_ai.output.messages"))
    if prompt is None:
        prompt = _indexed(attributes, "gen_ai.prompt.", ".role", ".content")
        completion = _indexed(attributes, "gen_ai.completion.", ".role", ".content")
    if prompt and completion:
        system = attributes.get("gen_ai.system_instructions")
        if system is not None:
            text = _parts_text(_loads(system) if isinstance(system, str) else system)
            if text:
                prompt = [{"role": "system", "content": text}, *prompt]
        return "gen_ai", prompt, completion
    prompt = _indexed(attributes, "llm.input_messages.", ".message.role", ".message.content")
    completion = _indexed(attributes, "llm.output_messages.", ".message.role", ".message.content")
    if prompt and completion:
        return "openinference", prompt, completion
    if "input.value" in attributes and "output.value" in attributes:
        return (
            "captured",
            _captured_input(attributes["input.value"]),
            [{"role": "assistant", "content": _captured_output(attributes["output.value"])}],
        )
    return None


def _semconv_messages(value: Any) -> Messages | None:
    if isinstance(value, str):
        value = _loads(value)
    if not isinstance(value, list):
        return None
    found = []
    for message in value:
        if isinstance(message, dict) and "role" in message:
            content = message.get("content")
            if content is None:
                content = _parts_text(message.get("parts"))
            found.append({"role": str(message["role"]), "content": _text(content)})
    return found or None


def _parts_text(parts: Any) -> str:
    """The text of a GenAI `parts` list (or a string): its text parts joined."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return ""
    texts = []
    for part in parts:
        if isinstance(part, dict) and part.get("type", "text") == "text":
            texts.append(_text(part.get("content", part.get("text", ""))))
        elif isinstance(part, str):
            texts.append(part)
    return "".join(texts)


def _indexed(attributes: dict[str, Any], prefix: str, role: str, content: str) -> Messages | None:
    """Flattened messages `<prefix><i><role>` / `<prefix><i><content>` in index order; the
    OpenInference `message.contents.<j>.message_content.text` parts when no content."""
    indexes: set[int] = set()
    for key in attributes:
        if key.startswith(prefix):
            head = key[len(prefix) :].split(".", 1)[0]
            if head.isdigit():
                indexes.add(int(head))
    found = []
    for index in sorted(indexes):
        base = f"{prefix}{index}"
        text = attributes.get(base + content)
        if text is None:
            part = 0
            pieces = []
            while (
                piece := attributes.get(f"{base}.message.contents.{part}.message_content.text")
            ) is not None:
                pieces.append(_text(piece))
                part += 1
            text = "".join(pieces) if pieces else None
        if text is None:
            continue
        found.append({"role": str(attributes.get(base + role, "user")), "content": _text(text)})
    return found or None


def _captured_input(value: Any) -> Messages:
    parsed = _loads(value) if isinstance(value, str) else value
    if isinstance(parsed, dict):
        messages = parsed.get("messages")
        if isinstance(messages, list):
            found = _semconv_messages(messages)
            if found:
                return found
        if len(parsed) == 1:
            return [{"role": "user", "content": _text(next(iter(parsed.values())))}]
    return [{"role": "user", "content": _text(value)}]


def _captured_output(value: Any) -> str:
    """The answer in a captured return value: an OpenAI-style chat completion's first choice
    (`choices[0].message.content`) or a message's `content` when it is one, else its text."""
    parsed = _loads(value) if isinstance(value, str) else value
    if isinstance(parsed, dict):
        choices = parsed.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            message = choices[0].get("message")
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                return message["content"]
        if isinstance(parsed.get("content"), str):
            return parsed["content"]
    return _text(value)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


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
