"""The pattern learner's hypothesis tests (`patterns`, steps 3 and 4): outcome and metric
values, every condition of a context tested at once with NumPy, then Benjamini–Hochberg over
the run with scipy's exact p-values where they decide."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidInput
from .pattern_conditions import Candidates, Condition, Context
from .pattern_settings import FAILURE_STATUSES, METRICS, SUCCESS_STATUSES, MinerSettings
from .stats import (
    HypothesisResult,
    benjamini_hochberg,
    fisher_screen,
    fisher_test,
    mann_whitney_from_ranks,
    mann_whitney_test,
)

if TYPE_CHECKING:
    from ..pattern_facts import ExecutionFacts

#: cells of a membership block (conditions x executions) converted to numbers at a time
_BLOCK_CELLS = 1_000_000


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
class Data:
    facts: Sequence[ExecutionFacts]
    values: dict[str, np.ndarray]  # "outcome" and each metric: float, nan when unknown
    binary: bool  # the outcome is 0/1: Fisher
    agent_codes: np.ndarray  # int per execution: its agent's, -1 without one

    @classmethod
    def of(cls, facts: Sequence[ExecutionFacts], outcome: str) -> Data:
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
class Family:
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
class Groups:
    """Conditions of one context that are the same test (`_distinct_conditions`)."""

    kept: np.ndarray  # the first of each group: the one tested
    equivalent: dict[int, list[str]]  # kept -> texts of the others ("not (...)": complement)
    complement: dict[int, int]  # kept -> its first complement
    tested_as: dict[int, tuple[int, bool]]  # any candidate -> (kept, whether its complement)


def tests_of_context(
    index: int, context: Context, candidates: Candidates, data: Data, settings: MinerSettings
) -> tuple[list[Family], Groups]:
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
        if (variable := Variable.of(name, context, data, support)) is not None
    ]
    if not variables or groups.kept.size == 0:
        return [], groups
    # One pass over the membership for every variable: their columns side by side.
    sums = block_sums(block, np.column_stack([c for v in variables for c in v.columns]))
    families = []
    start = 0
    for variable in variables:
        width = len(variable.columns)
        part = sums[:, start : start + width]
        start += width
        family = tests_of_family(index, variable, groups.kept, part, candidates, settings)
        if family is not None:
            families.append(family)
    return families, groups


def _distinct_conditions(
    inside: np.ndarray, indices: np.ndarray, conditions_: list[Condition]
) -> Groups:
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
    return Groups(np.asarray(kept, dtype=np.int64), equivalent, complement, tested_as)


@dataclass(frozen=True)
class Variable:
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
    def of(cls, name: str, context: Context, data: Data, support: int) -> Variable | None:
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


def tests_of_family(
    index: int,
    variable: Variable,
    candidate_rows: np.ndarray,
    sums: np.ndarray,
    candidates: Candidates,
    settings: MinerSettings,
) -> Family | None:
    """Test every condition with `min_support` on both sides among the executions with a
    value of `variable`, from `sums` (the membership times the variable's columns): one
    vectorised step for all of them (Fisher: its lower bound until `adjust_families`)."""
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
    family = Family(
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


def block_sums(inside: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """inside (conditions x executions, bool) @ columns, a block of conditions at a time so
    the converted copy of the membership stays small."""
    out = np.empty((inside.shape[0], columns.shape[1]))
    step = max(1, _BLOCK_CELLS // max(1, inside.shape[1]))
    for start in range(0, inside.shape[0], step):
        # uint8 @ float64: numpy converts as it goes, cheaper than a float copy of the block
        out[start : start + step] = inside[start : start + step].view(np.uint8) @ columns
    return out


def _run_scipy(family: Family, j: int, values: np.ndarray, mask: np.ndarray) -> None:
    result = scipy_test_result(family.fisher, values, mask)
    family.exact[j] = result
    family.p[j] = result.p_value


def adjust_families(families: list[Family], candidates: Candidates, data: Data, fdr: float) -> int:
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


def scipy_test_result(
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
