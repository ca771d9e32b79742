"""The lab technician (issue 23): what the runs of a window did, and what to improve first.

`analyze(store, ...)` reads a window of executions through the store's set-based reads
(`EvolutionStore.analysis_*`), computes the report here with no I/O, and, with `propose`,
asks an LLM for revised prompts that it stores as registry drafts (`analysis_propose`). It
never edits code, never applies or approves anything: a person reads the report and approves
a draft in the registry, with rollback.

What the report holds, and the rules behind it:

- executions: counted by status; the success rate is succeeded / finished (succeeded, failed,
  timeout; running ones are counted but not judged), with a 95 % Wilson interval.
- operations: per `spans.operation` (else the span's name), p50 / p95 (linear interpolation,
  numpy's default) / max / total duration, exact, from every span of the window.
- slowest steps: spans with a parent (the steps inside a run), per name and agent, by total
  time; their share is that total over the summed duration of the runs' root spans.
- errors: error spans grouped by type (the `exception` event's `exception.type`, else
  "error") and message (the exception's message, else the status message) with ids, hex,
  uuids, numbers, paths, urls and quoted strings masked (`analysis_errors`).
- low success: task names and tags with at least `MIN_GROUP` finished executions whose
  Wilson interval lies wholly below the window's success rate.
- regression: success before and after the newest marker in the window (of the agent, with
  one), one-sided Fisher exact test; a regression at p < `ALPHA`.

Opportunities, each with its evidence, are ranked by one score, highest first (ties: the
order of `KINDS`): the share of the window's finished executions it costs —
  frequent error (≥ `ERROR_MIN_COUNT` spans): its count / finished executions (at most 1);
  low success: (window rate − group rate) × group n / finished executions;
  regression: (rate before − rate after) × n after / finished executions;
  slow step (share ≥ `SLOW_SHARE`): its share of run time × `SLOW_WEIGHT`, as a failure
  costs more than the time it takes.
An opportunity names the agent it is about (what `propose` revises the prompt of): the
`agent` analysed; else the agent of the error's or step's spans, or of the marker; else the
agent of every run of the window, when there is only one.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .analysis_errors import ErrorGroups
from .stats import fisher_test, wilson_interval

__all__ = ["AnalysisReport", "SpanFold", "analyze", "rank_opportunities"]

DEFAULT_WINDOW = timedelta(hours=24)
#: proposals per run, at most (issue 23)
MAX_PROPOSALS = 3
#: finished executions a task name or tag needs before it is judged
MIN_GROUP = 5
#: error spans a group needs to be a recurring error
ERROR_MIN_COUNT = 2
#: share of run time from which a step is an opportunity, and what a share of time weighs
#: against a share of failed executions
SLOW_SHARE = 0.2
SLOW_WEIGHT = 0.5
ALPHA = 0.05
TOP_STEPS = 5
TOP_PATTERNS = 20
#: opportunity kinds, in the order that breaks ties of score
KINDS = ("regression", "low_success", "error", "slow_step")
FINISHED = ("succeeded", "failed", "timeout")

# -- numbers -------------------------------------------------------------------------------------


def _ms(ns: float) -> float:
    return round(float(ns) / 1e6, 3)


def _rate(succeeded: int, n: int) -> dict[str, Any]:
    rate = succeeded / n if n else None
    low, high = wilson_interval(rate or 0.0, n)
    return {"n": n, "succeeded": succeeded, "success_rate": rate, "ci95": [low, high]}


def execution_summary(counts: dict[str, int]) -> dict[str, Any]:
    """The window's executions by status, with the success rate of the finished ones."""
    finished = sum(counts.get(status, 0) for status in FINISHED)
    return {
        "total": sum(counts.values()),
        "by_status": dict(sorted(counts.items())),
        "finished": finished,
        **_rate(counts.get("succeeded", 0), finished),
    }


