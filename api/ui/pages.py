"""The dashboard's reading pages: overview, agent, tasks, task, trace (with span detail) and
rewards, plus the login form. Server-rendered: every link works without JavaScript, and
every filter is in the query string, so a URL shows the same page to whoever opens it.

Pages read through the store's methods (the API's queries, and `UiReads` for what the API
has no query for); none reads more than a bounded number of rows (`ui_queries`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from evolution_store.models import normalize_span_id, normalize_trace_id
from evolution_store.queries import RewardQuery

from ..deps import StoreDep
from .auth import COOKIE, Viewer, check_key, safe_next, viewer
from .render import BadParameter, PageRoute, choice, parse_time, plain, render
from .waterfall import waterfall_rows

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Who = Annotated[Viewer, Depends(viewer)]

TASK_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
#: agents the overview shows at most, and the newest spans it reads of each (an agent's own
#: page reads `ui_queries.RECENT_CAP`)
OVERVIEW_AGENTS = 50
OVERVIEW_SPANS = 2_000
TASKS_PER_PAGE = 50
#: how long the login cookie lasts (seconds)
COOKIE_AGE = 30 * 86400


def query_url(path: str, **params: Any) -> str:
    """`path` with the non-empty `params` as its query string."""
    kept = {key: value for key, value in params.items() if value not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


def next_page_url(path: str, filters: dict[str, Any], next_cursor: str | None) -> str | None:
    """The link to a list's next page, its filters kept; None on the last page."""
    return query_url(path, **filters, cursor=next_cursor) if next_cursor else None


def with_points(summary: dict[str, Any]) -> dict[str, Any]:
    """`summary` (`ui_agent_summary`) with its time buckets as chart points per figure."""
    summary["points"] = {
        key: [(b["t"], b[key]) for b in summary["series"] if b[key] is not None]
        for key in ("runs", "success_rate", "p50_ms")
    }
    return summary


def _ns(iso_time: str | None) -> int | None:
    if not iso_time:
        return None
    return int(datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp() * 1e9)


# -- overview and agent ----------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request, store: StoreDep, who: Who, since: str | None = None):
    """One row per agent with small charts, and the newest markers."""
    start = parse_time("since", since)
    names = await store.ui_agents(limit=OVERVIEW_AGENTS)
    summaries = [
        with_points(await store.ui_agent_summary(name, since=start, cap=OVERVIEW_SPANS))
        for name in names
    ]
    markers = await store.ui_recent_markers(limit=10)
    return render(
        request,
        "overview.html",
        viewer=who,
        agents=summaries,
        markers=markers,
        since=since or "",
        more_agents=len(names) == OVERVIEW_AGENTS,
    )


@router.get("/agents/{agent}", response_class=HTMLResponse)
async def agent_page(
    request: Request, agent: str, store: StoreDep, who: Who, since: str | None = None
):
    """An agent's figures over time with its markers, and its newest tasks."""
    agent = plain("agent", agent) or ""
    start = parse_time("since", since)
    summary = with_points(await store.ui_agent_summary(agent, since=start))
    markers = await store.ui_recent_markers(agent=agent, limit=50)
    tasks = await store.list_tasks(agent=agent, since=start, limit=20)
    return render(
        request,
        "agent.html",
        viewer=who,
        agent=agent,
        summary=summary,
        markers=markers,
        tasks=tasks.items,
        all_tasks_url=query_url("/tasks", agent=agent, since=since),
        since=since or "",
    )


# -- tasks -----------------------------------------------------------------------------------


@router.get("/tasks", response_class=HTMLResponse)
async def tasks_page(
    request: Request,
    store: StoreDep,
    who: Who,
    agent: str | None = None,
    status: str | None = None,
    tag: str | None = None,
    since: str | None = None,
    until: str | None = None,
    cursor: str | None = None,
):
    """Tasks newest first, filtered by agent, status, tag and creation time."""
    filters = {
        "agent": plain("agent", agent),
        "status": choice("status", status, TASK_STATUSES),
        "tag": plain("tag", tag, most=200),
        "since": plain("since", since, most=40),
        "until": plain("until", until, most=40),
    }
    page = await store.list_tasks(
        agent=filters["agent"],
        status=filters["status"],
        tag=filters["tag"],
        since=parse_time("since", since),
        until=parse_time("until", until),
        cursor=plain("cursor", cursor, most=1000),
        limit=TASKS_PER_PAGE,
    )
    next_url = next_page_url("/tasks", filters, page.next_cursor)
    return render(
        request,
        "tasks.html",
        viewer=who,
        tasks=page.items,
        filters=filters,
        agents=await store.ui_agents(),
        statuses=TASK_STATUSES,
        next_url=next_url,
    )


