"""Rewards that travel inside OTLP spans (DESIGN §2, "Rewards carried inside OTLP").

Three carriers are read, so that an unmodified Agent Lightning, OpenInference/Phoenix or GenAI
semconv producer can send rewards over plain OTLP:

- **Agent Lightning** (v0.3 and the layouts before it): a span with
  `agentlightning.reward.<i>.name|value` (usually named `agentlightning.annotation`), optional
  `agentlightning.link.<i>.key_match|value_match` selectors and `agentlightning.tag.<i>` tags.
  Also read: a JSON-encoded or numeric `agentlightning.reward` attribute, the 0.2 layout (span
  `agentlightning.reward` with a numeric `reward` attribute) and AgentOps' reward operations
  (`agentops.task.output` / `agentops.entity.output` = `{"type": "reward", "value": x}`).
  Without selectors the reward judges the carrier's parent span, or its trace for a root span.
- **OpenInference**: `annotations.<i>.annotation.*` and `evaluations.<i>.evaluation.*` with
  `name`, `score`, `label`, `explanation`, `annotator_kind`, `identifier`, `metadata`. On an
  `EVALUATOR` span (and on a bare carrier that is not an OpenInference span at all) the target is
  the span's first OTel link; otherwise, as the OpenInference spec says, annotations judge the
  span that carries them.
- **GenAI semconv**: span events `gen_ai.evaluation.result`; the target is the span carrying the
  event, or the span whose `gen_ai.response.id` the event names.

Every reward gets a deterministic id, `otlp:<trace_id>:<span_id>:<carrier><index>`, derived from
the carrier span: an exporter retrying the same batch re-sends the same ids, and the store's
idempotency on reward id makes the retry a no-op instead of a duplicate.

Optional attributes on the carrier (Agent Lightning) or event (GenAI) let our own SDK say more
than the foreign formats can: `evolution.reward.id`, `.name`, `.feedback`, `.source`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError

from .models import REWARD_SOURCES, RewardIn, SpanRecord

AL_REWARD = "agentlightning.reward"
AL_REWARD_PREFIX = "agentlightning.reward."
AL_LINK_PREFIX = "agentlightning.link."
AL_TAG = "agentlightning.tag"
AL_TAG_PREFIX = "agentlightning.tag."
AL_SPAN_NAMES = frozenset({"agentlightning.annotation", "agentlightning.reward"})
AGENTOPS_OUTPUT_KEYS = ("agentops.task.output", "agentops.entity.output")

OI_KIND = "openinference.span.kind"
OI_FAMILIES = (("annotations.", "annotation.", "an"), ("evaluations.", "evaluation.", "ev"))

GENAI_EVENT = "gen_ai.evaluation.result"

EXT_ID = "evolution.reward.id"
EXT_NAME = "evolution.reward.name"
EXT_FEEDBACK = "evolution.reward.feedback"
EXT_SOURCE = "evolution.reward.source"

_ANNOTATOR_SOURCES = {"HUMAN": "human", "LLM": "llm", "CODE": "code"}

Note = Callable[[str], None]


def might_carry_rewards(name: str, attributes: dict[str, Any]) -> bool:
    """A handful of dict lookups that say whether a span needs the full carrier scan.

    Called for every decoded span, so it must stay cheap: only spans that pass it pay for
    scanning their attribute keys.
    """
    return (
        "agentlightning.reward.0.value" in attributes
        or "annotations.0.annotation.name" in attributes
        or "evaluations.0.evaluation.name" in attributes
        or AL_REWARD in attributes
        or name in AL_SPAN_NAMES
        or "agentops.task.output" in attributes
        or "agentops.entity.output" in attributes
    )


def rewards_from_span(
    record: SpanRecord, note: Note, *, check_attributes: bool = True, check_events: bool = True
) -> list[RewardIn]:
    """Every reward the span carries, in a stable order; problems go to `note`, never raise.

    `check_attributes` / `check_events` let the decoder skip the halves it already knows are
    empty (it sees `gen_ai.evaluation.result` events while building them).
    """
    rewards: list[RewardIn] = []
    if check_attributes:
        _agent_lightning(record, rewards, note)
        _openinference(record, rewards, note)
    if check_events:
        for index, event in enumerate(record.events):
            if event.get("name") == GENAI_EVENT:
                _genai_event(record, index, event.get("attributes") or {}, rewards, note)
    return rewards


def reward_id(record: SpanRecord, suffix: str) -> str:
    """The deterministic id of the reward `suffix` (e.g. `al`, `an0`, `ge3`) on this carrier."""
    return f"otlp:{record.trace_id}:{record.span_id}:{suffix}"


# ---------------------------------------------------------------------------------- helpers


def _number(value: Any) -> float | None:
    """A finite float from an attribute value, or None (booleans are not scores)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _indexed(attributes: dict[str, Any], prefix: str) -> dict[int, dict[str, Any]]:
    """`prefix<i>.<field>` (and `prefix<i>`, under field "") grouped as {i: {field: value}}."""
    groups: dict[int, dict[str, Any]] = {}
    cut = len(prefix)
    for key, value in attributes.items():
        if not key.startswith(prefix):
            continue
        index, _, field_name = key[cut:].partition(".")
        if index.isdigit():
            groups.setdefault(int(index), {})[field_name] = value
    return dict(sorted(groups.items()))


