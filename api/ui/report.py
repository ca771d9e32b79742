"""The static report (`evolution-store report`): one HTML file that a person can mail, attach
to an issue or open from disk years later, with no server and no network.

Everything is inline — the stylesheet, the charts (server-side SVG from `svg.py`) and the data
(a JSON block a script can read back) — and nothing needs JavaScript: span details open with
`<details>`. Size stays proportional to what a person reads: every execution is a summary row,
but only the `waterfalls` most telling ones (failed first, then the newest) carry their spans,
at most `spans_per_waterfall` each.

    html = await build_report(store, ReportOptions(agent="support", since=since_ns))
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evolution_store.aggregates import percentile
from evolution_store.rows import iso

from . import svg
from .render import ENV, STATIC
from .waterfall import waterfall_rows

#: executions drawn on the timeline (the newest); the table lists them all
TIMELINE_CAP = 200
#: agents, and patterns per agent, the report shows
AGENT_CAP = 20
PATTERN_CAP = 50
#: time buckets of the metrics charts
BUCKETS = 24
FAILED = frozenset({"failed", "timeout", "error"})


@dataclass(frozen=True)
class ReportOptions:
    """What a report covers: one task, or an agent's tasks, or all; created since `since`
    (Unix ns); at most `max_tasks` of them (the newest)."""

    task_id: str | None = None
    agent: str | None = None
    since: int | None = None
    max_tasks: int = 1000
    waterfalls: int = 20
    spans_per_waterfall: int = 200


async def build_report(store: Any, options: ReportOptions, *, now_ns: int | None = None) -> str:
    """The report's HTML. Raises the store's `NotFound` for an unknown `task_id`."""
    return render(await gather(store, options, now_ns=now_ns))


# -- data ---------------------------------------------------------------------------------------


async def gather(store: Any, options: ReportOptions, *, now_ns: int | None = None) -> dict:
    """Everything the template shows, as plain data, read in a fixed number of statements
    (plus two per agent shown: its markers and its patterns)."""
    tasks = await store.report_tasks(
        task_id=options.task_id, agent=options.agent, since=options.since, limit=options.max_tasks
    )
    names = {task["id"]: task["name"] for task in tasks}
    runs = sorted(await store.execution_summaries(list(names)), key=lambda r: (_start(r), r["id"]))
    for run in runs:
        run["task_name"] = names[run["task_id"]]
        run["duration_ns"] = _duration(run)
    shown = _telling(runs, options.waterfalls)
    traces = await store.waterfall_spans(
        [run["id"] for run in shown], cap=options.spans_per_waterfall
    )
    agents = _agents(runs, options.agent)
    markers = await _markers(store, agents, options.since or _first_start(runs))
    ran = {run["task_id"] for run in runs}
    return {
        "selection": _selection_text(options, tasks),
        "generated_at": iso(now_ns or time.time_ns()),
        "tasks": tasks,
        "idle_tasks": [task for task in tasks if task["id"] not in ran],
        "runs": runs,
        "waterfalls": [
            _waterfall(run, traces.get(run["id"], {"spans": [], "capped": False})) for run in shown
        ],
        "agents": [_agent_summary(agent, runs) for agent in agents],
        "markers": markers,
        "rewards": await store.selection_rewards(list(names)),
        "patterns": await _patterns(store, agents),
    }


def _start(run: Mapping[str, Any]) -> int:
    """When an execution started: its first span, else when it was recorded."""
    return run["start_ns"] if run["start_ns"] is not None else run["created_ns"]


def _end(run: Mapping[str, Any]) -> int | None:
    return run["end_ns"] if run["end_ns"] is not None else run["ended_ns"]


def _duration(run: Mapping[str, Any]) -> int | None:
    end = _end(run)
    return None if end is None else max(0, end - _start(run))


def _failed(run: Mapping[str, Any]) -> bool:
    return run["status"] in FAILED or run["error_count"] > 0


def _telling(runs: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """The executions worth a waterfall: failed ones first, then the newest."""
    with_spans = [run for run in runs if run["span_count"]]
    return sorted(with_spans, key=lambda run: (not _failed(run), -_start(run)))[:count]


def _first_start(runs: Sequence[Mapping[str, Any]]) -> int | None:
    return min((_start(run) for run in runs), default=None)


def _agents(runs: Iterable[Mapping[str, Any]], named: str | None) -> list[str]:
    if named is not None:
        return [named]
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        if run["agent"] is not None:
            counts[run["agent"]] += 1
    return sorted(counts, key=lambda agent: (-counts[agent], agent))[:AGENT_CAP]


async def _markers(store: Any, agents: Sequence[str], since: int | None) -> list[dict[str, Any]]:
    found = []
    start_after = None if since is None else since - 1  # list_markers' bound is exclusive
    for agent in agents:
        found += (await store.list_markers(agent=agent, start_after=start_after)).items
    return sorted(found, key=lambda marker: marker["time_unix_nano"])


async def _patterns(store: Any, agents: Sequence[str]) -> list[dict[str, Any]]:
    found = []
    for agent in agents:
        found += (await store.list_patterns(agent=agent, limit=PATTERN_CAP)).items
    return found


def _selection_text(options: ReportOptions, tasks: Sequence[Mapping[str, Any]]) -> str:
    if options.task_id is not None:
        return f"task {options.task_id}"
    scope = f"agent {options.agent}" if options.agent is not None else "all agents"
    if options.since is not None:
        scope += f", tasks created since {iso(options.since)}"
    if len(tasks) >= options.max_tasks:
        scope += f" (the newest {options.max_tasks} tasks)"
    return scope


def _agent_summary(agent: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """An agent's figures over the selected executions, and its metrics per time bucket."""
    mine = [run for run in runs if run["agent"] == agent]
    durations = sorted(run["duration_ns"] for run in mine if run["duration_ns"] is not None)
    reward_count, reward_mean = _pooled_reward(mine)

    def ms(fraction: float) -> float | None:
        value = percentile(durations, fraction)
        return None if value is None else value / 1e6

    return {
        "agent": agent,
        "runs": len(mine),
        "success_rate": (sum(not _failed(run) for run in mine) / len(mine) if mine else None),
        "latency_ms": {"p50": ms(0.5), "p95": ms(0.95)},
        "tokens": sum(run["input_tokens"] + run["output_tokens"] for run in mine),
        "cost": sum(run["cost"] for run in mine),
        "reward": {"count": reward_count, "mean": reward_mean},
        "series": _buckets(mine),
    }


