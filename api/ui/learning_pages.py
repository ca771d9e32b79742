"""The pages of what the learners found and proposed: patterns (with an Apply button) and
prompts (versions, lineage with fitness, diff, Approve / Roll back, running experiments, and
an optimisation run's candidates against the Pareto front).

The buttons are plain HTML forms posting to these routes, which check the key may write
(`auth.require_write`) and then call the same store methods as the API's routes; the
change's marker is written by the store in the same transaction. After a press the browser
is sent back to the page (303), which shows the new state.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from evolution_store.registry_models import ApproveIn

from ..deps import StoreDep
from .auth import Viewer, require_write, safe_next, viewer
from .pages import next_page_url, query_url
from .render import PageRoute, choice, plain, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
Who = Annotated[Viewer, Depends(viewer)]

PATTERN_KINDS = ("success", "failure", "optimization")
PATTERN_STATUSES = ("active", "stale", "applied")
#: prompt versions a prompts page lists (newest first) and draws in the lineage tree
PROMPTS_SHOWN = 200
LINEAGE_SHOWN = 60
#: running experiments whose live results a prompts page computes
EXPERIMENTS_SHOWN = 5
_RUN_NOTE = re.compile(r"^apo run (?P<run>[^:]+):")


async def _form(request: Request) -> dict[str, str]:
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    return {key: values[0] for key, values in fields.items()}


# -- patterns --------------------------------------------------------------------------------


@router.get("/patterns", response_class=HTMLResponse)
async def patterns_page(
    request: Request,
    store: StoreDep,
    who: Who,
    agent: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
):
    """Patterns by q (strongest evidence first), with effect, interval, context and evidence."""
    filters = {
        "agent": plain("agent", agent, most=200),
        "kind": choice("kind", kind, PATTERN_KINDS),
        "status": choice("status", status, PATTERN_STATUSES),
    }
    page = await store.list_patterns(**filters, cursor=plain("cursor", cursor, most=1000), limit=50)
    next_url = next_page_url("/patterns", filters, page.next_cursor)
    return render(
        request,
        "patterns.html",
        viewer=who,
        patterns=page.items,
        filters=filters,
        kinds=PATTERN_KINDS,
        statuses=PATTERN_STATUSES,
        next_url=next_url,
    )


@router.post("/patterns/{pattern_id}/apply")
async def apply_pattern(request: Request, pattern_id: str, store: StoreDep, who: Who) -> Response:
    """The Apply button: turn the pattern into a proposal (a marker records it)."""
    require_write(request, who)
    form = await _form(request)
    await store.apply_pattern(
        plain("pattern_id", pattern_id, most=200) or "", applied_by=who.approver
    )
    return RedirectResponse(safe_next(form.get("next") or "/patterns"), status_code=303)


# -- prompts ---------------------------------------------------------------------------------


def pareto_front(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`points` ({x: tokens, y: success}) with `on_front`: no other point has at least
    the success for at most the tokens, and is better in one of them."""
    for p in points:
        p["on_front"] = not any(
            q is not p
            and q["y"] >= p["y"]
            and q["x"] <= p["x"]
            and (q["y"], -q["x"]) != (p["y"], -p["x"])
            for q in points
        )
    return points