def _source(value: Any, default: str) -> str:
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in REWARD_SOURCES:
            return text.lower()
        mapped = _ANNOTATOR_SOURCES.get(text.upper())
        if mapped:
            return mapped
    return default


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text or None


def _build(note: Note, where: str, **fields: Any) -> RewardIn | None:
    try:
        return RewardIn(**fields)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        note(f"{where}: reward skipped ({first.get('msg', 'invalid')})")
        return None


def _span_target(record: SpanRecord) -> dict[str, Any]:
    return {"span_id": record.span_id, "trace_id": record.trace_id}


def _first_link_target(record: SpanRecord) -> dict[str, Any] | None:
    for link in record.links:
        span_id, trace_id = link.get("span_id"), link.get("trace_id")
        if span_id and trace_id and len(span_id) == 16 and len(trace_id) == 32:
            return {"span_id": span_id, "trace_id": trace_id}
    return None


# --------------------------------------------------------------------------- Agent Lightning


def _al_dimensions(record: SpanRecord) -> list[tuple[str, float]]:
    """The reward dimensions in any layout Agent Lightning has used, primary first."""
    attributes = record.attributes
    dims: list[tuple[str, float]] = []
    for index, group in _indexed(attributes, AL_REWARD_PREFIX).items():
        value = _number(group.get("value"))
        if value is not None:
            dims.append((_text(group.get("name")) or _unnamed(index), value))
    if dims:
        return dims
    carried = attributes.get(AL_REWARD)
    if carried is None and record.name == AL_REWARD:
        carried = attributes.get("reward")
    if carried is not None:
        dims = _al_parse_carried(carried)
        if dims:
            return dims
    for key in AGENTOPS_OUTPUT_KEYS:
        output = attributes.get(key)
        if isinstance(output, str) and '"reward"' in output:
            try:
                output = orjson.loads(output)
            except orjson.JSONDecodeError:
                continue
        if isinstance(output, dict) and output.get("type") == "reward":
            value = _number(output.get("value"))
            if value is not None:
                return [("primary", value)]
    return []


def _unnamed(index: int) -> str:
    # Agent Lightning calls an unnamed scalar reward "primary"; we store it as "reward".
    return "primary" if index == 0 else f"dimension_{index}"


def _al_parse_carried(carried: Any) -> list[tuple[str, float]]:
    """`agentlightning.reward` / legacy `reward`: a number, or JSON of a number, a list of
    `{name, value}` or a `{name: value}` mapping."""
    value = _number(carried)
    if value is not None:
        return [("primary", value)]
    if isinstance(carried, str):
        try:
            carried = orjson.loads(carried)
        except orjson.JSONDecodeError:
            return []
        value = _number(carried)
        if value is not None:
            return [("primary", value)]
    dims: list[tuple[str, float]] = []
    if isinstance(carried, list):
        for index, item in enumerate(carried):
            if isinstance(item, dict):
                value = _number(item.get("value"))
                if value is not None:
                    dims.append((_text(item.get("name")) or _unnamed(index), value))
    elif isinstance(carried, dict):
        for name, item in carried.items():
            value = _number(item)
            if value is not None:
                dims.append((str(name), value))
    return dims


def _al_links(attributes: dict[str, Any]) -> dict[str, Any]:
    links: dict[str, Any] = {}
    for group in _indexed(attributes, AL_LINK_PREFIX).values():
        key, value = group.get("key_match"), group.get("value_match")
        if isinstance(key, str) and key and value is not None:
            links[key] = value if isinstance(value, str | int | float | bool) else str(value)
    return links


def _al_tags(attributes: dict[str, Any]) -> list[str]:
    tags: list[str] = []
    carried = attributes.get(AL_TAG)
    if isinstance(carried, str):
        tags.append(carried)
    elif isinstance(carried, list):
        tags.extend(str(tag) for tag in carried)
    for group in _indexed(attributes, AL_TAG_PREFIX).values():
        tag = group.get("")
        if isinstance(tag, str):
            tags.append(tag)
    return [tag for tag in dict.fromkeys(tags) if tag and len(tag) <= 200]