@router.get("/tasks/{task_id}", response_class=HTMLResponse)
async def task_page(request: Request, task_id: str, store: StoreDep, who: Who):
    """A task: its executions on a timeline with their status and rewards, and its traces."""
    task = await store.get_task(plain("task_id", task_id, most=200) or "")
    executions = await store.list_executions(task["id"])
    traces = await store.ui_task_traces(task["id"])
    rewards = await store.ui_task_rewards(task["id"])
    by_execution: dict[str, list[dict[str, Any]]] = {}
    for trace in traces:
        by_execution.setdefault(trace["execution_id"], []).append(trace)
    bars = []
    for execution in executions:
        own = by_execution.get(execution["id"], [])
        start = min((t["start_ns"] for t in own), default=_ns(execution["created_at"]))
        end = max((t["end_ns"] for t in own), default=_ns(execution["ended_at"]))
        execution["traces"] = own
        execution["rewards"] = [r for r in rewards if r["execution_id"] == execution["id"]]
        bars.append(
            {
                "label": f"attempt {execution['attempt']}",
                "start_ns": start,
                "end_ns": end,
                "status": execution["status"],
                "href": f"/traces/{own[0]['trace_id']}" if own else None,
                "title": f"attempt {execution['attempt']}: {execution['status']}",
            }
        )
    starts = [bar["start_ns"] for bar in bars if bar["start_ns"] is not None]
    ends = [bar["end_ns"] or bar["start_ns"] for bar in bars if bar["start_ns"] is not None]
    markers = []
    if starts:
        window = (min(starts), max(ends))
        markers = [
            (m["time_unix_nano"], f"{m['kind']} ({m['agent']})")
            for m in await store.ui_recent_markers(limit=200)
            if window[0] <= m["time_unix_nano"] <= window[1]
        ]
    return render(
        request,
        "task.html",
        viewer=who,
        task=task,
        executions=executions,
        bars=bars,
        markers=markers,
        task_rewards=[r for r in rewards if r["execution_id"] is None],
    )


# -- traces and spans ------------------------------------------------------------------------


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
async def trace_page(
    request: Request, trace_id: str, store: StoreDep, who: Who, span: str | None = None
):
    """The waterfall of a trace; `?span=` opens that span's detail beside it."""
    trace_id = normalize_trace_id(trace_id)
    trace = await store.ui_trace(trace_id)
    if not trace["spans"]:
        return render(
            request,
            "error.html",
            status=404,
            viewer=who,
            status_code=404,
            message=f"trace {trace_id!r} has no spans (yet)",
        )
    rows = waterfall_rows(trace["spans"], href=lambda s: f"?span={s['span_id']}#detail")
    detail = await _span_detail(store, trace_id, span) if span else None
    first = trace["spans"][0]
    return render(
        request,
        "trace.html",
        viewer=who,
        trace_id=trace_id,
        rows=rows,
        capped=trace["capped"],
        errors=sum(1 for row in rows if row["is_error"]),
        rewarded=sum(1 for row in rows if row["reward_count"]),
        task_id=first["task_id"],
        detail=detail,
        selected=detail["span"]["span_id"] if detail else None,
        detail_url=f"/traces/{trace_id}/spans/{{}}",
    )


async def _span_detail(store: Any, trace_id: str, span_id: str) -> dict[str, Any]:
    span_id = normalize_span_id(span_id)
    return {
        "span": await store.get_span(span_id, trace_id=trace_id),
        "rewards": await store.span_rewards(span_id, trace_id=trace_id),
    }


@router.get("/traces/{trace_id}/spans/{span_id}", response_class=HTMLResponse)
async def span_fragment(request: Request, trace_id: str, span_id: str, store: StoreDep, who: Who):
    """One span's detail as an HTML fragment, for ui.js to open without a reload."""
    detail = await _span_detail(store, normalize_trace_id(trace_id), span_id)
    return render(request, "_span_detail.html", detail=detail)


@router.get("/spans/{span_id}")
async def span_by_id(request: Request, span_id: str, store: StoreDep, who: Who) -> Response:
    """A span known by its id alone (a pattern's evidence): to its place in its trace."""
    span = await store.get_span(normalize_span_id(span_id))
    target = f"/traces/{span['trace_id']}?span={span['span_id']}#detail"
    return RedirectResponse(target, status_code=303)


# -- rewards ---------------------------------------------------------------------------------


@router.get("/rewards", response_class=HTMLResponse)
async def rewards_page(
    request: Request,
    store: StoreDep,
    who: Who,
    group_by: str | None = None,
    tag: str | None = None,
    name: str | None = None,
):
    """`rewards/summary` as a table and an interval chart, grouped as asked."""
    group = plain("group_by", group_by, most=200) or "name"
    if group not in ("name", "tag", "agent") and not (
        group.startswith("config:") and len(group) > len("config:")
    ):
        raise BadParameter("group_by", "name, tag, agent or config:<key>")
    query = RewardQuery(tag=plain("tag", tag, most=200), name=plain("name", name, most=200))
    groups = await store.rewards_summary(group, query)
    recent = await store.list_rewards(RewardQuery(tag=query.tag, name=query.name, limit=20))
    return render(
        request,
        "rewards.html",
        viewer=who,
        groups=groups,
        recent=recent.items,
        group_by=group,
        tag=query.tag or "",
        name=query.name or "",
    )


# -- login -----------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None):  # noqa: A002 - the URL's name
    return render(request, "login.html", next_url=safe_next(next), message=None)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the key; keep it in an HttpOnly, SameSite=Strict cookie; go back."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    next_url = safe_next((form.get("next") or ["/"])[0])
    if not request.app.state.api_keys:
        return RedirectResponse(next_url, status_code=303)
    try:
        check_key(request, key)
    except HTTPException:
        return render(
            request,
            "login.html",
            status=401,
            next_url=next_url,
            message="That key is not one of this server's keys.",
        )
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        max_age=COOKIE_AGE,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, httponly=True, samesite="strict")
    return response