class OperationStats:
    """A fold over (operation, ascending durations in ns): p50 / p95 / max / total, in ms."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def __call__(self, operation: str, durations: array) -> None:
        values = np.frombuffer(durations, dtype=np.int64) if len(durations) else np.zeros(1)
        p50, p95 = np.percentile(values, [50, 95])
        self.rows.append(
            {
                "operation": operation,
                "count": len(durations),
                "p50_ms": _ms(p50),
                "p95_ms": _ms(p95),
                "max_ms": _ms(values.max()),
                "total_ms": _ms(values.sum()),
            }
        )

    def ranked(self) -> list[dict[str, Any]]:
        """Operations by total time, longest first."""
        return sorted(self.rows, key=lambda row: (-row["total_ms"], row["operation"]))


class SpanFold:
    """A fold over the window's timed spans, a partition at a time — rows of (operation,
    name, agent, is root, span_id, duration ns) sorted by operation, then duration — into
    the per-operation figures (`operations`) and the run and step totals (`totals()`, what
    `slowest_steps` takes). Only the current operation's durations are held."""

    def __init__(self) -> None:
        self.operations = OperationStats()
        self._operation: str | None = None
        self._durations = array("q")
        self._run_ns = 0
        self._run_agents: Counter = Counter()
        #: (name, agent) -> [count, total ns, longest ns, the longest one's span id]
        self._steps: dict[tuple[str, str | None], list[Any]] = {}

    def add_rows(self, rows: Iterable[Any]) -> None:
        for operation, name, agent, is_root, span_id, duration in rows:
            if operation != self._operation:
                self._flush()
                self._operation = operation
            self._durations.append(duration)
            if is_root:
                self._run_ns += duration
                self._run_agents[agent] += 1
                continue
            step = self._steps.get((name, agent))
            if step is None:
                self._steps[name, agent] = [1, duration, duration, span_id]
                continue
            step[0] += 1
            step[1] += duration
            if duration >= step[2]:
                step[2], step[3] = duration, span_id

    def _flush(self) -> None:
        if self._operation is not None:
            self.operations(self._operation, self._durations)
        self._operation, self._durations = None, array("q")

    def totals(self) -> dict[str, Any]:
        """`run_ns` (summed root-span durations), `run_agents` (root spans per agent) and
        `steps`: (name, agent, count, total ns, longest ns, its span id) for spans with a
        parent. Ends the current operation."""
        self._flush()
        return {
            "run_ns": self._run_ns,
            "run_agents": dict(self._run_agents),
            "steps": [(name, agent, *figures) for (name, agent), figures in self._steps.items()],
        }


def slowest_steps(totals: dict[str, Any], limit: int = TOP_STEPS) -> list[dict[str, Any]]:
    """The steps with the most total time, with their share of the runs' time."""
    run_ns = totals["run_ns"]
    ordered = sorted(totals["steps"], key=lambda step: (-step[3], step[0], step[1] or ""))
    return [
        {
            "step": name,
            "agent": agent,
            "count": count,
            "total_ms": _ms(total),
            "mean_ms": _ms(total / count),
            "max_ms": _ms(longest),
            "share": total / run_ns if run_ns else None,
            "slowest_span_id": span_id,
        }
        for name, agent, count, total, longest, span_id in ordered[:limit]
    ]


def low_success_groups(
    outcomes: Iterable[tuple[str, str, int, int]], overall: float | None
) -> list[dict[str, Any]]:
    """Task names and tags reliably below the window's success rate (see the module)."""
    if overall is None:
        return []
    found = []
    for kind, name, n, succeeded in outcomes:
        if n < MIN_GROUP:
            continue
        figures = _rate(succeeded, n)
        if figures["ci95"][1] < overall:
            found.append({"kind": kind, "name": name, **figures})
    return sorted(found, key=lambda g: (g["success_rate"], -g["n"], g["kind"], g["name"]))


def regression_check(
    marker: dict[str, Any], before: dict[str, int], after: dict[str, int]
) -> dict[str, Any]:
    """Success before against after `marker` (counts by status on each side)."""
    was, now = execution_summary(before), execution_summary(after)
    compared = None
    if was["finished"] and now["finished"]:
        compared = fisher_test(
            now["succeeded"], now["finished"], was["succeeded"], was["finished"], alternative="less"
        ).p_value
    difference = (
        now["success_rate"] - was["success_rate"]
        if was["success_rate"] is not None and now["success_rate"] is not None
        else None
    )
    return {
        "marker": {
            "id": marker["id"],
            "kind": marker["kind"],
            "agent": marker["agent"],
            "time": marker["time"],
        },
        "before": {key: was[key] for key in ("n", "succeeded", "success_rate", "ci95")},
        "after": {key: now[key] for key in ("n", "succeeded", "success_rate", "ci95")},
        "difference": difference,
        "p_value": compared,
        "regressed": compared is not None and compared < ALPHA and (difference or 0) < 0,
    }


