"""Pattern learner: the conditions that go with success, failure or cheaper runs, each with
evidence a person can check (issue 20, DESIGN §7).

One run, top to bottom (`find_patterns`; `mine_patterns` adds the store at both ends):

1. **Candidates** (`conditions`): every condition an execution can meet — agent, task name,
   prompt id, model, each config key, tool used, ordered tool pair, tag, error type — kept when
   at least `min_support` executions meet it and `min_support` do not. Membership is one
   boolean matrix (conditions x executions), so no later step loops over executions.
2. **Contexts** (`contexts`): overall, each agent, each task name.
3. **Tests**: in each context, every condition with `min_support` executions on both sides is
   tested against the outcome (Fisher's exact test for a 0/1 outcome, else Mann–Whitney U,
   with Welch's t beside it) and against tokens, latency and cost (Mann–Whitney U). A
   condition picking the same executions of the context as an earlier one, or exactly the
   others, is the same test: it is done once and listed in `evidence.equivalent`. All
   conditions of a context are tested at once with NumPy, from one product of the
   membership with the context's columns: Mann–Whitney by `stats.mann_whitney_from_ranks`
   (`mannwhitneyu`'s own computation, from one ranking of the context), Fisher first by a
   lower bound of its p (`stats.fisher_screen`).
4. **Benjamini–Hochberg** over every test of the run; a test with q <= `fdr` is a finding.
   Fisher tests BH could keep are run with scipy and BH done again (`_adjust`), so every
   reported q is what exact p-values give. The evidence of each pattern is computed with
   scipy by name (`fisher_exact`, `mannwhitneyu`, `ttest_ind`, Wilson intervals).
5. **Kinds**: a finding on the outcome is a *success* (higher with the condition) or a
   *failure* (lower); with Mann–Whitney, "higher" needs the ranks (U against n1 n2 / 2) and
   the means to agree, else the finding is not reported. A condition whose outcome is not a
   finding, whose outcome is not lower at p < `fdr` (unadjusted: a cheaper run must not be a
   worse one), and whose tokens, latency or cost is a finding in the lower direction (ranks
   and means) is an *optimization*: the metric with the lowest q is reported, the outcome
   test beside it. When the tested condition costs more, its complement is reported.
6. **Agent check**: in a context that mixes agents, a condition can look strong only because
   it is common in a better (or worse) agent. Such a finding (the `agent = A` conditions
   aside) is kept only when the effect holds within agents, whichever agent is left out: at
   least two agents have `min_support` on both sides, and for every agent k, Stouffer's
   combination (`scipy.stats.combine_pvalues`, weights sqrt(n_with n_without / n)) of the
   one-sided within-agent p-values of the *other* agents is below `fdr`. Otherwise it is
   dropped there; where it is real, the agent's own context reports it.

The run is deterministic (no randomness): the same facts give the same patterns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as scipy_stats

from ..errors import InvalidInput
from ..pattern_writes import pattern_id
from .stats import (
    HypothesisResult,
    benjamini_hochberg,
    fisher_screen,
    fisher_test,
    mann_whitney_from_ranks,
    mann_whitney_test,
    mean_interval,
    newcombe_difference_ci,
    welch_test,
    wilson_interval,
)

if TYPE_CHECKING:
    from ..pattern_facts import ExecutionFacts
    from ..store import EvolutionStore

__all__ = [
    "Candidates",
    "Condition",
    "Context",
    "MinerSettings",
    "MiningResult",
    "conditions",
    "contexts",
    "find_patterns",
    "mine_patterns",
    "outcome_values",
]

logger = logging.getLogger(__name__)

#: what a run can be cheaper in: an `ExecutionFacts` field each
METRICS = ("tokens", "latency_ms", "cost")
#: candidate order; of conditions picking the same executions in a context the first is tested
FEATURE_TYPES = ("agent", "task", "prompt", "model", "config", "tool", "tool_pair", "tag", "error")
#: statuses counted as success / failure with `outcome="status"` (running ones are left out)
SUCCESS_STATUSES = frozenset({"succeeded"})
FAILURE_STATUSES = frozenset({"failed", "timeout"})
#: cells of a membership block (conditions x executions) converted to numbers at a time
_BLOCK_CELLS = 1_000_000
_TEST_NAMES = {"fisher_exact": "Fisher", "mann_whitney_u": "Mann–Whitney"}


@dataclass(frozen=True)
class MinerSettings:
    """Every knob of a mining run, with its default (`find_patterns`)."""

    outcome: str = "reward"  # "reward": mean linked reward; "status": succeeded vs failed/timeout
    min_support: int = 20  # executions needed on each side of a condition, in every test
    fdr: float = 0.05  # Benjamini–Hochberg level over every test of the run
    max_values: int = 20  # most frequent values of a categorical config key tested
    sample_spans: int = 5  # span ids of each side shown in the evidence
    agent_check: bool = True  # drop findings of mixed-agent contexts that agent explains

    def __post_init__(self) -> None:
        if self.outcome not in ("reward", "status"):
            raise InvalidInput('outcome must be "reward" or "status"', field="outcome")
        if self.min_support < 1:
            raise InvalidInput("min_support must be at least 1", field="min_support")
        if not 0.0 < self.fdr < 1.0:
            raise InvalidInput("fdr must be between 0 and 1", field="fdr")


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


# -- 3. outcome and metric values -----------------------------------------------------------------


def outcome_values(facts: Sequence[ExecutionFacts], outcome: str) -> tuple[np.ndarray, bool]:
    """Each execution's outcome (nan when it has none) and whether the outcome is 0/1.
    "status": 1 succeeded, 0 failed or timed out, nan still running. "reward": the mean
    linked reward; 0/1 when every reward there is is 0 or 1."""
    if outcome == "status":
        values = [
            1.0 if f.status in SUCCESS_STATUSES else 0.0 if f.status in FAILURE_STATUSES else np.nan
            for f in facts
        ]
        return np.asarray(values, dtype=np.float64), True
    if outcome != "reward":
        raise InvalidInput('outcome must be "reward" or "status"', field="outcome")
    values = np.asarray([_number(f.reward) for f in facts], dtype=np.float64)
    known = values[~np.isnan(values)]
    return values, bool(known.size) and bool(np.isin(known, (0.0, 1.0)).all())


def _number(value: float | None) -> float:
    return np.nan if value is None else float(value)


@dataclass(frozen=True)
class _Data:
    facts: Sequence[ExecutionFacts]
    values: dict[str, np.ndarray]  # "outcome" and each metric: float, nan when unknown
    binary: bool  # the outcome is 0/1: Fisher
    agent_codes: np.ndarray  # int per execution: its agent's, -1 without one

    @classmethod
    def of(cls, facts: Sequence[ExecutionFacts], outcome: str) -> _Data:
        values, binary = outcome_values(facts, outcome)
        columns = {"outcome": values}
        for metric in METRICS:
            columns[metric] = np.asarray([_number(getattr(f, metric)) for f in facts])
        codes: dict[str | None, int] = {None: -1}
        agents = [codes.setdefault(f.agent, len(codes) - 1) for f in facts]
        return cls(facts, columns, binary, np.asarray(agents, dtype=np.int64))

    def uses_fisher(self, variable: str) -> bool:
        return variable == "outcome" and self.binary


# -- 4. tests -------------------------------------------------------------------------------------


@dataclass
class _Family:
    """The tests of one variable in one context, one entry per condition tested."""

    context: int  # index of the context
    variable: str  # "outcome" or a metric
    fisher: bool  # Fisher's exact test, else Mann–Whitney U
    rows: np.ndarray  # the context's executions with a value of the variable
    conditions: np.ndarray  # candidate index per test
    n_with: np.ndarray
    observed: np.ndarray  # the side the data fall on: +1 higher with, -1 lower, 0 neither
    direction: np.ndarray  # `observed` when ranks and means agree (Mann–Whitney), else 0
    tail: np.ndarray  # one-sided p on the observed side (the agent check combines these)
    p: np.ndarray  # two-sided: Fisher's screen bound until scipy runs it (`exact`)
    ranks: np.ndarray | None  # Mann–Whitney: the average ranks of the values over `rows`
    exact: dict[int, HypothesisResult] = field(default_factory=dict)
    q: np.ndarray | None = None


@dataclass(frozen=True)
class _Groups:
    """Conditions of one context that are the same test (`_distinct_conditions`)."""

    kept: np.ndarray  # the first of each group: the one tested
    equivalent: dict[int, list[str]]  # kept -> texts of the others ("not (...)": complement)
    complement: dict[int, int]  # kept -> its first complement
    tested_as: dict[int, tuple[int, bool]]  # any candidate -> (kept, whether its complement)


def _test_context(
    index: int, context: Context, candidates: Candidates, data: _Data, settings: MinerSettings
) -> tuple[list[_Family], _Groups]:
    """The families of one context, and its groups of conditions that are the same test."""
    support = settings.min_support
    members = candidates.members
    # The overall context is every execution, in order: no copy of the membership.
    whole = context.rows.size == members.shape[1]
    inside = members if whole else members[:, context.rows]
    n_with = inside.sum(axis=1)
    possible = np.flatnonzero((n_with >= support) & (context.rows.size - n_with >= support))
    block = inside[possible]
    groups = _distinct_conditions(block, possible, candidates.conditions)
    block = block[np.searchsorted(possible, groups.kept)]
    variables = [
        variable
        for name in ("outcome", *METRICS)
        if (variable := _Variable.of(name, context, data, support)) is not None
    ]
    if not variables or groups.kept.size == 0:
        return [], groups
    # One pass over the membership for every variable: their columns side by side.
    sums = _block_sums(block, np.column_stack([c for v in variables for c in v.columns]))
    families = []
    start = 0
    for variable in variables:
        width = len(variable.columns)
        part = sums[:, start : start + width]
        start += width
        family = _test_family(index, variable, groups.kept, part, candidates, settings)
        if family is not None:
            families.append(family)
    return families, groups


def _distinct_conditions(
    inside: np.ndarray, indices: np.ndarray, conditions_: list[Condition]
) -> _Groups:
    """Group `indices` (membership rows `inside`) that pick the same executions or exactly
    the others; the first of each group is tested."""
    first_of: dict[bytes, int] = {}
    kept: list[int] = []
    equivalent: dict[int, list[str]] = defaultdict(list)
    complement: dict[int, int] = {}
    tested_as: dict[int, tuple[int, bool]] = {}
    packed = np.packbits(inside, axis=1)
    packed_not = np.invert(packed)
    if inside.shape[1] % 8:  # packbits pads the last byte with zeros; so must the complement
        packed_not[:, -1] &= np.uint8((0xFF << (8 - inside.shape[1] % 8)) & 0xFF)
    for local, candidate in enumerate(indices.tolist()):
        same = first_of.get(packed[local].tobytes())
        opposite = first_of.get(packed_not[local].tobytes()) if same is None else None
        if same is not None:
            equivalent[same].append(conditions_[candidate].text)
            tested_as[candidate] = (same, False)
        elif opposite is not None:
            equivalent[opposite].append(f"not ({conditions_[candidate].text})")
            complement.setdefault(opposite, candidate)
            tested_as[candidate] = (opposite, True)
        else:
            first_of[packed[local].tobytes()] = candidate
            kept.append(candidate)
            tested_as[candidate] = (candidate, False)
    return _Groups(np.asarray(kept, dtype=np.int64), equivalent, complement, tested_as)


@dataclass(frozen=True)
class _Variable:
    """One variable of one context, as columns over the context's executions (zero where
    the variable is unknown), so that a product with the membership gives every
    condition's counts and sums at once."""

    name: str
    fisher: bool
    rows: np.ndarray  # the context's executions with a value
    values: np.ndarray  # their values
    columns: tuple[np.ndarray, ...]  # known (0/1), then successes or (ranks, values)
    tie_term: float  # sum of t^3 - t over groups of tied values (Mann–Whitney)
    ranks: np.ndarray | None  # the values' average ranks (Mann–Whitney)

    @classmethod
    def of(cls, name: str, context: Context, data: _Data, support: int) -> _Variable | None:
        column = data.values[name][context.rows]
        known = ~np.isnan(column)
        if known.sum() < 2 * support:
            return None
        values = column[known]
        if data.uses_fisher(name):
            columns = (known.astype(np.float64), np.where(known, column == 1.0, 0.0))
            return cls(name, True, context.rows[known], values, columns, 0.0, None)
        # One sort gives the average ranks and the tie groups (rankdata would sort again).
        _, group, ties = np.unique(values, return_inverse=True, return_counts=True)
        ranks = (np.cumsum(ties) - (ties - 1) / 2)[group]
        padded = np.zeros(column.size)
        padded[known] = ranks
        tie_term = float(np.sum(ties.astype(np.float64) ** 3 - ties))
        columns = (known.astype(np.float64), padded, np.where(known, column, 0.0))
        return cls(name, False, context.rows[known], values, columns, tie_term, ranks)


