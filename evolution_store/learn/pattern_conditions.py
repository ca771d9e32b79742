"""The pattern learner's candidate conditions and contexts (`patterns`, steps 1 and 2): every
condition an execution can meet, as one boolean membership matrix, and the contexts they are
tested in."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from .pattern_settings import FEATURE_TYPES

if TYPE_CHECKING:
    from ..pattern_facts import ExecutionFacts


# -- 1. candidate conditions ----------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A condition an execution meets or not: its text and its machine form."""

    text: str  # "config.temperature <= 0.3", "tool search before answer", "model = gpt-4o"
    feature: dict[str, Any]  # {"type", "key", "op", "value"} (Pattern.feature)


@dataclass(frozen=True)
class Candidates:
    """The candidate conditions and who meets them: `members[i, j]` is whether execution j
    (in the order of the facts) meets `conditions[i]`."""

    conditions: list[Condition]
    members: np.ndarray  # bool, (len(conditions), len(facts))


def conditions(
    facts: Sequence[ExecutionFacts], *, min_support: int = 20, max_values: int = 20
) -> Candidates:
    """Every condition met by at least `min_support` of `facts` and missed by as many.

    - `agent = A`, `task = T`, `prompt = P`, `model = M`, `tag = X`, `error = E`;
    - `tool S used`, and `tool A before B` when some use of A comes before a later use of B
      (A != B; the order of `ExecutionFacts.tools`);
    - config keys (`prompt_id` aside: it is `prompt = P`; nested objects and lists skipped):
      a key whose values are all numbers with at least three distinct values is cut at the
      25th, 50th and 75th percentiles of its distinct values (observed values, numpy's
      "lower" method; repeats and the largest value dropped, so at most 3 cuts), each cut
      stated on its smaller side (`config.k <= t` or `config.k > t`; a tie takes `<=`). Any
      other key is categorical, `config.k = v` for its `max_values` most frequent values.
      An execution without the key meets none of the key's conditions.
    """
    n = len(facts)
    found: list[tuple[Condition, np.ndarray]] = []
    for kind, column in (
        ("agent", [f.agent for f in facts]),
        ("task", [f.task_name for f in facts]),
        ("prompt", [f.prompt_id for f in facts]),
    ):
        found.extend(_categorical(kind, None, column, min_support, max_values=n))
    for name, column in sorted(_config_columns(facts).items()):
        if name != "prompt_id":
            found.extend(_config_conditions(name, column, min_support, max_values))
    tools = [tuple(dict.fromkeys(f.tools)) for f in facts]  # distinct, in order of first use
    pairs_of: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for kind, lists in (
        ("model", [f.models for f in facts]),
        ("tag", [f.tags for f in facts]),
        ("error", [f.error_types for f in facts]),
        ("tool", tools),
        ("tool_pair", [_ordered_pairs(f.tools, pairs_of) for f in facts]),
    ):
        found.extend(_listed(kind, lists, min_support))
    found.sort(key=lambda item: (FEATURE_TYPES.index(item[0].feature["type"]), item[0].text))
    unique: dict[str, tuple[Condition, np.ndarray]] = {}
    for condition, mask in found:
        unique.setdefault(condition.text, (condition, mask))  # "1" and 1 read alike: keep one
    kept = list(unique.values())
    members = np.stack([mask for _, mask in kept]) if kept else np.zeros((0, n), dtype=bool)
    return Candidates([condition for condition, _ in kept], members)


def _config_columns(facts: Sequence[ExecutionFacts]) -> dict[str, Sequence[Any]]:
    """Each config key's value per execution (None where absent). Executions are grouped by
    their keys (in order), and each group's values transposed by one `zip`: reading 100,000
    configs key by key in Python is what would take the time."""
    configs = [f.config for f in facts]
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for row, keys in enumerate(map(tuple, configs)):
        groups[keys].append(row)
    if len(groups) == 1:  # the usual case: every config has the same keys in the same order
        [keys] = groups
        return dict(zip(keys, zip(*(tuple(c.values()) for c in configs), strict=True), strict=True))
    columns: dict[str, list[Any]] = {}
    for keys, rows in groups.items():
        transposed = zip(*(tuple(configs[row].values()) for row in rows), strict=True)
        for key, values in zip(keys, transposed, strict=True):
            column = columns.setdefault(key, [None] * len(configs))
            for row, value in zip(rows, values, strict=True):
                column[row] = value
    return dict(columns)


def _ordered_pairs(
    tools: tuple[str, ...], known: dict[tuple[str, ...], list[tuple[str, str]]]
) -> list[tuple[str, str]]:
    """(A, B) for each use of A before a later use of B (A != B); runs repeat the same tool
    sequences, so each sequence is worked out once (`known`)."""
    pairs = known.get(tools)
    if pairs is None:
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        for position, tool in enumerate(tools):
            first.setdefault(tool, position)
            last[tool] = position
        pairs = [
            (before, after)
            for before, start in first.items()
            for after, end in last.items()
            if start < end and before != after
        ]
        known[tools] = pairs
    return pairs


def _encode(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """An integer code per value, and the value of each code; the loops run in C (dict,
    map). True and 1 are equal in Python: where both kinds occur, values are keyed with
    their type."""
    kinds = set(map(type, values))
    tagged = bool in kinds and bool(kinds & {int, float})
    keys = list(zip(map(type, values), values, strict=True)) if tagged else values
    distinct = list(dict.fromkeys(keys))
    index = {key: code for code, key in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, keys), np.int64, len(keys))
    return codes, [key[1] for key in distinct] if tagged else distinct


