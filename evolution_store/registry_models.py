"""Inputs of the prompt registry (DESIGN §7): prompts, their lifecycle, labels, experiments.

Validated here, as the REST bodies and the `EvolutionStore` methods take them; what needs the
database (versions, allowed moves against the stored status, one running A/B per agent) is
checked by the writes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from jinja2 import Environment, TemplateSyntaxError
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .models import Text

#: status -> the statuses `set_prompt_status` may move it to (production only by approval)
STATUS_MOVES = {
    "draft": ("experimental", "archived"),
    "experimental": ("candidate", "archived"),
    "candidate": ("archived",),
    "production": ("archived",),
    "archived": (),
}
#: statuses `approve_prompt` takes to production (an archived one: a rollback)
APPROVABLE = ("candidate", "archived")
#: labels the registry moves itself: `production` by approval, `latest` on every new version
RESERVED_LABELS = ("production", "latest")
#: how far the weights of an A/B experiment may sum away from 1
WEIGHT_TOLERANCE = 1e-6


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_template(content: str) -> str:
    """`content` if it is a valid Jinja2 template; else a ValueError naming the line."""
    try:
        Environment().parse(content)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno}: {exc.message}") from None
    return content


class PromptIn(_Strict):
    """Body of `POST /api/v1/prompts`: a new version of `agent`'s prompt. The same agent,
    content and parents again is the same prompt (idempotent)."""

    agent: Text = Field(min_length=1, max_length=200)
    content: str = Field(min_length=1, max_length=200_000)
    parent_ids: list[str] = Field(default_factory=list, max_length=100)
    status: Literal["draft", "experimental", "candidate"] = "draft"
    labels: list[str] = Field(default_factory=list, max_length=20)
    fitness: dict[str, Any] | None = None
    created_by: Literal["human", "apo", "pattern", "coach", "lab", "ppo"] = "human"
    note: Text | None = Field(default=None, max_length=10_000)

    _content = field_validator("content")(check_template)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: list[str]) -> list[str]:
        for label in value:
            _check_label(label)
            if label in RESERVED_LABELS:
                raise ValueError(f"the label {label!r} is moved by the registry itself")
        return list(dict.fromkeys(value))

    @field_validator("parent_ids")
    @classmethod
    def _parents(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


def _check_label(label: str) -> None:
    if not (0 < len(label) <= 100) or not all(c.isalnum() or c in "._:-" for c in label):
        raise ValueError("labels are 1-100 letters, digits or . _ : -")


class PromptStatusIn(_Strict):
    """A status move; `fitness` records the measurement that earned it (optional)."""

    status: Literal["draft", "experimental", "candidate", "production", "archived"]
    note: Text | None = Field(default=None, max_length=10_000)
    fitness: dict[str, Any] | None = None


class ApproveIn(_Strict):
    note: Text | None = Field(default=None, max_length=10_000)


class LabelIn(_Strict):
    prompt_id: str = Field(min_length=1, max_length=64)


class VariantIn(_Strict):
    prompt_id: str = Field(min_length=1, max_length=64)
    weight: float = Field(default=1.0, ge=0, le=1)


class ExperimentIn(_Strict):
    """Body of `POST /api/v1/experiments`.

    `ab`: `variants` with weights summing to 1; results come from the rewards of executions
    whose `config.prompt_id` is a variant (all rewards, or those named `metric`).
    `regression`: a `baseline` prompt, `target` and `control` example ids; results are posted
    by the optimiser (`/experiments/{id}/results`). Its variants are the baseline and whatever
    prompts results are posted for."""

    agent: Text = Field(min_length=1, max_length=200)
    kind: Literal["ab", "regression"] = "ab"
    variants: list[VariantIn] = Field(default_factory=list, max_length=20)
    metric: Text | None = Field(default=None, max_length=200)
    baseline: str | None = Field(default=None, min_length=1, max_length=64)
    target: list[str] = Field(default_factory=list, max_length=10_000)
    control: list[str] = Field(default_factory=list, max_length=10_000)

    @model_validator(mode="after")
    def _shape(self) -> ExperimentIn:
        ids = [variant.prompt_id for variant in self.variants]
        if len(set(ids)) != len(ids):
            raise ValueError("a prompt appears twice among the variants")
        if self.kind == "ab":
            if len(self.variants) < 2:
                raise ValueError("an A/B experiment needs at least two variants")
            total = math.fsum(variant.weight for variant in self.variants)
            if abs(total - 1.0) > WEIGHT_TOLERANCE:
                raise ValueError(f"variant weights must sum to 1 (they sum to {total:g})")
        elif self.baseline is None:
            raise ValueError("a regression experiment needs a baseline prompt")
        elif not (self.target or self.control):
            raise ValueError("a regression experiment needs target or control example ids")
        return self


class ExperimentStopIn(_Strict):
    winner: str | None = Field(default=None, min_length=1, max_length=64)
    approve: bool = False
    note: Text | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _approve_needs_winner(self) -> ExperimentStopIn:
        if self.approve and self.winner is None:
            raise ValueError("approve needs a winner")
        return self


class ResultIn(_Strict):
    prompt_id: str = Field(min_length=1, max_length=64)
    example_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=-1e15, le=1e15)
    tokens: float | None = Field(default=None, ge=0, le=1e15)
    latency_ms: float | None = Field(default=None, ge=0, le=1e15)


class ResultsIn(_Strict):
    results: list[ResultIn] = Field(min_length=1, max_length=10_000)