def _buckets(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Success rate, p50 latency (ms), tokens and mean reward per time bucket, each point at
    its bucket's middle."""
    series: dict[str, list[tuple[int, float]]] = {
        "success_rate": [],
        "latency_p50_ms": [],
        "tokens": [],
        "reward": [],
    }
    if not runs:
        return series
    first, last = min(map(_start, runs)), max(map(_start, runs))
    width = max(1, (last - first) // BUCKETS + 1)
    grouped: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for run in runs:
        grouped[(_start(run) - first) // width].append(run)
    for index, bucket in sorted(grouped.items()):
        at = first + index * width + width // 2
        series["success_rate"].append((at, sum(not _failed(r) for r in bucket) / len(bucket)))
        durations = [r["duration_ns"] / 1e6 for r in bucket if r["duration_ns"] is not None]
        if durations:
            series["latency_p50_ms"].append((at, statistics.median(durations)))
        series["tokens"].append((at, sum(r["input_tokens"] + r["output_tokens"] for r in bucket)))
        count, mean = _pooled_reward(bucket)
        if count:
            series["reward"].append((at, mean))
    return series


def _pooled_reward(runs: Iterable[Mapping[str, Any]]) -> tuple[int, float | None]:
    """The count and mean of the rewards linked to `runs`, each execution weighted by its
    number of rewards."""
    rewarded = [run for run in runs if run["reward_count"]]
    count = sum(run["reward_count"] for run in rewarded)
    total = sum(run["reward_mean"] * run["reward_count"] for run in rewarded)
    return count, (total / count if count else None)


def _waterfall(run: Mapping[str, Any], trace: Mapping[str, Any]) -> dict[str, Any]:
    """A waterfall's rows (the dashboard's `waterfall_rows`, each span linking to its detail
    below the chart) and the spans with their rewards, for the details."""
    spans = [
        {
            **span,
            "reward_count": len(span["rewards"]),
            "reward_mean": (
                statistics.fmean(r["value"] for r in span["rewards"]) if span["rewards"] else None
            ),
        }
        for span in trace["spans"]
    ]
    rows = waterfall_rows(spans, href=lambda span: "#" + detail_id(span))
    return {"run": run, "rows": rows, "capped": trace["capped"]}


def detail_id(span: Mapping[str, Any]) -> str:
    return f"span-detail-{span['trace_id']}-{span['span_id']}"


# -- charts -------------------------------------------------------------------------------------


def _marker_points(markers: Iterable[Mapping[str, Any]]) -> list[tuple[int, str]]:
    return [
        (marker["time_unix_nano"], f"{marker['kind']} ({marker['agent']}) {marker['time']}")
        for marker in markers
    ]


def _charts(data: Mapping[str, Any]) -> dict[str, Any]:
    markers = _marker_points(data["markers"])
    telling = {item["run"]["id"] for item in data["waterfalls"]}
    newest = data["runs"][-TIMELINE_CAP:]  # `gather` sorts them by start
    bars = [
        {
            "label": f"{run['task_name']} · {run['task_id']} #{run['attempt']}",
            "start_ns": _start(run),
            "end_ns": _end(run),
            "status": run["status"],
            "href": f"#run-{run['id']}" if run["id"] in telling else None,
            "title": _bar_title(run),
        }
        for run in newest
    ]
    agents = data["agents"]

    def across(metric: str, label: str) -> Any:
        series = {a["agent"]: a["series"][metric] for a in agents}
        return svg.line_chart(series, label=label, width=560, markers=markers)

    return {
        "timeline": svg.timeline(bars, label="Executions over time", markers=markers),
        "timeline_shown": len(bars),
        "success": across("success_rate", "Success rate per agent over time"),
        "latency": across("latency_p50_ms", "Latency p50 (ms) per agent over time"),
        "tokens": across("tokens", "Tokens per agent over time"),
        "reward": across("reward", "Mean reward per agent over time"),
        "sparklines": {
            a["agent"]: svg.sparkline(
                a["series"]["success_rate"], label=f"{a['agent']} success rate"
            )
            for a in agents
        },
        "rewards": svg.interval_chart(
            data["rewards"]["summary"], label="Rewards by name: mean and 95% interval"
        ),
    }


def _bar_title(run: Mapping[str, Any]) -> str:
    parts = [f"{run['task_name']} attempt {run['attempt']}: {run['status']}"]
    if run["duration_ns"] is not None:
        parts.append(svg.fmt_duration(run["duration_ns"]))
    parts.append(f"{run['span_count']} spans")
    if run["reward_count"]:
        parts.append(f"reward {svg.fmt_value(run['reward_mean'])} (n={run['reward_count']})")
    return ", ".join(parts)


# -- rendering ----------------------------------------------------------------------------------


def stylesheet() -> str:
    """The dashboard's CSS (api/ui/static/*.css, when present), to inline."""
    return "\n".join(path.read_text(encoding="utf-8") for path in sorted(STATIC.glob("*.css")))


#: the columns of the embedded tasks and executions tables
TASK_FIELDS = ("id", "name", "status", "created_at")
RUN_FIELDS = (
    "id",
    "task_id",
    "attempt",
    "status",
    "agent",
    "start_ns",
    "duration_ns",
    "span_count",
    "error_count",
    "input_tokens",
    "output_tokens",
    "cost",
    "reward_count",
    "reward_mean",
)


def _table(rows: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> dict[str, Any]:
    """Rows as {columns, rows}: a thousand executions name their keys once, not each time."""
    return {"columns": list(fields), "rows": [[row[key] for key in fields] for row in rows]}


def _embedded_json(data: Mapping[str, Any]) -> str:
    """The report's figures as JSON for scripts to read back, safe inside a `<script>`
    element (no `<`, `>` or `&` left to end it)."""
    summary = {
        "selection": data["selection"],
        "generated_at": data["generated_at"],
        "tasks": _table(data["tasks"], TASK_FIELDS),
        "executions": _table(data["runs"], RUN_FIELDS),
        "agents": [{k: v for k, v in a.items() if k != "series"} for a in data["agents"]],
        "rewards": data["rewards"]["summary"],
    }
    text = json.dumps(summary, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(data: Mapping[str, Any]) -> str:
    """The report's HTML from `gather`'s data."""
    # The dashboard's environment: its loader, filters and macros, so both read alike.
    template = ENV.get_template("report.html")
    return template.render(
        **data,
        charts=_charts(data),
        css=stylesheet(),
        data_json=_embedded_json(data),
    )
