"""What the coach's LLM reads, and how its answer is read back (issue 23).

The LLM sees a trimmed state: the last generations only, the full current config, the last
applications with the tracked metric before and after each. It answers with JSON
`{"assessment": str, "recommendations": [{"parameter", "value", "reason"}]}`. Models wrap
JSON in prose, code fences or `<think>` blocks, so the reply is searched for the object
rather than parsed whole; every recommendation is then checked against the bounds the user
declared, and anything unknown or out of bounds is refused with a reason, never applied.

Prompts are Jinja2 templates: packaged files `coach_prompts/<version>.md`, or a registry
prompt of agent `evolution.coach` (`prompt_version="registry:<label>"`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from jinja2.sandbox import SandboxedEnvironment

__all__ = [
    "REGISTRY_AGENT",
    "REGISTRY_PREFIX",
    "Bound",
    "Generation",
    "Recommendation",
    "Refusal",
    "check",
    "describe_application",
    "packaged_template",
    "packaged_versions",
    "parse_bounds",
    "parse_reply",
    "render",
    "trim_lines",
]

#: the registry agent whose prompts a `registry:<label>` version names
REGISTRY_AGENT = "evolution.coach"
REGISTRY_PREFIX = "registry:"

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Generation:
    """One observed generation as the prompt shows it (log lines already trimmed)."""

    generation: int
    metrics: dict[str, Any]
    log_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class Recommendation:
    """A change the LLM asked for, already checked against its bounds."""

    parameter: str
    value: Any
    reason: str = ""
    generation: int = 0  # the latest generation the LLM had seen


@dataclass(frozen=True)
class Refusal:
    """A recommendation that was not applied, and why."""

    parameter: str
    value: Any
    why: str
    generation: int = 0


@dataclass(frozen=True)
class Bound:
    """What a parameter may be: a number in [low, high] (an integer when both ends are
    integers), or one of `choices`."""

    name: str
    low: float | None = None
    high: float | None = None
    integer: bool = False
    choices: tuple[Any, ...] = field(default=())

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(json.dumps(c, default=str) for c in self.choices)
        kind = "integer" if self.integer else "number"
        return f"{kind} from {_number(self.low)} to {_number(self.high)}"

    def check(self, value: Any) -> tuple[Any, str | None]:
        """(the value to apply, None) or (value, why it is refused)."""
        if self.choices:
            return (value, None) if value in self.choices else (value, "not one of the choices")
        number = _as_number(value)
        if number is None:
            return value, "not a number"
        assert self.low is not None and self.high is not None
        if not self.low <= number <= self.high:
            return value, f"outside [{_number(self.low)}, {_number(self.high)}]"
        if self.integer:
            if number != int(number):
                return value, "not an integer"
            return int(number), None
        return number, None


def parse_bounds(parameters: Mapping[str, Any]) -> dict[str, Bound]:
    """`{name: (low, high)}` ranges (inclusive; integers when both ends are ints) or
    `{name: [choice, ...]}` (a list, set or frozenset of allowed values). `ValueError` else."""
    if not isinstance(parameters, Mapping) or not parameters:
        raise ValueError("parameters must be a non-empty dict of {name: (low, high)}")
    bounds = {}
    for name, spec in parameters.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"parameter names must be non-empty strings, not {name!r}")
        if isinstance(spec, list | set | frozenset):
            if not spec:
                raise ValueError(f"parameter {name!r} has no choices")
            bounds[name] = Bound(name, choices=tuple(spec))
            continue
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"parameter {name!r}: give (low, high) or a list of choices")
        low, high = (_as_number(end) if not isinstance(end, str) else None for end in spec)
        if low is None or high is None or low > high:
            raise ValueError(f"parameter {name!r}: bounds {spec!r} are not two numbers low <= high")
        integer = all(isinstance(end, int) and not isinstance(end, bool) for end in spec)
        bounds[name] = Bound(name, low=low, high=high, integer=integer)
    return bounds


def check(
    raw: Sequence[Any], bounds: Mapping[str, Bound], generation: int
) -> tuple[list[Recommendation], list[Refusal]]:
    """Split the reply's recommendations into those to apply and those refused. A later
    recommendation of the same parameter wins."""
    accepted: dict[str, Recommendation] = {}
    refused: list[Refusal] = []
    for item in raw:
        if not isinstance(item, Mapping):
            refused.append(Refusal("", item, "not an object", generation))
            continue
        name = item.get("parameter", item.get("name"))
        value = item.get("value")
        reason = str(item.get("reason") or "")
        bound = bounds.get(name) if isinstance(name, str) else None
        if bound is None:
            refused.append(Refusal(str(name), value, "unknown parameter", generation))
            continue
        value, why = bound.check(value)
        if why is not None:
            refused.append(Refusal(name, value, why, generation))
            continue
        accepted[name] = Recommendation(name, value, reason, generation)
    return list(accepted.values()), refused


def parse_reply(text: str) -> tuple[str, list[Any]]:
    """(assessment, raw recommendations) from the reply. The first JSON object holding
    `recommendations` or `assessment` wins, else the first object; `{param: value}` as the
    recommendations is read as a list. `ValueError` when there is no JSON object."""
    text = _THINK.sub("", text or "")
    found = _objects(text)
    if not found:
        raise ValueError(f"the reply holds no JSON object: {_snippet(text)}")
    data = next((o for o in found if "recommendations" in o or "assessment" in o), found[0])
    recommendations = data.get("recommendations") or []
    if isinstance(recommendations, Mapping):
        recommendations = [{"parameter": k, "value": v} for k, v in recommendations.items()]
    if not isinstance(recommendations, list):
        recommendations = [recommendations]
    return str(data.get("assessment") or ""), recommendations


def _objects(text: str) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    found = []
    index = text.find("{")
    while index != -1:
        try:
            value, end = decoder.raw_decode(text, index)
        except ValueError:
            index = text.find("{", index + 1)
            continue
        if isinstance(value, dict):
            found.append(value)
        index = text.find("{", end)
    return found


# -- the prompt ---------------------------------------------------------------------------------


def packaged_versions() -> list[str]:
    """The versions shipped with the package (`v1`, …)."""
    folder = resources.files("evolution_store.learn") / "coach_prompts"
    return sorted(p.name[:-3] for p in folder.iterdir() if p.name.endswith(".md"))


def packaged_template(version: str) -> str:
    if version not in packaged_versions():
        raise ValueError(
            f"no coach prompt {version!r}; shipped: {packaged_versions()}, "
            f"or {REGISTRY_PREFIX}<label> for a registry prompt of agent {REGISTRY_AGENT}"
        )
    folder = resources.files("evolution_store.learn") / "coach_prompts"
    return (folder / f"{version}.md").read_text(encoding="utf-8")


def render(
    template: str,
    *,
    generations: Sequence[Generation],
    config: Mapping[str, Any],
    applications: Sequence[str],
    bounds: Mapping[str, Bound],
    interval: int,
    max_log_generations: int,
    max_log_lines: int,
    metric: str,
    goal: str,
) -> str:
    """The prompt text. Templates get plain values and ready-made text (`config_json`,
    `g.metrics_text`, `a.text`), so a registry template need not format numbers itself."""
    env = SandboxedEnvironment(keep_trailing_newline=True)
    parameters = [
        {"name": b.name, "allowed": b.describe(), "current": _json(config.get(b.name))}
        for b in bounds.values()
    ]
    shown = [
        {
            "generation": g.generation,
            "metrics": g.metrics,
            # exact values (JSON's shortest round-trip form): the LLM compares them across
            # generations, and a reader checks them against what the loop reported
            "metrics_text": ", ".join(f"{k}={_json(v)}" for k, v in g.metrics.items()),
            "log_lines": list(g.log_lines),
        }
        for g in generations
    ]
    return env.from_string(template).render(
        generations=shown,
        current_generation=generations[-1].generation if generations else None,
        config=config,
        config_json=json.dumps(config, indent=2, default=str),
        applications=[{"text": text} for text in applications],
        parameters=parameters,
        interval=interval,
        max_log_generations=max_log_generations,
        max_log_lines=max_log_lines,
        metric=metric,
        goal=goal,
    )


def describe_application(
    generation: int | None,
    changes: Mapping[str, tuple[Any, Any]],
    reason: str,
    effect: Mapping[str, Any],
    metric: str,
) -> str:
    """ "applied at generation X: a 1 → 2, …" and what the tracked metric did around it
    (`effect`: the coach's `before`/`after` means and their `n_before`/`n_after`)."""
    listed = ", ".join(f"{p} {_json(old)} → {_json(new)}" for p, (old, new) in changes.items())
    text = f"applied at generation {generation}: {listed}"
    if reason:
        text += f" ({reason})"
    if effect["before"] is None or effect["after"] is None:
        return text + f"; too early to judge its effect on {metric}"
    return (
        text + f"; {metric} mean {effect['before']:.6g} over the {effect['n_before']} generations "
        f"before, {effect['after']:.6g} over the {effect['n_after']} after"
    )


def trim_lines(lines: Sequence[Any], max_lines: int, max_chars: int) -> tuple[str, ...]:
    """The last `max_lines` lines (of a list, or of one multi-line string), each cut to
    `max_chars` (with an ellipsis)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    kept = list(lines)[-max_lines:] if max_lines > 0 else []
    return tuple(_cut(str(line).rstrip("\n"), max_chars) for line in kept)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _snippet(text: str) -> str:
    return _cut(" ".join(text.split()), 200)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    return None


def _number(value: float | None) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
