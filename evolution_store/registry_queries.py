"""Reads of the prompt registry: prompts, their lineage and diffs, labels, the prompt an agent
should use now (with A/B assignment), and markers."""

from __future__ import annotations

import difflib
import functools
import hashlib
import secrets
from collections import defaultdict
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .backends.base import Backend
from .errors import NotFound
from .marker_writes import AFTER, AGENT, BEFORE, KIND, MARKER_SPAN
from .queries import Page, keyset_page
from .rows import iso, prompt_dict, span_dict
from .schema import experiments, prompt_labels, prompts, spans
from .sql import json_member_text

#: the deepest lineage walked either way: lineages are short, and a cycle cannot be made
#: (parents must exist before their children), but a bound keeps a bug from looping
MAX_LINEAGE_DEPTH = 1000


async def _labels_of(conn: AsyncConnection, prompt_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    if prompt_ids:
        rows = await conn.execute(
            sa.select(prompt_labels.c.prompt_id, prompt_labels.c.label)
            .where(prompt_labels.c.prompt_id.in_(prompt_ids))
            .order_by(prompt_labels.c.label)
        )
        for prompt_id, label in rows:
            found[prompt_id].append(label)
    return found


async def _shaped(conn: AsyncConnection, rows: list[Any]) -> list[dict[str, Any]]:
    labels = await _labels_of(conn, [row._mapping["id"] for row in rows])
    return [prompt_dict(row._mapping, labels.get(row._mapping["id"], [])) for row in rows]


async def get_prompt(conn: AsyncConnection, prompt_id: str) -> dict[str, Any]:
    row = (await conn.execute(sa.select(prompts).where(prompts.c.id == prompt_id))).first()
    if row is None:
        raise NotFound(f"prompt {prompt_id!r} not found")
    return (await _shaped(conn, [row]))[0]


async def list_prompts(
    conn: AsyncConnection,
    *,
    agent: str | None = None,
    status: str | None = None,
    label: str | None = None,
    created_by: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Prompts, newest first, filtered by agent, status, a label naming them, or creator."""
    query = sa.select(prompts)
    if agent is not None:
        query = query.where(prompts.c.agent == agent)
    if status is not None:
        query = query.where(prompts.c.status == status)
    if created_by is not None:
        query = query.where(prompts.c.created_by == created_by)
    if label is not None:
        labelled = sa.select(prompt_labels.c.prompt_id).where(prompt_labels.c.label == label)
        query = query.where(prompts.c.id.in_(labelled))
    order = [prompts.c.created_at, prompts.c.id]
    rows, next_cursor = await keyset_page(
        conn, query, order, cursor=cursor, limit=limit, descending=True
    )
    return Page(await _shaped(conn, rows), next_cursor)


async def prompt_lineage(conn: AsyncConnection, prompt_id: str) -> dict[str, Any]:
    """The prompt, every ancestor (parents, their parents, …) and every descendant, nearest
    first, each with its status and fitness."""
    prompt = await get_prompt(conn, prompt_id)
    ancestors = await _walk(conn, prompt["parent_ids"], up=True)
    descendants = await _walk(conn, [prompt_id], up=False)
    return {"prompt": prompt, "ancestors": ancestors, "descendants": descendants}


async def _walk(conn: AsyncConnection, start: list[str], *, up: bool) -> list[dict[str, Any]]:
    """Breadth-first over parent links: up to the ancestors of `start` (including `start`),
    or down to the descendants of `start` (excluding it)."""
    seen: set[str] = set()
    found: list[dict[str, Any]] = []
    frontier = list(start)
    if not up:
        seen.update(start)
    for _ in range(MAX_LINEAGE_DEPTH):
        if not frontier:
            break
        if up:
            rows = (await conn.execute(sa.select(prompts).where(prompts.c.id.in_(frontier)))).all()
        else:
            rows = await _children(conn, frontier)
        rows = [row for row in rows if row._mapping["id"] not in seen]
        seen.update(row._mapping["id"] for row in rows)
        shaped = await _shaped(conn, sorted(rows, key=lambda row: -row._mapping["created_at"]))
        found.extend(shaped)
        if up:
            frontier = [parent for item in shaped for parent in item["parent_ids"]]
        else:
            frontier = [item["id"] for item in shaped]
    return found


async def _children(conn: AsyncConnection, parent_ids: list[str]) -> list[Any]:
    """Prompts naming any of `parent_ids` as a parent. Parents are JSON text, so the rows of
    the parents' agents are read and filtered here: lineages stay within an agent."""
    agents = sa.select(prompts.c.agent).where(prompts.c.id.in_(parent_ids))
    rows = (await conn.execute(sa.select(prompts).where(prompts.c.agent.in_(agents)))).all()
    wanted = set(parent_ids)
    return [row for row in rows if wanted & set(orjson.loads(row._mapping["parent_ids"]))]


async def prompt_diff(conn: AsyncConnection, prompt_id: str, against_id: str) -> dict[str, Any]:
    """A unified diff from `against_id`'s content to `prompt_id`'s."""
    prompt = await get_prompt(conn, prompt_id)
    against = await get_prompt(conn, against_id)
    lines = difflib.unified_diff(
        against["content"].splitlines(),
        prompt["content"].splitlines(),
        fromfile=f"{against['agent']} v{against['version']} ({against_id})",
        tofile=f"{prompt['agent']} v{prompt['version']} ({prompt_id})",
        lineterm="",
    )
    text = "\n".join(lines)
    return {"from": against_id, "to": prompt_id, "diff": text + "\n" if text else ""}


async def list_labels(conn: AsyncConnection, agent: str) -> list[dict[str, Any]]:
    rows = await conn.execute(_labels_query(agent).order_by(prompt_labels.c.label))
    return [label_dict(row._mapping) for row in rows]


def _labels_query(agent: str) -> sa.Select[Any]:
    return (
        sa.select(prompt_labels, prompts.c.version)
        .join(prompts, prompts.c.id == prompt_labels.c.prompt_id)
        .where(prompt_labels.c.agent == agent)
    )


def label_dict(m: Any) -> dict[str, Any]:
    return {
        "agent": m["agent"],
        "label": m["label"],
        "prompt_id": m["prompt_id"],
        "version": m["version"],
        "updated_at": iso(m["updated_at"]),
    }


async def get_label(conn: AsyncConnection, agent: str, label: str) -> dict[str, Any]:
    row = (await conn.execute(_labels_query(agent).where(prompt_labels.c.label == label))).first()
    if row is not None:
        return label_dict(row._mapping)
    raise NotFound(f"agent {agent!r} has no prompt labelled {label!r}")


@functools.cache
def _resolve_statement(dialect: str, by_label: bool) -> sa.Select[Any]:
    """One prompt with its labels (comma-joined: labels cannot hold a comma) and the agent's
    running A/B experiment, if any: by `agent` and `label`, or by `prompt_id`. One statement,
    so the prompt an agent asks for on every run is one round trip."""
    named = prompt_labels.alias("named")
    join = sa.func.string_agg if dialect == "postgresql" else sa.func.group_concat
    labels = (
        sa.select(join(named.c.label, ","))
        .where(named.c.prompt_id == prompts.c.id)
        .scalar_subquery()
        .label("label_list")
    )
    running = sa.and_(
        experiments.c.agent == prompts.c.agent,
        experiments.c.kind == "ab",
        experiments.c.status == "running",
    )
    query = sa.select(prompts, labels, experiments.c.id.label("running_id"), experiments.c.variants)
    if by_label:
        source = prompt_labels.join(prompts, prompts.c.id == prompt_labels.c.prompt_id)
        query = query.select_from(source.outerjoin(experiments, running)).where(
            prompt_labels.c.agent == sa.bindparam("agent"),
            prompt_labels.c.label == sa.bindparam("label"),
        )
    else:
        query = query.select_from(prompts.outerjoin(experiments, running)).where(
            prompts.c.id == sa.bindparam("prompt_id")
        )
    return query


_RESOLVE_COLUMNS = (
    *(column.name for column in prompts.columns),
    "label_list",
    "running_id",
    "variants",
)
_RUNNING_AB = sa.select(experiments.c.id, experiments.c.variants).where(
    experiments.c.agent == sa.bindparam("agent"),
    experiments.c.kind == "ab",
    experiments.c.status == "running",
)


async def resolve_prompt(
    conn: AsyncConnection,
    backend: Backend,
    agent: str,
    *,
    label: str = "production",
    key: str | None = None,
) -> dict[str, Any]:
    """The prompt `agent` should use now: the one `label` names, or, for `production` while
    an A/B experiment runs for the agent, the variant `key` is assigned to (`assign_variant`:
    the same key always gets the same variant). Says which experiment and variant.

    One statement when the label's prompt is the answer; a second when a variant is another
    prompt (on the raw driver: this runs on every run of every agent)."""
    dialect = conn.dialect.name
    params = {"agent": agent, "label": label}
    rows = await backend.read_rows(conn, _resolve_statement(dialect, True), params)
    found = dict(zip(_RESOLVE_COLUMNS, rows[0], strict=True)) if rows else None
    experiment_id = variant = None
    if label == "production":
        if found is not None:
            running = (found["running_id"], found["variants"]) if found["running_id"] else None
        else:  # no production prompt yet: an experiment may still serve its variants
            running = next(iter(await backend.read_rows(conn, _RUNNING_AB, params)), None)
        if running is not None:
            experiment_id, weights = running[0], orjson.loads(running[1])
            variant = assign_variant(experiment_id, key, [item["weight"] for item in weights])
            chosen = weights[variant]["prompt_id"]
            if found is None or found["id"] != chosen:
                statement = _resolve_statement(dialect, False)
                rows = await backend.read_rows(conn, statement, {"prompt_id": chosen})
                found = dict(zip(_RESOLVE_COLUMNS, rows[0], strict=True)) if rows else found
    if found is None:
        raise NotFound(f"agent {agent!r} has no prompt labelled {label!r}")
    labels = sorted(found["label_list"].split(",")) if found["label_list"] else []
    prompt = prompt_dict(found, labels)
    return {**prompt, "label": label, "experiment_id": experiment_id, "variant": variant}


def assign_variant(experiment_id: str, key: str | None, weights: list[float]) -> int:
    """The variant index for `key`: a point in [0, 1) from a hash of the experiment and key,
    placed on the cumulative weights. No state: any server process answers the same. Without
    a key, a random one (each call may get another variant)."""
    key = key if key is not None else secrets.token_hex(8)
    digest = hashlib.sha256(f"{experiment_id}\x00{key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    total = 0.0
    for index, weight in enumerate(weights):
        total += weight
        if point < total:
            return index
    return len(weights) - 1  # a rounding shortfall of the sum lands on the last variant


async def list_markers(
    conn: AsyncConnection,
    *,
    agent: str | None = None,
    kind: str | None = None,
    start_after: int | None = None,
    start_before: int | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> Page:
    """Marker spans, newest first."""
    query = sa.select(spans).where(spans.c.name == MARKER_SPAN)
    if agent is not None:
        query = query.where(spans.c.agent == agent)
    if start_after is not None:
        query = query.where(spans.c.start_time > start_after)
    if start_before is not None:
        query = query.where(spans.c.start_time < start_before)
    if kind is not None:  # a JSON scan, but of marker spans only
        query = query.where(json_member_text(conn.dialect.name, spans.c.attributes, KIND) == kind)
    order = [spans.c.start_time, spans.c.pk]
    rows, next_cursor = await keyset_page(
        conn, query, order, cursor=cursor, limit=limit, descending=True
    )
    return Page([marker_dict(span_dict(row._mapping)) for row in rows], next_cursor)


def marker_dict(span: dict[str, Any]) -> dict[str, Any]:
    attributes = span["attributes"]
    return {
        "id": span["span_id"],
        "trace_id": span["trace_id"],
        "kind": attributes.get(KIND),
        "agent": attributes.get(AGENT),
        "time": iso(span["start_time"]),
        "time_unix_nano": span["start_time"],
        "before": _json_or_none(attributes.get(BEFORE)),
        "after": _json_or_none(attributes.get(AFTER)),
        "attributes": attributes,
    }


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