# -- opportunities -------------------------------------------------------------------------------


def _opportunity(
    kind: str, key: str, title: str, score: float, agent: str | None, evidence: dict[str, Any]
) -> dict[str, Any]:
    digest = hashlib.sha256(f"{kind}\x00{key}".encode()).hexdigest()[:12]
    return {
        "id": f"{kind}:{digest}",
        "kind": kind,
        "title": title,
        "score": round(max(0.0, score), 6),
        "agent": agent,
        "evidence": evidence,
    }


def rank_opportunities(
    executions: dict[str, Any],
    errors: list[dict[str, Any]],
    steps: list[dict[str, Any]],
    low_success: list[dict[str, Any]],
    regression: dict[str, Any] | None,
    *,
    agent: str | None = None,
) -> list[dict[str, Any]]:
    """Every opportunity the numbers show, highest score first (the rule: module docstring)."""
    finished = max(executions["finished"], 1)
    overall = executions["success_rate"]
    found = []
    if regression is not None and regression["regressed"]:
        before, after = regression["before"], regression["after"]
        lost = (before["success_rate"] - after["success_rate"]) * after["n"]
        found.append(
            _opportunity(
                "regression",
                regression["marker"]["id"],
                f"success fell from {before['success_rate']:.0%} to {after['success_rate']:.0%} "
                f"after {regression['marker']['kind']}",
                lost / finished,
                regression["marker"]["agent"] or agent,
                regression,
            )
        )
    for group in low_success:
        lost = (overall - group["success_rate"]) * group["n"]
        found.append(
            _opportunity(
                "low_success",
                f"{group['kind']}\x00{group['name']}",
                f"{group['kind']} {group['name']!r} succeeds {group['success_rate']:.0%} "
                f"(n={group['n']}) against {overall:.0%} overall",
                lost / finished,
                agent,
                {**group, "window_success_rate": overall},
            )
        )
    for error in errors:
        if error["count"] < ERROR_MIN_COUNT:
            continue
        found.append(
            _opportunity(
                "error",
                f"{error['type']}\x00{error['message']}",
                f"{error['type']}: {error['message'] or '(no message)'} ({error['count']} spans)",
                min(1.0, error["count"] / finished),
                agent or error["agent"],
                {**error, "finished_executions": executions["finished"]},
            )
        )
    for step in steps:
        if step["share"] is None or step["share"] < SLOW_SHARE:
            continue
        found.append(
            _opportunity(
                "slow_step",
                f"{step['step']}\x00{step['agent']}",
                f"step {step['step']!r} takes {step['share']:.0%} of run time "
                f"(mean {step['mean_ms']:g} ms, n={step['count']})",
                step["share"] * SLOW_WEIGHT,
                agent or step["agent"],
                step,
            )
        )
    found.sort(key=lambda o: (-o["score"], KINDS.index(o["kind"]), o["id"]))
    for rank, opportunity in enumerate(found, 1):
        opportunity["rank"] = rank
    return found


# -- the report ----------------------------------------------------------------------------------