def _test_family(
    index: int,
    variable: _Variable,
    candidate_rows: np.ndarray,
    sums: np.ndarray,
    candidates: Candidates,
    settings: MinerSettings,
) -> _Family | None:
    """Test every condition with `min_support` on both sides among the executions with a
    value of `variable`, from `sums` (the membership times the variable's columns): one
    vectorised step for all of them (Fisher: its lower bound until `_adjust`)."""
    support = settings.min_support
    n = variable.rows.size
    n_with = np.rint(sums[:, 0]).astype(np.int64)
    testable = (n_with >= support) & (n - n_with >= support)
    if not testable.any():
        return None
    sums, n_with = sums[testable], n_with[testable]
    n_without = n - n_with
    if variable.fisher:
        k_with = np.rint(sums[:, 1]).astype(np.int64)
        total = int(variable.values.sum())
        tail = fisher_screen(k_with, n_with, total, n)
        observed = np.sign(k_with / n_with - (total - k_with) / n_without)
        direction, p = observed, tail.copy()
    else:
        p = np.nan_to_num(
            mann_whitney_from_ranks(sums[:, 1], n_with, n, variable.tie_term), nan=1.0
        )
        tail = p / 2
        u_with = sums[:, 1] - n_with * (n_with + 1) / 2
        observed = np.sign(u_with - n_with * n_without / 2)
        mean_difference = sums[:, 2] / n_with - (variable.values.sum() - sums[:, 2]) / n_without
        # A clear direction needs the ranks and the means to agree: a condition that raises
        # the typical run but lowers the mean (or the reverse) is not called either way.
        direction = np.where(observed == np.sign(mean_difference), observed, 0.0)
    conditions_ = candidate_rows[testable]
    family = _Family(
        context=index,
        variable=variable.name,
        fisher=variable.fisher,
        rows=variable.rows,
        conditions=conditions_,
        n_with=n_with,
        observed=observed,
        direction=direction,
        tail=tail,
        p=p,
        ranks=variable.ranks,
    )
    # scipy's exact Mann–Whitney (8 or fewer a side) is not the normal approximation: run it.
    if not variable.fisher:
        for j in np.flatnonzero(np.minimum(n_with, n_without) <= 8).tolist():
            mask = candidates.members[conditions_[j], variable.rows]
            _run_scipy(family, j, variable.values, mask)
    return family


