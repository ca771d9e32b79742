"""`/reports`: what the worker's jobs stored — the lab technician's analyses and pattern
mining runs — newest first by their summaries, and one report whole: as JSON (its body and
Markdown), or rendered as Markdown or as a self-contained HTML page (`?format=`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from evolution_store.errors import NotFound

from ..deps import Cursor, Limit, ReadAuth, StoreDep, Text

router = APIRouter(prefix="/reports", tags=["reports"], dependencies=[ReadAuth])

_TEXT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The report: JSON, or with `format=markdown` / `format=html` its rendering",
        "content": {
            "text/markdown": {"schema": {"type": "string"}},
            "text/html": {"schema": {"type": "string"}},
        },
    },
    404: {"description": "No such report, or none stored in the format asked for"},
}


ReportFormat = Annotated[
    Literal["json", "markdown", "html"],
    Query(alias="format", description="`json`, `markdown` or `html`"),
]


class MarkdownResponse(PlainTextResponse):
    media_type = "text/markdown"


@router.get("")
async def list_reports(
    store: StoreDep,
    kind: Text = None,
    agent: Text = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Reports, newest first: `{id, kind (analysis|patterns), agent, created_at, window:
    {start, end}, summary, job_run_id, has_html}` — the summary holds the headline figures
    (executions, success rate, opportunities, …); read the whole report by its id."""
    page = await store.list_reports(kind=kind, agent=agent, cursor=cursor, limit=limit)
    return {"items": page.items, "next_cursor": page.next_cursor}


@router.get("/{report_id}", responses=_TEXT_RESPONSES)
async def get_report(report_id: str, store: StoreDep, fmt: ReportFormat = "json") -> Any:
    """One report. `json` (default): the summary plus `body` (everything the job found) and
    `markdown`; `markdown`: the Markdown as `text/markdown`; `html`: a self-contained page."""
    if fmt == "json":
        return await store.get_report(report_id)
    text = await store.report_text(report_id, fmt)
    if text is None:
        raise NotFound(f"report {report_id!r} was stored without {fmt}")
    response: type[Response] = HTMLResponse if fmt == "html" else MarkdownResponse
    return response(text)
