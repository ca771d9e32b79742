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
   Fisher tests BH could keep are run with scipy and BH done again (`adjust_families`), so every
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
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .pattern_conditions import Candidates, Condition, Context, conditions, contexts
from .pattern_hypotheses import (
    Data,
    Family,
    Groups,
    adjust_families,
    outcome_values,
    tests_of_context,
)
from .pattern_records import (
    check_agents,
    classify_findings,
    equivalent_conditions,
    needs_agent_check,
    pattern_record,
)
from .pattern_settings import MinerSettings

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
    data = Data.of(facts, settings.outcome)
    places = contexts(facts, min_support=settings.min_support)
    seconds = {"conditions": time.perf_counter() - clock}

    clock = time.perf_counter()
    families: list[Family] = []
    groups: list[Groups] = []
    for index, context in enumerate(places):
        found, grouped = tests_of_context(index, context, candidates, data, settings)
        families.extend(found)
        groups.append(grouped)
    count = adjust_families(families, candidates, data, settings.fdr)
    seconds["tests"] = time.perf_counter() - clock

    clock = time.perf_counter()
    findings = classify_findings(families, [g.complement for g in groups], settings.fdr)
    mixed = [
        f
        for f in findings
        if needs_agent_check(f, places[f.primary.family.context], candidates, data, settings)
    ]
    passed = dict(zip(map(id, mixed), check_agents(mixed, candidates, data, settings), strict=True))
    kept = [f for f in findings if passed.get(id(f), True)]
    patterns = []
    for finding in kept:
        ref = finding.primary
        context = places[ref.family.context]
        equivalent = equivalent_conditions(ref, candidates, groups[ref.family.context].equivalent)
        patterns.append(pattern_record(finding, context, candidates, data, equivalent, settings))
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
