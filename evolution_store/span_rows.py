"""From decoded spans to table rows and carried rewards, before the writer sees them.

This is the shared ingest path of every route (REST, OTLP/HTTP, OTLP/gRPC, the embedded
exporter): `prepare_spans` computes everything about a span's row that does not depend on the
database — JSON text of its attributes, events, links, resource and scope; promoted columns;
tags; task and execution ids named in its attributes; the values of indexed attribute keys —
and reads the rewards that some spans carry (`reward_carriers`). The writer is left with what
needs its transaction (duplicates, owners, sequence numbers, primary keys), so the two overlap
instead of taking turns.

Rows are tuples in `SPAN_COLUMNS` order, which the backends insert without per-row dicts.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any

import orjson

from .models import RESERVED_LINK_KEYS, RewardIn, SpanRecord, clean_text, link_value_text
from .partial_success import PartialSuccess
from .promote import (
    PROMOTED_COLUMNS,
    PriceTable,
    ids_from_attributes,
    promoted_columns,
    tags_from_attributes,
)
from .reward_carriers import GENAI_EVENT, might_carry_rewards, rewards_from_span

logger = logging.getLogger(__name__)

#: columns the writer fills in, then the prepared ones, in the order rows carry them
WRITER_COLUMNS = ("pk", "task_id", "execution_id", "sequence", "ingested_at")
PREPARED_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_time",
    "end_time",
    "status_code",
    "status_message",
    "attributes",
    "events",
    "links",
    "resource",
    "scope",
    "tags",
    *PROMOTED_COLUMNS,
)
SPAN_COLUMNS = WRITER_COLUMNS + PREPARED_COLUMNS
#: where the fields the writer reads sit in the prepared values
_TRACE_ID, _SPAN_ID, _PARENT, _NAME, _START, _END, _STATUS, _ATTRIBUTES = (
    PREPARED_COLUMNS.index(name)
    for name in (
        "trace_id",
        "span_id",
        "parent_span_id",
        "name",
        "start_time",
        "end_time",
        "status_code",
        "attributes",
    )
)

_EMPTY_LIST = "[]"

#: Deeper JSON than this is kept as its text: no reader needs it, and recursion has limits.
MAX_JSON_DEPTH = 64


@dataclass(slots=True)
class PreparedSpan:
    """A span ready for the writer: its column values, and what the writer needs to place it
    (owner ids, tags, its entries in the attribute index)."""

    values: tuple[Any, ...]  # PREPARED_COLUMNS order
    tags: list[str]
    owner_ids: tuple[str | None, str | None]
    #: the indexed-key set the two fields below were computed for (`use_indexed_keys`)
    indexed_for: frozenset[str]
    #: scalar values of indexed attribute keys, as canonical text (`link_value_text`)
    indexed_values: dict[str, str]
    #: its `span_attributes` rows (see `index_digests`)
    index_digests: list[int]

    @property
    def trace_id(self) -> str:
        return self.values[_TRACE_ID]

    @property
    def span_id(self) -> str:
        return self.values[_SPAN_ID]

    @property
    def parent_span_id(self) -> str | None:
        return self.values[_PARENT]

    @property
    def name(self) -> str:
        return self.values[_NAME]

    @property
    def start_time(self) -> int:
        return self.values[_START]

    @property
    def end_time(self) -> int | None:
        return self.values[_END]

    @property
    def status_code(self) -> str:
        return self.values[_STATUS]

    def state(self) -> tuple[Any, ...]:
        """The fields as a plain tuple: cheaper to pickle than the object
        (`otlp_decode_pool` sends prepared spans between processes); `PreparedSpan(*state)`."""
        return (
            self.values,
            self.tags,
            self.owner_ids,
            self.indexed_for,
            self.indexed_values,
            self.index_digests,
        )

    def use_indexed_keys(self, keys: Collection[str]) -> None:
        """Make the index entries those of `keys`, the writer's key set at insert time: a
        reward may have registered a key since the span was prepared. Read from the JSON
        text, since a span prepared in another process has no attribute dict."""
        if keys == self.indexed_for:
            return
        self.indexed_for = frozenset(keys)
        attributes = orjson.loads(self.values[_ATTRIBUTES])
        self.indexed_values = indexed_values(attributes, self.indexed_for)
        self.index_digests = index_digests(self.indexed_values)


@dataclass
class PreparedBatch:
    """What one ingest call hands the writer: its spans, the rewards that came with them
    (carried inside the spans, or given beside them), and what was not stored."""

    spans: list[PreparedSpan] = field(default_factory=list)
    rewards: list[RewardIn] = field(default_factory=list)
    report: PartialSuccess = field(default_factory=PartialSuccess)


def prepare_spans(
    records: Iterable[SpanRecord], prices: PriceTable, indexed_keys: frozenset[str]
) -> PreparedBatch:
    """Prepare every record and read the rewards it carries; `indexed_keys` is the caller's
    latest view of the key set."""
    shared = _Shared()
    batch = PreparedBatch()
    for record in records:
        batch.spans.append(_prepare(record, prices, indexed_keys, shared))
        _read_carried_rewards(record, batch)
    return batch


def _read_carried_rewards(record: SpanRecord, batch: PreparedBatch) -> None:
    """Rewards inside the span (DESIGN §2): a few dict lookups rule out nearly every span."""
    carries = might_carry_rewards(record.name, record.attributes)
    evaluated = bool(record.events) and any(
        event.get("name") == GENAI_EVENT for event in record.events
    )
    if not (carries or evaluated):
        return
    try:
        batch.rewards.extend(
            rewards_from_span(
                record, batch.report.note, check_attributes=carries, check_events=evaluated
            )
        )
    except Exception:  # a carrier we misread must not cost the spans of the whole batch
        logger.exception("reading rewards from span %s failed", record.span_id)
        batch.report.note(f"rewards on span {record.span_id} could not be read")


@dataclass(slots=True)
class _Shared:
    """What the spans of one `prepare_spans` call share."""

    #: id of a resource or scope dict -> (the dict, its JSON)
    json: dict[int, tuple[dict[str, Any], str]] = field(default_factory=dict)
    #: (key, canonical value) -> digest: a trace's spans repeat their conversation id
    digests: dict[tuple[str, str], int] = field(default_factory=dict)


def _shared_json(value: dict[str, Any], batch: _Shared) -> str:
    """JSON of a resource or scope, made once for every span that shares the dict (an OTLP
    export's spans share their resource's): one string object, so a batch pickled for another
    process carries it once (pickle memoises by identity). The cache holds the dict itself,
    so its id cannot be reused by another dict while the cache lives."""
    entry = batch.json.get(id(value))
    if entry is None:
        entry = batch.json[id(value)] = (value, dumps(value))
    return entry[1]


def _prepare(
    record: SpanRecord,
    prices: PriceTable,
    indexed_keys: frozenset[str],
    shared: _Shared,
) -> PreparedSpan:
    tags = tags_from_attributes(record)
    values = (
        record.trace_id,
        record.span_id,
        record.parent_span_id,
        clean_text(record.name[:1000]),
        record.kind,
        record.start_time,
        record.end_time,
        record.status_code,
        clean_text(record.status_message or ""),
        dumps(record.attributes),
        dumps(record.events),
        dumps(record.links),
        _shared_json(record.resource, shared),
        _shared_json(record.scope, shared),
        dumps(tags),
        *promoted_columns(record, prices),
    )
    found = indexed_values(record.attributes, indexed_keys)
    return PreparedSpan(
        values=values,
        tags=tags,
        owner_ids=ids_from_attributes(record),
        indexed_for=indexed_keys,
        indexed_values=found,
        index_digests=index_digests(found, shared.digests) if found else [],
    )


def indexed_values(attributes: dict[str, Any], keys: Iterable[str]) -> dict[str, str]:
    """Canonical text of each scalar attribute whose key is indexed (ids excluded: they are
    columns of their own)."""
    found: dict[str, str] = {}
    # Only the keys the span has: a span carries a few of the indexed keys, if any.
    for key in attributes.keys() & keys:
        if key in RESERVED_LINK_KEYS:
            continue
        value = attributes[key]
        if type(value) is str:  # the usual value, already canonical
            found[key] = value
        elif isinstance(value, (str, int, float)):  # a tuple checks faster than a union
            found[key] = link_value_text(value)  # bool is an int
    return found


def index_digests(
    values: dict[str, str], known: dict[tuple[str, str], int] | None = None
) -> list[int]:
    """The span's `span_attributes` rows: one digest per indexed (key, value), without
    repeats (Postgres COPYs these rows with no conflict handling). `known` caches digests
    across the spans of a batch."""
    if known is None:
        known = {}
    digests = []
    for pair in values.items():
        digest = known.get(pair)
        if digest is None:
            digest = known[pair] = attribute_digest(*pair)
        digests.append(digest)
    return list(dict.fromkeys(digests)) if len(digests) > 1 else digests


def attribute_digest(key: str, value: str) -> int:
    """`span_attributes.digest` of an attribute key and the canonical text of its value
    (`link_value_text`): the first 8 bytes of their BLAKE2b, as a signed 64-bit integer.

    Index entries of 8 bytes instead of the key and value text (~60 bytes) keep the index a
    quarter the size, so each commit rewrites fewer of its pages (schema, `span_attributes`).
    Lookups trust the digest: two different pairs share one by accident with odds of 1 in
    2**64, and crafting a collision gains nothing, since whoever can write a span can give it
    the very attribute a selector names."""
    data = b"\x00".join((clean_text(key).encode(), clean_text(value).encode()))
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big", signed=True)


def stored_tags(text: str | None) -> list[str]:
    """The tags in a `spans.tags` value (a JSON list of strings, as `_prepare` writes it)."""
    value = orjson.loads(text) if text else []
    return [tag for tag in value if isinstance(tag, str)] if isinstance(value, list) else []


def dumps(value: Any) -> str:
    """JSON text for a stored value. orjson is the fast path; what it refuses (ints beyond 64
    bits, lone surrogates, nesting deeper than 254) and NUL characters are made storable
    first (`storable`): a span is never lost over its attributes."""
    # Most spans have no events, links or tags: one "[]" object for all of them, which a
    # batch pickled for another process then carries once (pickle memoises by identity).
    if type(value) is list and not value:
        return _EMPTY_LIST
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):
        return orjson.dumps(storable(value), default=str).decode()
    # NUL becomes U+FFFD here as in every other stored text: Postgres's JSON functions refuse
    # an escaped NUL, so one such span would break attribute queries over all the others.
    if "\\u0000" in text:
        return orjson.dumps(storable(value), default=str).decode()
    return text


def storable(value: Any, depth: int = 0) -> Any:
    """A copy of `value` that every backend and JSON codec accepts: text cleaned of NUL and
    lone surrogates, integers beyond 64 bits as strings, nesting cut at MAX_JSON_DEPTH."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= MAX_JSON_DEPTH:
        return clean_text(repr(value)[:10_000])
    if isinstance(value, dict):
        return {clean_text(str(k)): storable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item, depth + 1) for item in value]
    return clean_text(str(value))