@dataclass
class AnalysisReport:
    """What `analyze` found. `to_dict()` is JSON-able; `to_markdown()` and `to_html()` (a
    self-contained page) are for people. `proposals` are the registry drafts made."""

    id: str
    generated_at: int
    window: dict[str, Any]
    executions: dict[str, Any]
    operations: list[dict[str, Any]]
    slowest_steps: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    low_success: list[dict[str, Any]]
    patterns: list[dict[str, Any]]
    regression: dict[str, Any] | None
    opportunities: list[dict[str, Any]]
    proposals: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: executions, success rate and the top opportunity."""
        rate = self.executions["success_rate"]
        shown = "-" if rate is None else f"{rate:.0%}"
        top = self.opportunities[0]["title"] if self.opportunities else "no opportunity"
        return f"{self.executions['total']} executions, success {shown}; top: {top}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "generated_at": _iso(self.generated_at),
            "window": self.window,
            "summary": self.summary(),
            "executions": self.executions,
            "operations": self.operations,
            "slowest_steps": self.slowest_steps,
            "errors": self.errors,
            "low_success": self.low_success,
            "patterns": self.patterns,
            "regression": self.regression,
            "opportunities": self.opportunities,
            "proposals": self.proposals,
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        from .analysis_render import markdown

        return markdown(self.to_dict())

    def to_html(self) -> str:
        from .analysis_render import html_page

        return html_page(self.to_dict())


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")


def _ns(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1_000_000) * 1000


def _pattern_row(pattern: dict[str, Any]) -> dict[str, Any]:
    evidence = pattern.get("evidence") or {}
    return {
        "id": pattern["id"],
        "kind": pattern["kind"],
        "context": pattern.get("context"),
        "condition": pattern["condition"],
        "explanation": pattern.get("explanation"),
        "q_value": evidence.get("q_value"),
    }


async def analyze(
    store: Any,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    propose: bool = False,
    llm: Any = None,
    model: str | None = None,
    max_proposals: int = MAX_PROPOSALS,
    seed: int = 0,
) -> AnalysisReport:
    """The lab technician's report on the executions created in [since, until) — by default
    the last 24 hours — of `agent` (all agents when None).

    With `propose`, the top opportunities (at most `max_proposals`, ≤ 3) whose agent has a
    prompt in the registry get a revised prompt from the LLM (`llm`: a base URL or a client
    with `.complete(messages)`; None: DESIGN §7's default base URL), stored as a draft with
    `created_by="lab"`; no LLM reachable gives a report without proposals and a note. The
    analysis has no randomness: `seed` is recorded so a stored report says how it was made.
    Raises `ValueError` for an empty window or `max_proposals` outside 0–3."""
    if not 0 <= max_proposals <= MAX_PROPOSALS:
        raise ValueError(f"max_proposals must be between 0 and {MAX_PROPOSALS}")
    now = time.time_ns()
    until_ns = _ns(until) if until is not None else now
    since_ns = (
        _ns(since) if since is not None else until_ns - int(DEFAULT_WINDOW.total_seconds() * 1e9)
    )
    if since_ns >= until_ns:
        raise ValueError("since must be before until")
    where = {"since": since_ns, "until": until_ns, "agent": agent}

    executions = execution_summary(await store.analysis_execution_counts(**where))
    fold = SpanFold()
    await store.analysis_window_spans(**where, consume=fold.add_rows)
    totals = fold.totals()
    steps = slowest_steps(totals)
    grouper = ErrorGroups()
    await store.analysis_error_spans(**where, consume=grouper.add_rows)
    errors = grouper.top()
    low = low_success_groups(
        await store.analysis_group_outcomes(**where), executions["success_rate"]
    )
    regression = await _regression(store, agent, since_ns, until_ns)
    active = await store.list_patterns(status="active", agent=agent, limit=TOP_PATTERNS)
    report = AnalysisReport(
        id=secrets.token_hex(16),
        generated_at=now,
        window={
            "since": _iso(since_ns),
            "until": _iso(until_ns),
            "since_unix_nano": since_ns,
            "until_unix_nano": until_ns,
            "agent": agent,
            "seed": seed,
        },
        executions=executions,
        operations=fold.operations.ranked(),
        slowest_steps=steps,
        errors=errors,
        low_success=low,
        patterns=[_pattern_row(pattern) for pattern in active.items],
        regression=regression,
        opportunities=rank_opportunities(
            executions, errors, steps, low, regression, agent=agent or _sole(totals)
        ),
    )
    if executions["total"] == 0:
        report.notes.append("no execution in the window")
    if propose:
        from .analysis_propose import propose_drafts

        await propose_drafts(store, report, llm=llm, model=model, limit=max_proposals)
    return report


def _sole(totals: dict[str, Any]) -> str | None:
    """The agent of every run of the window, when there is one: what a task name's or tag's
    opportunity is about without `agent`."""
    agents = list(totals["run_agents"])
    return agents[0] if len(agents) == 1 else None


async def _regression(
    store: Any, agent: str | None, since_ns: int, until_ns: int
) -> dict[str, Any] | None:
    """Success before and after the newest marker in the window, None without one."""
    page = await store.list_markers(
        agent=agent, start_after=since_ns - 1, start_before=until_ns, limit=1
    )
    if not page.items:
        return None
    marker = page.items[0]
    at = marker["time_unix_nano"]
    before = await store.analysis_execution_counts(since=since_ns, until=at, agent=agent)
    after = await store.analysis_execution_counts(since=at, until=until_ns, agent=agent)
    return regression_check(marker, before, after)