def _supported(
    codes: np.ndarray, distinct: list[Any], n: int, min_support: int, most: int
) -> list[int]:
    """The codes of the `most` most frequent values (not None) met by at least `min_support`
    of `n` executions and missed by as many (ties: by text)."""
    counts = np.bincount(codes, minlength=len(distinct))
    supported = [
        (-int(counts[code]), _render(value), code)
        for code, value in enumerate(distinct)
        if value is not None and min_support <= counts[code] <= n - min_support
    ]
    return [code for _, _, code in sorted(supported)[:most]]


def _categorical(
    kind: str, key: str | None, column: Sequence[Any], min_support: int, max_values: int
) -> Iterator[tuple[Condition, np.ndarray]]:
    """`kind = value` for a one-value-per-execution feature (None: no value)."""
    codes, distinct = _encode(column)
    for code in _supported(codes, distinct, len(column), min_support, max_values):
        yield _condition(kind, key, distinct[code]), codes == code


def _listed(
    kind: str, lists: list[Sequence[Any]], min_support: int
) -> Iterator[tuple[Condition, np.ndarray]]:
    """A condition per value of a many-values-per-execution feature (tags, tools, ...)."""
    n = len(lists)
    owners = np.repeat(np.arange(n), np.fromiter(map(len, lists), np.int64, n))
    codes, distinct = _encode(list(chain.from_iterable(lists)))
    for code in _supported(codes, distinct, n, min_support, len(distinct)):
        yield _condition(kind, None, distinct[code]), _mask(n, owners[codes == code])


def _condition(kind: str, key: str | None, value: Any) -> Condition:
    if kind == "tool":
        return Condition(f"tool {value} used", _feature("tool", None, "used", value))
    if kind == "tool_pair":
        before, after = value
        text = f"tool {before} before {after}"
        return Condition(text, _feature("tool_pair", None, "before", [before, after]))
    if kind == "config":
        return Condition(f"config.{key} = {_render(value)}", _feature("config", key, "=", value))
    return Condition(f"{kind} = {value}", _feature(kind, None, "=", value))


def _feature(kind: str, key: str | None, op: str, value: Any) -> dict[str, Any]:
    return {"type": kind, "key": key, "op": op, "value": value}


def _render(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _mask(n: int, rows: Sequence[int] | np.ndarray) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    mask[np.asarray(rows, dtype=np.int64)] = True
    return mask


def _config_conditions(
    name: str, column: Sequence[Any], min_support: int, max_values: int
) -> Iterator[tuple[Condition, np.ndarray]]:
    kinds = set(map(type, column)) - {type(None)}
    if kinds & {dict, list}:  # nested values are not compared
        column = [None if isinstance(v, dict | list) else v for v in column]
        kinds -= {dict, list}
    if kinds and kinds <= {int, float}:  # bool is its own type: True stays categorical
        numbers = np.asarray(column, dtype=np.float64)  # None -> nan
        if np.unique(numbers[~np.isnan(numbers)]).size >= 3:
            yield from _threshold_conditions(name, column, numbers, min_support)
            return
    yield from _categorical("config", name, column, min_support, max_values)


def _threshold_conditions(
    name: str, column: Sequence[Any], numbers: np.ndarray, min_support: int
) -> Iterator[tuple[Condition, np.ndarray]]:
    n = numbers.size
    distinct = np.unique(numbers[~np.isnan(numbers)])
    cuts = np.unique(np.quantile(distinct, [0.25, 0.5, 0.75], method="lower"))
    for cut in cuts[cuts < distinct[-1]]:
        at_or_below = numbers <= cut  # nan compares False: no key, no condition
        above = numbers > cut
        op, mask = ("<=", at_or_below) if at_or_below.sum() <= above.sum() else (">", above)
        if min_support <= mask.sum() <= n - min_support:
            value = column[int(np.argmax(numbers == cut))]  # as the config wrote it: 3 not 3.0
            text = f"config.{name} {op} {_render(value)}"
            yield Condition(text, _feature("config", name, op, value)), mask


# -- 2. contexts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """Where a pattern holds: a set of executions named by agent and task name. `agent` is
    the agent all its executions share (None when they do not share one)."""

    agent: str | None
    task_name: str | None
    rows: np.ndarray  # indices into the facts, ascending

    def as_dict(self) -> dict[str, str | None]:
        return {"agent": self.agent, "task_name": self.task_name}


def contexts(facts: Sequence[ExecutionFacts], *, min_support: int = 20) -> list[Context]:
    """Overall, then each agent, then each task name: those with at least 2 x `min_support`
    executions (fewer cannot have support on both sides). A context with the same executions
    as an earlier one is left out (one agent's mining: overall is that agent's context)."""
    by_agent: dict[str, list[int]] = defaultdict(list)
    by_task: dict[str, list[int]] = defaultdict(list)
    for row, fact in enumerate(facts):
        if fact.agent is not None:
            by_agent[fact.agent].append(row)
        by_task[fact.task_name].append(row)
    groups: list[tuple[str | None, list[int] | range]] = [(None, range(len(facts)))]
    groups += [(None, by_agent[agent]) for agent in sorted(by_agent)]
    groups += [(task, by_task[task]) for task in sorted(by_task)]
    found: list[Context] = []
    seen: set[bytes] = set()
    for task_name, group in groups:
        rows = np.asarray(group, dtype=np.int64)
        if rows.size < 2 * min_support or rows.tobytes() in seen:
            continue
        seen.add(rows.tobytes())
        agents = {facts[row].agent for row in rows}
        agent = agents.pop() if len(agents) == 1 else None
        found.append(Context(agent, task_name, rows))
    return found
