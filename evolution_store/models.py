"""The shapes data takes on its way in: one span record for every ingest path, and the
pydantic models that REST bodies and the Python API share.

Every ingest route (REST, OTLP HTTP/gRPC, the in-process exporter) turns its input into
`SpanRecord`s and `RewardIn`s before handing them to the one writer, so validation rules live
here once.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

TRACE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
SPAN_ID_RE = re.compile(r"^[0-9a-f]{16}$")
ZERO_TRACE = "0" * 32
ZERO_SPAN = "0" * 16

SPAN_KINDS = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
TASK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
EXECUTION_STATUSES = ("running", "succeeded", "failed", "timeout")
REWARD_SOURCES = ("human", "llm", "code", "env")
RESERVED_LINK_KEYS = ("trace_id", "span_id")

#: What a task's status becomes when its latest execution ends in each state.
TASK_STATUS_FOR_EXECUTION = {
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "timeout": "failed",
}


def new_id() -> str:
    """A fresh 32-hex id for tasks, executions and rewards the caller did not name."""
    return uuid.uuid4().hex


def now_ns() -> int:
    return time.time_ns()


def normalize_trace_id(value: str, *, field_name: str = "trace_id") -> str:
    from .errors import InvalidInput

    text = value.strip().lower()
    if not TRACE_ID_RE.match(text) or text == ZERO_TRACE:
        raise InvalidInput(
            f"{field_name} must be 32 hex characters, not all zero", field=field_name
        )
    return text


def normalize_span_id(value: str, *, field_name: str = "span_id") -> str:
    from .errors import InvalidInput

    text = value.strip().lower()
    if not SPAN_ID_RE.match(text) or text == ZERO_SPAN:
        raise InvalidInput(
            f"{field_name} must be 16 hex characters, not all zero", field=field_name
        )
    return text


def link_value_text(value: Any) -> str:
    """The canonical text of an attribute or selector value, so `42`, `"42"`... compare exactly.

    Strings stay as they are; booleans become `true`/`false`; numbers their shortest repr.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def clean_text(value: str) -> str:
    """Text a column can hold on every backend: Postgres refuses NUL, and no driver can
    encode a lone surrogate. Both become U+FFFD; ordinary text passes through untouched."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    return value


@dataclass(slots=True)
class SpanRecord:
    """One decoded span, OTel-shaped, before the store assigns task, execution and sequence."""

    trace_id: str
    span_id: str
    name: str
    start_time: int
    end_time: int | None = None
    parent_span_id: str | None = None
    kind: str = "internal"
    status_code: str = "unset"
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope: dict[str, Any] = field(default_factory=dict)
    task_id: str | None = None
    execution_id: str | None = None
    tags: list[str] = field(default_factory=list)


#: A string field whose NULs and lone surrogates are replaced, so it fits every backend.
Text = Annotated[str, AfterValidator(clean_text)]

#: Hex ids, lower-cased; all-zero or wrong-length ids are a validation error.
TraceId = Annotated[str, AfterValidator(normalize_trace_id)]
SpanId = Annotated[str, AfterValidator(normalize_span_id)]

#: Reward values are scores: bounded so sums of squares in summaries cannot overflow.
MAX_REWARD_MAGNITUDE = 1e15


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _tag_list(value: Any) -> list[str]:
    """Tags as a list of distinct strings; one string alone is one tag.

    A mapping is refused rather than read as its keys, and a number or bool rather than let
    `list()` raise a TypeError that pydantic would not turn into a validation error.
    """
    if value is None:
        return []
    if isinstance(value, str):
        tags = [value]
    elif isinstance(value, Iterable) and not isinstance(value, Mapping | bytes | bytearray):
        tags = list(value)
    else:
        raise ValueError("tags must be a list of strings")
    for tag in tags:
        if not isinstance(tag, str) or not tag or len(tag) > 200:
            raise ValueError("tags must be non-empty strings of at most 200 characters")
    return list(dict.fromkeys(clean_text(tag) for tag in tags))


class TaskIn(_Strict):
    """Body of `POST /api/v1/tasks` and `EvolutionStore.create_task`. Idempotent on `id`."""

    id: Text | None = Field(default=None, min_length=1, max_length=200)
    name: Text = Field(default="task", max_length=500)
    input: Any = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)

    _tags = field_validator("tags", mode="before")(_tag_list)


class ExecutionIn(_Strict):
    """Body of `POST /api/v1/tasks/{id}/executions`: a new attempt (a retry if not the first)."""

    id: Text | None = Field(default=None, min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)


class StatusIn(_Strict):
    status: str

    @field_validator("status")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in TASK_STATUSES + EXECUTION_STATUSES:
            raise ValueError(f"unknown status {value!r}")
        return value


class TagsIn(_Strict):
    tags: list[str]

    _tags = field_validator("tags", mode="before")(_tag_list)


class SpanIn(BaseModel):
    """A span posted as plain JSON (any language). Ids are hex; missing ids are generated."""

    model_config = ConfigDict(extra="ignore")

    trace_id: TraceId | None = None
    span_id: SpanId | None = None
    parent_span_id: str | None = None
    name: Text = Field(min_length=1, max_length=1000)
    kind: str = "internal"
    start_time: int | None = Field(default=None, ge=0, description="Unix time in nanoseconds")
    end_time: int | None = Field(default=None, ge=0)
    status_code: str = "unset"
    status_message: Text = ""
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[dict[str, Any]] = Field(default_factory=list)
    links: list[dict[str, Any]] = Field(default_factory=list)
    resource: dict[str, Any] = Field(default_factory=dict)
    scope: dict[str, Any] = Field(default_factory=dict)
    task_id: Text | None = Field(default=None, max_length=200)
    execution_id: Text | None = Field(default=None, max_length=200)
    tags: list[str] = Field(default_factory=list)

    _tags = field_validator("tags", mode="before")(_tag_list)

    @field_validator("parent_span_id")
    @classmethod
    def _parent(cls, value: str | None) -> str | None:
        if value is None or value.strip() in ("", ZERO_SPAN):
            return None
        return normalize_span_id(value)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        text = value.lower().removeprefix("span_kind_")
        if text not in SPAN_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SPAN_KINDS)}")
        return text

    @field_validator("status_code")
    @classmethod
    def _status(cls, value: str) -> str:
        text = value.lower().removeprefix("status_code_")
        if text not in STATUS_CODES:
            raise ValueError(f"status_code must be one of {', '.join(STATUS_CODES)}")
        return text

    def to_record(self) -> SpanRecord:
        start = self.start_time if self.start_time is not None else now_ns()
        return SpanRecord(
            trace_id=self.trace_id or uuid.uuid4().hex,
            span_id=self.span_id or uuid.uuid4().hex[:16],
            parent_span_id=self.parent_span_id,
            name=self.name,
            kind=self.kind,
            start_time=start,
            end_time=self.end_time,
            status_code=self.status_code,
            status_message=self.status_message,
            attributes=self.attributes,
            events=self.events,
            links=self.links,
            resource=self.resource,
            scope=self.scope,
            task_id=self.task_id,
            execution_id=self.execution_id,
            tags=self.tags,
        )


class SpanBatchIn(BaseModel):
    spans: list[SpanIn] = Field(max_length=100_000)


class RewardIn(_Strict):
    """A reward and its target. Exactly one target kind: a span (`span_id`, optionally with
    `trace_id`), a trace, an execution, a task, or link selectors (`links`: every key must equal
    the span's attribute; `trace_id`/`span_id` keys mean the ids). The target need not exist
    yet: the reward is kept pending and linked when a matching span arrives.
    """

    id: Text | None = Field(default=None, min_length=1, max_length=200)
    name: Text = Field(default="reward", min_length=1, max_length=200)
    value: float | None = None
    dimensions: dict[str, float] = Field(default_factory=dict)
    feedback: Text | None = Field(default=None, max_length=100_000)
    source: Literal["human", "llm", "code", "env"] = "code"
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    span_id: SpanId | None = None
    trace_id: TraceId | None = None
    execution_id: Text | None = Field(default=None, max_length=200)
    task_id: Text | None = Field(default=None, max_length=200)
    links: dict[str, Any] = Field(default_factory=dict)

    _tags = field_validator("tags", mode="before")(_tag_list)

    @field_validator("links")
    @classmethod
    def _links(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            if not key or not isinstance(item, str | int | float | bool):
                raise ValueError("link selectors map attribute keys to strings, numbers or bools")
            if len(key) > 200 or len(link_value_text(item)) > 500:
                raise ValueError("link selector keys are at most 200 characters, values 500")
        value = {
            clean_text(key): clean_text(v) if isinstance(v, str) else v for key, v in value.items()
        }
        if "trace_id" in value:
            value["trace_id"] = normalize_trace_id(str(value["trace_id"]))
        if "span_id" in value:
            value["span_id"] = normalize_span_id(str(value["span_id"]))
        return value

    @model_validator(mode="after")
    def _value_and_target(self) -> RewardIn:
        if self.value is None and not self.dimensions:
            raise ValueError("a reward needs a value or dimensions")
        if self.value is None:
            self.value = next(iter(self.dimensions.values()))
        if not self.dimensions:
            self.dimensions = {self.name: self.value}
        for number in [self.value, *self.dimensions.values()]:
            if not abs(number) <= MAX_REWARD_MAGNITUDE:  # also false for NaN
                raise ValueError(f"reward values must be finite, within ±{MAX_REWARD_MAGNITUDE:g}")
        if self.links:
            # Ids given beside selectors narrow the selectors: fold them in as reserved keys.
            if self.span_id:
                self.links["span_id"] = self.span_id
            if self.trace_id:
                self.links["trace_id"] = self.trace_id
            if self.execution_id or self.task_id:
                raise ValueError(
                    "give one target: links, span_id, trace_id, execution_id or task_id"
                )
            return self
        chosen = [
            kind
            for kind, present in (
                ("span", self.span_id),
                ("trace", self.trace_id and not self.span_id),
                ("execution", self.execution_id),
                ("task", self.task_id),
            )
            if present
        ]
        if not chosen:
            raise ValueError(
                "a reward needs a target: span_id, trace_id, execution_id, task_id or links"
            )
        if len(chosen) > 1:
            raise ValueError("give one target: links, span_id, trace_id, execution_id or task_id")
        return self

    @property
    def target_kind(self) -> str:
        if self.links:
            return "links"
        if self.span_id:
            return "span"
        if self.trace_id:
            return "trace"
        if self.execution_id:
            return "execution"
        return "task"