def _block_sums(inside: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """inside (conditions x executions, bool) @ columns, a block of conditions at a time so
    the converted copy of the membership stays small."""
    out = np.empty((inside.shape[0], columns.shape[1]))
    step = max(1, _BLOCK_CELLS // max(1, inside.shape[1]))
    for start in range(0, inside.shape[0], step):
        # uint8 @ float64: numpy converts as it goes, cheaper than a float copy of the block
        out[start : start + step] = inside[start : start + step].view(np.uint8) @ columns
    return out


def _run_scipy(family: _Family, j: int, values: np.ndarray, mask: np.ndarray) -> None:
    result = _scipy_test(family.fisher, values, mask)
    family.exact[j] = result
    family.p[j] = result.p_value


def _adjust(families: list[_Family], candidates: Candidates, data: _Data, fdr: float) -> int:
    """Benjamini–Hochberg over every test of the run (sets each family's q); returns the
    number of tests.

    Mann–Whitney's p is final (scipy's formula). Fisher's screen p is a lower bound, and
    BH's q only grows with any p: a test above fdr with the bound is above fdr with the
    exact p too. So the Fisher tests at or below fdr are run with scipy and q computed
    again, until every q <= fdr rests on exact p-values. Only a test with q <= fdr can decide
    another's q <= fdr, so those q are what exact p-values everywhere give, at the cost of
    one scipy call per such test rather than per test."""
    while True:
        p = np.concatenate([family.p for family in families]) if families else np.zeros(0)
        q = benjamini_hochberg(p)
        start, pending = 0, 0
        for family in families:
            family.q = q[start : start + family.p.size]
            start += family.p.size
            if not family.fisher:
                continue
            below = np.flatnonzero(family.q <= fdr).tolist()
            missing = [j for j in below if j not in family.exact]
            values = data.values[family.variable][family.rows]
            for j in missing:
                _run_scipy(family, j, values, candidates.members[family.conditions[j], family.rows])
            pending += len(missing)
        if not pending:
            return int(p.size)


def _scipy_test(
    fisher: bool, values: np.ndarray, mask: np.ndarray, alternative: str = "two-sided"
) -> HypothesisResult:
    with_, without = values[mask], values[~mask]
    if fisher:
        return fisher_test(
            int((with_ == 1.0).sum()),
            with_.size,
            int((without == 1.0).sum()),
            without.size,
            alternative=alternative,
        )
    return mann_whitney_test(with_, without, alternative=alternative)


# -- 5. findings: kinds and the agent check -------------------------------------------------------


@dataclass(frozen=True)
class _Ref:
    """One test of a family, read for its condition or, with `complement`, for the
    condition that picks exactly the other executions of the context (the same test seen
    from the other side: same p and q, opposite direction)."""

    family: _Family
    j: int
    complement: int | None = None

    @property
    def q(self) -> float:
        assert self.family.q is not None
        return float(self.family.q[self.j])

    @property
    def p(self) -> float:
        return float(self.family.p[self.j])

    @property
    def direction(self) -> float:
        direction = float(self.family.direction[self.j])
        return -direction if self.complement is not None else direction

    @property
    def condition(self) -> int:
        return (
            self.complement if self.complement is not None else int(self.family.conditions[self.j])
        )

    @property
    def n_with(self) -> int:
        n_with = int(self.family.n_with[self.j])
        return self.family.rows.size - n_with if self.complement is not None else n_with

    def flipped(self, complement: int | None) -> _Ref:
        return _Ref(self.family, self.j, complement)


@dataclass(frozen=True)
class _Finding:
    kind: str
    primary: _Ref  # the test the pattern reports
    outcome: _Ref | None  # an optimization's outcome test


def _findings(
    families: list[_Family], complements: list[dict[int, int]], fdr: float
) -> list[_Finding]:
    """Success and failure findings on the outcome, then optimizations (module docstring).
    Of a condition and its complement only the first is tested; an optimization found as
    "costs more" on the first is reported on the complement."""
    outcome_tests: dict[tuple[int, int], _Ref] = {}
    found: dict[tuple[int, int], _Finding] = {}
    cheaper: dict[tuple[int, int, int | None], list[_Ref]] = defaultdict(list)
    for family in families:
        assert family.q is not None
        if family.variable == "outcome":
            for j, condition in enumerate(family.conditions.tolist()):
                outcome_tests[(family.context, condition)] = _Ref(family, j)
        for j in np.flatnonzero(family.q <= fdr).tolist():
            ref = _Ref(family, j)
            key = (family.context, ref.condition)
            if family.variable == "outcome":
                if ref.direction != 0:
                    found[key] = _Finding("success" if ref.direction > 0 else "failure", ref, None)
                continue
            complement = complements[family.context].get(ref.condition)
            if ref.direction > 0 and complement is not None:
                ref = ref.flipped(complement)
            if ref.direction < 0:
                cheaper[(*key, ref.complement)].append(ref)
    for (context, condition, complement), refs in cheaper.items():
        outcome = outcome_tests.get((context, condition))
        if (context, condition) in found or outcome is None:
            continue  # a finding on the outcome says more; an untested outcome says nothing
        outcome = outcome.flipped(complement)
        if outcome.direction < 0 and outcome.p < fdr:
            continue  # cheaper but worse is not an optimization
        best = min(refs, key=lambda ref: (ref.q, METRICS.index(ref.family.variable)))
        found[(context, condition)] = _Finding("optimization", best, outcome)
    return list(found.values())


def _needs_agent_check(
    finding: _Finding,
    context: Context,
    candidates: Candidates,
    data: _Data,
    settings: MinerSettings,
) -> bool:
    """Whether a finding's context mixes two agents or more (runs without one aside)."""
    if not settings.agent_check or context.agent is not None:
        return False
    if candidates.conditions[finding.primary.condition].feature["type"] == "agent":
        return False  # the agent's own effect is what the check would remove
    agents = np.unique(data.agent_codes[context.rows])
    return int((agents >= 0).sum()) > 1


def _agent_check(
    findings: list[_Finding], candidates: Candidates, data: _Data, settings: MinerSettings
) -> list[bool]:
    """Whether each finding passes the agent check (module docstring, step 6). The agents'
    tests are run as the contexts' are: per context, variable and agent, all the conditions
    to check at once (`_test_family` on the agent's executions), one-sided p = the observed
    side's tail, or 1 - it when the agent's data fall on the other side."""
    strata: dict[int, list[tuple[float, float]]] = defaultdict(list)
    by_family: dict[int, list[tuple[int, _Ref]]] = defaultdict(list)
    for position, finding in enumerate(findings):
        by_family[id(finding.primary.family)].append((position, finding.primary))
    for refs in by_family.values():
        family = refs[0][1].family
        agents = data.agent_codes[family.rows]
        checked = np.unique([ref.condition for _, ref in refs])
        for agent in np.unique(agents[agents >= 0]).tolist():
            mine = Context(None, None, family.rows[agents == agent])
            variable = _Variable.of(family.variable, mine, data, settings.min_support)
            if variable is None:
                continue
            inside = candidates.members[checked][:, variable.rows]
            sums = _block_sums(inside, np.column_stack(variable.columns))
            tested = _test_family(-1, variable, checked, sums, candidates, settings)
            if tested is None:
                continue
            at = {condition: j for j, condition in enumerate(tested.conditions.tolist())}
            for position, ref in refs:
                j = at.get(ref.condition)
                if j is None:
                    continue  # no support inside this agent
                observed, tail = float(tested.observed[j]), float(tested.tail[j])
                p = tail if observed == ref.direction else 1 - tail if observed else 0.5
                strata[position].append((p, _weight(int(tested.n_with[j]), tested.rows.size)))
    return [_holds_within_agents(strata[i], settings.fdr) for i in range(len(findings))]


def _weight(n_with: int, n: int) -> float:
    """Stouffer weight of an agent's test: sqrt(n_with n_without / n), its effective size."""
    return math.sqrt(n_with * (n - n_with) / n)


def _holds_within_agents(strata: list[tuple[float, float]], fdr: float) -> bool:
    """The agent check (module docstring, step 6) on the agents' one-sided p-values."""
    if len(strata) < 2:
        return False  # met inside one agent only: it cannot be told apart from the agent
    # Stouffer's weighted z (`scipy.stats.combine_pvalues(method="stouffer")`), for every
    # leave-one-out set at once. z is infinite at p = 0 or 1: clipped, it stays finite.
    p = np.clip([p for p, _ in strata], 1e-300, 1 - 1e-16)
    w = np.asarray([w for _, w in strata])
    z = scipy_stats.norm.isf(p)
    left_out = (np.dot(w, z) - w * z) / np.sqrt(np.dot(w, w) - w * w)
    return bool((scipy_stats.norm.sf(left_out) < fdr).all())


# -- 6. the pattern records -----------------------------------------------------------------------


def _pattern(
    finding: _Finding,
    context: Context,
    candidates: Candidates,
    data: _Data,
    equivalent: list[str],
    settings: MinerSettings,
) -> dict[str, Any]:
    ref = finding.primary
    condition = candidates.conditions[ref.condition]
    effect, with_ci, without_ci, secondary = _effect(ref, candidates, data)
    if finding.outcome is not None:
        secondary["outcome"] = _outcome_summary(finding.outcome, candidates, data)
    result = _test_result(ref, candidates, data)
    evidence: dict[str, Any] = {
        "test": result.test,
        "statistic": _finite(result.statistic),
        "p_value": result.p_value,
        "q_value": ref.q,
        "n_with": ref.n_with,
        "n_without": ref.family.rows.size - ref.n_with,
        "with_ci95": with_ci,
        "without_ci95": without_ci,
        "secondary": secondary or None,
        "sample_span_ids": _sample_spans(finding, candidates, data, settings.sample_spans),
        "equivalent": equivalent,
    }
    context_dict = context.as_dict()
    return {
        "id": pattern_id(context_dict, condition.text),
        "kind": finding.kind,
        "context": context_dict,
        "condition": condition.text,
        "feature": condition.feature,
        "effect": effect,
        "evidence": evidence,
        "explanation": _explanation(finding, context, condition, effect, evidence),
    }


def _sides(ref: _Ref, candidates: Candidates, data: _Data) -> tuple[np.ndarray, np.ndarray]:
    mask = candidates.members[ref.condition, ref.family.rows]
    values = data.values[ref.family.variable][ref.family.rows]
    return values[mask], values[~mask]


def _effect(
    ref: _Ref, candidates: Candidates, data: _Data
) -> tuple[dict[str, Any], list[float], list[float], dict[str, Any]]:
    """The effect (with, without, difference, ci95), each side's interval and the secondary
    results of a test."""
    with_, without = _sides(ref, candidates, data)
    if ref.family.fisher:
        k_with, k_without = int(with_.sum()), int(without.sum())
        rate_with, rate_without = k_with / with_.size, k_without / without.size
        interval = newcombe_difference_ci(k_with, with_.size, k_without, without.size)
        effect = _effect_dict("success_rate", rate_with, rate_without, interval)
        return (
            effect,
            list(wilson_interval(rate_with, with_.size)),
            list(wilson_interval(rate_without, without.size)),
            {},
        )
    welch = welch_test(with_, without)
    mean_with, mean_without = float(with_.mean()), float(without.mean())
    difference = mean_with - mean_without
    interval = welch.ci95 if welch.ci95 and all(map(math.isfinite, welch.ci95)) else None
    name = "mean_reward" if ref.family.variable == "outcome" else ref.family.variable
    effect = _effect_dict(name, mean_with, mean_without, interval or (difference, difference))
    secondary = {
        "welch_t": {
            "test": welch.test,
            "statistic": _finite(welch.statistic),
            "p_value": _finite(welch.p_value),
            "df": _finite(welch.df),
            "ci95": list(interval) if interval else None,
        }
    }
    return effect, list(mean_interval(with_)), list(mean_interval(without)), secondary


def _effect_dict(
    outcome: str, with_: float, without: float, interval: tuple[float, float]
) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "with": with_,
        "without": without,
        "difference": with_ - without,
        "ci95": [float(interval[0]), float(interval[1])],
    }


def _outcome_summary(ref: _Ref, candidates: Candidates, data: _Data) -> dict[str, Any]:
    """An optimization's outcome test, with the numbers of its sides."""
    result = _test_result(ref, candidates, data)
    return {
        **_effect(ref, candidates, data)[0],
        "test": result.test,
        "p_value": result.p_value,
        "n_with": ref.n_with,
        "n_without": ref.family.rows.size - ref.n_with,
    }


def _test_result(ref: _Ref, candidates: Candidates, data: _Data) -> HypothesisResult:
    """A test's result from its condition's side (a complement's statistic is the other
    side's: 1 / odds ratio, n1 n2 - U; p is the same). Fisher: `fisher_exact`. Mann–Whitney:
    U from the context's ranks and the p the run used (`mannwhitneyu`'s computation), or
    `mannwhitneyu` itself where it computes otherwise (8 or fewer a side)."""
    family = ref.family
    known = family.exact.get(ref.j)
    if known is not None and ref.complement is None:
        return known
    mask = candidates.members[ref.condition, family.rows]
    if family.fisher or known is not None:
        result = _scipy_test(family.fisher, data.values[family.variable][family.rows], mask)
        # the same test from the other side: keep the p BH used (equal but for rounding)
        return replace(result, p_value=known.p_value) if known else result
    assert family.ranks is not None
    n_with = int(mask.sum())
    u_with = float(family.ranks[mask].sum()) - n_with * (n_with + 1) / 2
    return HypothesisResult("mann_whitney_u", u_with, float(family.p[ref.j]))


def _equivalent(ref: _Ref, candidates: Candidates, equivalents: dict[int, list[str]]) -> list[str]:
    """The conditions that pick the same executions as the reported one, or exactly the
    others ("not (...)"), in the context."""
    tested = int(ref.family.conditions[ref.j])
    same = equivalents.get(tested, [])
    if ref.complement is None:
        return same
    # Seen from the complement, "not" flips: the tested condition is its "not (...)".
    reported = f"not ({candidates.conditions[ref.complement].text})"
    flipped = [text[5:-1] if text.startswith("not (") else f"not ({text})" for text in same]
    own = f"not ({candidates.conditions[tested].text})"
    return [own, *(text for text in flipped if text != reported[5:-1] and text != reported)]


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _sample_spans(
    finding: _Finding, candidates: Candidates, data: _Data, cap: int
) -> dict[str, list[str]]:
    """Span ids of runs that show the effect: on the "with" side the runs furthest in the
    pattern's direction first (a failure's worst runs), on the other side the opposite;
    ties in the facts' order."""
    ref = finding.primary
    rows = ref.family.rows
    mask = candidates.members[ref.condition, rows]
    values = data.values[ref.family.variable][rows]
    toward = 1.0 if finding.kind == "success" else -1.0
    samples = {}
    for side, members, sign in (("with", mask, toward), ("without", ~mask, -toward)):
        side_rows, keys = rows[members], -sign * values[members]
        found: list[str] = []
        wanted = cap
        while len(found) < cap and wanted <= 2 * keys.size:
            found = _span_ids(data.facts, side_rows[_smallest(keys, wanted)], cap)
            wanted *= 4  # runs without sample spans: look further
        samples[side] = found
    return samples


def _smallest(keys: np.ndarray, k: int) -> np.ndarray:
    """Positions of the `k` smallest keys in order, ties by position, without sorting all
    of them (a side can have 100,000 runs)."""
    if keys.size <= k:
        return np.argsort(keys, kind="stable")
    cutoff = np.partition(keys, k - 1)[k - 1]
    below = np.flatnonzero(keys < cutoff)
    chosen = np.concatenate([below, np.flatnonzero(keys == cutoff)[: k - below.size]])
    return chosen[np.argsort(keys[chosen], kind="stable")]


def _span_ids(facts: Sequence[ExecutionFacts], rows: np.ndarray, cap: int) -> list[str]:
    found: list[str] = []
    for row in rows:
        for span_id in facts[int(row)].sample_span_ids:
            found.append(span_id)
            if len(found) == cap:
                return found
    return found


_PHRASES = {
    "success_rate": "succeed {}",
    "mean_reward": "score a mean reward of {}",
    "tokens": "use {} tokens on average",
    "latency_ms": "take {} ms on average",
    "cost": "cost {} on average",
}


def _explanation(
    finding: _Finding,
    context: Context,
    condition: Condition,
    effect: dict[str, Any],
    evidence: dict[str, Any],
) -> str:
    """One sentence with the numbers, e.g. "support-bot runs with config.temperature ≤ 0.3
    succeed 82 % (n=140, 95 % CI 75–88 %) against 51 % otherwise (n=300); q=0.001,
    Fisher, BH"."""
    rate = effect["outcome"] == "success_rate"
    show = _percent if rate else _amount
    low, high = evidence["with_ci95"]
    interval = (
        f"{_percent(low, sign=False)}–{_percent(high)}" if rate else f"{show(low)}–{show(high)}"
    )
    sentence = (
        f"{_scope(context)} with {condition.text.replace(' <= ', ' ≤ ')} "
        f"{_PHRASES[effect['outcome']].format(show(effect['with']))} "
        f"(n={evidence['n_with']}, 95 % CI {interval}) against {show(effect['without'])} "
        f"otherwise (n={evidence['n_without']})"
    )
    if finding.kind == "optimization":
        outcome = evidence["secondary"]["outcome"]
        shown = _percent if outcome["outcome"] == "success_rate" else _amount
        what = "success" if outcome["outcome"] == "success_rate" else "mean reward"
        sentence += (
            f", with no significant drop in {what} ({shown(outcome['with'])} against "
            f"{shown(outcome['without'])}, p={outcome['p_value']:.2g})"
        )
    return f"{sentence}; q={evidence['q_value']:.2g}, {_TEST_NAMES[evidence['test']]}, BH"


def _scope(context: Context) -> str:
    runs = f"{context.agent} runs" if context.agent is not None else "Runs"
    return f"{runs} of task {context.task_name}" if context.task_name is not None else runs


def _percent(value: float, *, sign: bool = True) -> str:
    return f"{100 * value:.0f} %" if sign else f"{100 * value:.0f}"


def _amount(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


# -- the run --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MiningResult:
    """What a run found, best first (lowest q, then largest effect), and how it went."""

    patterns: list[dict[str, Any]]
    diagnostics: dict[str, Any]  # counts (executions, conditions, contexts, tests, ...), seconds


def find_patterns(
    facts: Sequence[ExecutionFacts], settings: MinerSettings | None = None
) -> MiningResult:
    """Mine `facts` (module docstring): pure, no I/O, deterministic."""
    settings = settings or MinerSettings()
    clock = time.perf_counter()
    candidates = conditions(facts, min_support=settings.min_support, max_values=settings.max_values)
    data = _Data.of(facts, settings.outcome)
    places = contexts(facts, min_support=settings.min_support)
    seconds = {"conditions": time.perf_counter() - clock}

    clock = time.perf_counter()
    families: list[_Family] = []
    groups: list[_Groups] = []
    for index, context in enumerate(places):
        found, grouped = _test_context(index, context, candidates, data, settings)
        families.extend(found)
        groups.append(grouped)
    count = _adjust(families, candidates, data, settings.fdr)
    seconds["tests"] = time.perf_counter() - clock

    clock = time.perf_counter()
    findings = _findings(families, [g.complement for g in groups], settings.fdr)
    mixed = [
        f
        for f in findings
        if _needs_agent_check(f, places[f.primary.family.context], candidates, data, settings)
    ]
    passed = dict(zip(map(id, mixed), _agent_check(mixed, candidates, data, settings), strict=True))
    kept = [f for f in findings if passed.get(id(f), True)]
    patterns = []
    for finding in kept:
        ref = finding.primary
        context = places[ref.family.context]
        equivalent = _equivalent(ref, candidates, groups[ref.family.context].equivalent)
        patterns.append(_pattern(finding, context, candidates, data, equivalent, settings))
    patterns.sort(
        key=lambda p: (p["evidence"]["q_value"], -abs(p["effect"]["difference"]), p["id"])
    )
    seconds["patterns"] = time.perf_counter() - clock
    diagnostics = {
        "executions": len(facts),
        "outcome": settings.outcome,
        "binary_outcome": data.binary,
        "conditions": len(candidates.conditions),
        "contexts": len(places),
        "tests": count,
        "scipy_tests": sum(len(f.exact) for f in families),
        "findings": len(findings),
        "dropped_by_agent_check": len(findings) - len(kept),
        "patterns": len(patterns),
        "seconds": seconds,
    }
    return MiningResult(patterns, diagnostics)


async def mine_patterns(
    store: EvolutionStore,
    *,
    agent: str | None = None,
    since: int | None = None,
    outcome: str = "reward",
    reward_name: str = "reward",
    min_support: int = 20,
    fdr: float = 0.05,
    save: bool = True,
) -> list[dict[str, Any]]:
    """Mine the store's executions (of `agent`, created at or after `since` ns) and, with
    `save`, store the patterns: rows found again are updated, the scope's rows not found
    again become stale (`EvolutionStore.save_patterns`). Returns the patterns, best first."""
    settings = MinerSettings(outcome=outcome, min_support=min_support, fdr=fdr)
    facts = await store.execution_facts(agent=agent, since=since, reward_name=reward_name)
    # CPU-bound: off the event loop, so the store's other work is not held up.
    result = await asyncio.to_thread(find_patterns, facts, settings)
    logger.info("pattern mining: %s", result.diagnostics)
    if save:
        await store.save_patterns(result.patterns, scope={"agent": agent})
    return result.patterns