def optimisation_runs(prompts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The agent's APO candidates by run id (newest run first), from the note the recorder
    writes on each (`apo run <id>: <origin>`)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for prompt in prompts:
        match = _RUN_NOTE.match(prompt.get("note") or "")
        if prompt["created_by"] == "apo" and match:
            runs.setdefault(match["run"], []).append(prompt)
    return runs


def candidate_points(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    points = []
    for prompt in candidates:
        fitness = prompt.get("fitness") or {}
        if fitness.get("success") is None or fitness.get("tokens") is None:
            continue
        points.append(
            {
                "x": fitness["tokens"],
                "y": fitness["success"],
                "label": f"v{prompt['version']} ({prompt['status']})",
                "href": f"#prompt-{prompt['id']}",
            }
        )
    return pareto_front(points)


@router.get("/prompts", response_class=HTMLResponse)
async def prompts_page(
    request: Request,
    store: StoreDep,
    who: Who,
    agent: str | None = None,
    diff: str | None = None,
    against: str | None = None,
    run: str | None = None,
):
    """Without `agent`, the agents with prompts; with it, that agent's registry."""
    agent = plain("agent", agent, most=200)
    agents = await store.ui_prompt_agents()
    if not agent:
        return render(request, "prompts.html", viewer=who, agents=agents, agent=None)
    page = await store.list_prompts(agent=agent, limit=PROMPTS_SHOWN)
    versions = page.items
    lineage = [
        {
            "id": p["id"],
            "parent_ids": p["parent_ids"],
            "label": f"v{p['version']}",
            "fitness": (p.get("fitness") or {}).get("success"),
            "status": p["status"],
            "href": f"#prompt-{p['id']}",
        }
        for p in versions[:LINEAGE_SHOWN]
    ]
    compared = None
    if diff and against:
        compared = await store.prompt_diff(
            plain("diff", diff, most=64) or "", plain("against", against, most=64) or ""
        )
    running = await store.list_experiments(agent=agent, status="running", limit=EXPERIMENTS_SHOWN)
    experiments = [await store.get_experiment(e["id"]) for e in running.items]
    runs = optimisation_runs(versions)
    chosen = plain("run", run, most=200) or next(iter(runs), None)
    return render(
        request,
        "prompts.html",
        viewer=who,
        agents=agents,
        agent=agent,
        versions=versions,
        more_versions=page.next_cursor is not None,
        lineage=lineage,
        compared=compared,
        # Unless asked, the compare form offers the production version against the newest.
        diff_from=against or next((p["id"] for p in versions if p["status"] == "production"), ""),
        diff_to=diff or (versions[0]["id"] if versions else ""),
        experiments=experiments,
        runs=list(runs),
        run=chosen,
        points=candidate_points(runs.get(chosen, [])) if chosen else [],
        here=query_url("/prompts", agent=agent),
    )


@router.post("/prompts/{prompt_id}/approve")
async def approve_prompt(request: Request, prompt_id: str, store: StoreDep, who: Who) -> Response:
    """Approve (a candidate) or roll back to (an archived version): it becomes production,
    the previous production prompt is archived, and a marker records who and when."""
    require_write(request, who)
    form = await _form(request)
    note = (form.get("note") or "").strip() or None
    prompt = await store.approve_prompt(
        plain("prompt_id", prompt_id, most=64) or "", ApproveIn(note=note), approved_by=who.approver
    )
    back = form.get("next") or query_url("/prompts", agent=prompt["agent"])
    return RedirectResponse(safe_next(back), status_code=303)


# -- reports ---------------------------------------------------------------------------------

REPORT_KINDS = ("analysis", "patterns")


@router.get("/reports", response_class=HTMLResponse)
async def reports_page(
    request: Request,
    store: StoreDep,
    who: Who,
    kind: str | None = None,
    agent: str | None = None,
    cursor: str | None = None,
):
    """The reports the worker stored (`evolution-store worker`), newest first, and the runs
    a person can start now."""
    filters = {
        "kind": choice("kind", kind, REPORT_KINDS),
        "agent": plain("agent", agent, most=200),
    }
    page = await store.list_reports(**filters, cursor=plain("cursor", cursor, most=1000), limit=50)
    next_url = next_page_url("/reports", filters, page.next_cursor)
    return render(
        request,
        "reports.html",
        viewer=who,
        reports=page.items,
        filters=filters,
        kinds=REPORT_KINDS,
        next_url=next_url,
    )


@router.get("/reports/{report_id}", response_class=HTMLResponse)
async def report_page(request: Request, report_id: str, store: StoreDep, who: Who):
    """One stored report: its own self-contained page when it has one, else its Markdown."""
    report_id = plain("report_id", report_id, most=200) or ""
    html = await store.report_text(report_id, "html")
    if html is not None:
        return HTMLResponse(html)
    return render(request, "report_text.html", viewer=who, report=await store.get_report(report_id))


@router.post("/jobs/{job}/run")
async def run_job(request: Request, job: str, store: StoreDep, who: Who) -> Response:
    """The Run now button: a request the worker picks up (the server never runs a job)."""
    require_write(request, who)
    form = await _form(request)
    await store.request_job_run(
        plain("job", job, most=100) or "", agent=plain("agent", form.get("agent"), most=200)
    )
    return RedirectResponse("/reports", status_code=303)