def _agent_lightning(record: SpanRecord, rewards: list[RewardIn], note: Note) -> None:
    dims = _al_dimensions(record)
    if not dims:
        return
    attributes = record.attributes
    primary_name = dims[0][0]
    name = _text(attributes.get(EXT_NAME)) or (
        primary_name if primary_name != "primary" else "reward"
    )
    dimensions = {name: dims[0][1]} if len(dims) == 1 else dict(dims)
    links = _al_links(attributes)
    if links:
        target: dict[str, Any] = {"links": links}
    elif record.parent_span_id:
        target = {"span_id": record.parent_span_id, "trace_id": record.trace_id}
    else:
        target = {"trace_id": record.trace_id}
    reward = _build(
        note,
        f"agentlightning reward on span {record.span_id}",
        id=_text(attributes.get(EXT_ID)) or reward_id(record, "al"),
        name=name[:200],
        value=dims[0][1],
        dimensions=dimensions,
        feedback=_text(attributes.get(EXT_FEEDBACK)),
        source=_source(attributes.get(EXT_SOURCE), "code"),
        tags=_al_tags(attributes),
        metadata={"carrier": "agentlightning", "carrier_span_id": record.span_id},
        **target,
    )
    if reward is not None:
        rewards.append(reward)


# ----------------------------------------------------------------------------- OpenInference


def _openinference(record: SpanRecord, rewards: list[RewardIn], note: Note) -> None:
    attributes = record.attributes
    kind = attributes.get(OI_KIND)
    is_evaluator = isinstance(kind, str) and kind.upper() == "EVALUATOR"
    for prefix, inner, code in OI_FAMILIES:
        groups = _indexed(attributes, prefix)
        if not groups:
            continue
        # Evaluations, and anything on an EVALUATOR span, judge the linked span. Annotations on
        # an OpenInference span judge that span (OI spec); a bare carrier without
        # `openinference.span.kind` is read as pointing at its link, like an evaluator.
        via_link = is_evaluator or code == "ev" or (kind is None and bool(record.links))
        target: dict[str, Any] | None
        if via_link:
            target = _first_link_target(record)
            if target is None:
                note(
                    f"openinference carrier {record.span_id} has no valid link: target = its trace"
                )
                target = {"trace_id": record.trace_id}
        else:
            target = _span_target(record)
        for index, group in groups.items():
            fields = {
                key[len(inner) :]: value for key, value in group.items() if key.startswith(inner)
            }
            if fields:
                _openinference_one(record, f"{code}{index}", fields, target, rewards, note)


def _openinference_one(
    record: SpanRecord,
    suffix: str,
    fields: dict[str, Any],
    target: dict[str, Any],
    rewards: list[RewardIn],
    note: Note,
) -> None:
    name = _text(fields.get("name")) or "reward"
    score = _number(fields.get("score"))
    if score is None:
        note(f"openinference {name!r} on span {record.span_id} has no numeric score: skipped")
        return
    metadata: dict[str, Any] = {"carrier": "openinference", "carrier_span_id": record.span_id}
    label = _text(fields.get("label"))
    if label is not None:
        metadata["label"] = label
    identifier = _text(fields.get("identifier"))
    if identifier is not None:
        metadata["identifier"] = identifier
    if fields.get("annotator_kind") is not None:
        metadata["annotator_kind"] = str(fields["annotator_kind"])
    extra = fields.get("metadata")
    if isinstance(extra, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            extra = orjson.loads(extra)
    if extra is not None:
        metadata["metadata"] = extra
    reward = _build(
        note,
        f"openinference {name!r} on span {record.span_id}",
        id=reward_id(record, suffix),
        name=name[:200],
        value=score,
        feedback=_text(fields.get("explanation")),
        source=_source(fields.get("annotator_kind"), "code"),
        metadata=metadata,
        **target,
    )
    if reward is not None:
        rewards.append(reward)


# -------------------------------------------------------------------------- GenAI semconv


def _genai_event(
    record: SpanRecord,
    index: int,
    attributes: dict[str, Any],
    rewards: list[RewardIn],
    note: Note,
) -> None:
    name = _text(attributes.get("gen_ai.evaluation.name")) or "reward"
    score = _number(attributes.get("gen_ai.evaluation.score.value"))
    if score is None:
        note(f"gen_ai.evaluation.result {name!r} on span {record.span_id} has no score: skipped")
        return
    response_id = attributes.get("gen_ai.response.id")
    if response_id is not None and response_id != "":
        target: dict[str, Any] = {"links": {"gen_ai.response.id": str(response_id)}}
    else:
        target = _span_target(record)
    metadata: dict[str, Any] = {"carrier": "gen_ai", "carrier_span_id": record.span_id}
    label = _text(attributes.get("gen_ai.evaluation.score.label"))
    if label is not None:
        metadata["label"] = label
    reward = _build(
        note,
        f"gen_ai.evaluation.result {name!r} on span {record.span_id}",
        id=_text(attributes.get(EXT_ID)) or reward_id(record, f"ge{index}"),
        name=name[:200],
        value=score,
        feedback=_text(attributes.get("gen_ai.evaluation.explanation")),
        source=_source(attributes.get(EXT_SOURCE), "llm"),
        metadata=metadata,
        **target,
    )
    if reward is not None:
        rewards.append(reward)
