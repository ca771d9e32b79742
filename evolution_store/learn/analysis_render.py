"""The lab technician's report as Markdown and as one self-contained HTML page (inline CSS, no
script, no network), both from `AnalysisReport.to_dict()`. Every value is escaped: span
names and error messages come from the traced application."""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

Row = dict[str, Any]
#: a section: its title, its columns (key, header), and the rows' source in the report
Column = tuple[str, str]


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _interval(ci: Sequence[float] | None) -> str:
    return "-" if not ci else f"{ci[0]:.1%}–{ci[1]:.1%}"


def _ids(ids: Sequence[str] | None) -> str:
    return ", ".join(ids or []) or "-"


def _error_row(error: Row) -> Row:
    return {**error, "example_span_ids": _ids(error["example_span_ids"])}


def _rate_row(group: Row) -> Row:
    return {
        **group,
        "success_rate": _percent(group["success_rate"]),
        "ci95": _interval(group["ci95"]),
    }


def _step_row(step: Row) -> Row:
    return {**step, "share": _percent(step["share"])}


def _opportunity_row(opportunity: Row) -> Row:
    return {**opportunity, "score": f"{opportunity['score']:.3f}"}


#: (title, report key, columns, row shaping)
SECTIONS: list[tuple[str, str, list[Column], Callable[[Row], Row]]] = [
    (
        "Opportunities, highest priority first",
        "opportunities",
        [("rank", "#"), ("kind", "kind"), ("title", "what"), ("score", "score"),
         ("agent", "agent")],
        _opportunity_row,
    ),
    (
        "Duration per operation (ms)",
        "operations",
        [("operation", "operation"), ("count", "n"), ("p50_ms", "p50"), ("p95_ms", "p95"),
         ("max_ms", "max"), ("total_ms", "total")],
        dict,
    ),
    (
        "Slowest steps",
        "slowest_steps",
        [("step", "step"), ("agent", "agent"), ("count", "n"), ("total_ms", "total ms"),
         ("mean_ms", "mean ms"), ("max_ms", "max ms"), ("share", "share of run time"),
         ("slowest_span_id", "slowest span")],
        _step_row,
    ),
    (
        "Recurring errors",
        "errors",
        [("count", "n"), ("type", "type"), ("message", "message"),
         ("example_span_ids", "example spans")],
        _error_row,
    ),
    (
        "Low-success task names and tags",
        "low_success",
        [("kind", "kind"), ("name", "name"), ("n", "n"), ("success_rate", "success"),
         ("ci95", "95% interval")],
        _rate_row,
    ),
    (
        "Active patterns",
        "patterns",
        [("kind", "kind"), ("condition", "condition"), ("explanation", "explanation"),
         ("q_value", "q")],
        dict,
    ),
    (
        "Proposals (registry drafts, awaiting approval)",
        "proposals",
        [("prompt_id", "prompt"), ("agent", "agent"), ("version", "version"),
         ("opportunity", "opportunity"), ("title", "for")],
        dict,
    ),
]  # fmt: skip


def _headline(report: Row) -> list[str]:
    window, executions = report["window"], report["executions"]
    lines = [
        f"Window {window['since']} to {window['until']}"
        + (f", agent {window['agent']}" if window["agent"] else ", all agents"),
        f"{executions['total']} executions ({executions['finished']} finished); success rate "
        f"{_percent(executions['success_rate'])} (95% {_interval(executions['ci95'])})",
    ]
    regression = report["regression"]
    if regression is not None:
        marker, before, after = regression["marker"], regression["before"], regression["after"]
        p_value = regression["p_value"]
        lines.append(
            f"Since marker {marker['kind']} at {marker['time']}: success "
            f"{_percent(before['success_rate'])} (n={before['n']}) before, "
            f"{_percent(after['success_rate'])} (n={after['n']}) after"
            + ("" if p_value is None else f", one-sided Fisher p={p_value:.3g}")
            + ("; a regression" if regression["regressed"] else "")
        )
    return lines


def _cells(columns: list[Column], row: Row) -> list[str]:
    return [_figure(row.get(key)) for key, _ in columns]


def _md_cell(cell: str) -> str:
    # `<n>`, `<uuid>` in a message would read as HTML tags to a Markdown renderer.
    return cell.replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def markdown(report: Row) -> str:
    """The report as Markdown: a headline, then one table per non-empty section."""
    lines = [f"# Lab report {report['id']}", "", *(f"- {line}" for line in _headline(report))]
    for title, key, columns, shape in SECTIONS:
        rows = report[key]
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("(none)")
            continue
        lines.append("| " + " | ".join(header for _, header in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in rows:
            cells = (_md_cell(cell) for cell in _cells(columns, shape(row)))
            lines.append("| " + " | ".join(cells) + " |")
    if report["notes"]:
        lines += ["", "## Notes", "", *(f"- {note}" for note in report["notes"])]
    return "\n".join(lines) + "\n"


_STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f2f2f2}td{word-break:break-word}.none{color:#777}"""


def html_page(report: Row) -> str:
    """The report as one HTML page that needs nothing else (no script, no external file)."""
    e = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Lab report {e(report['id'])}</title><style>{_STYLE}</style></head><body>",
        f"<h1>Lab report {e(report['id'])}</h1>",
        "<ul>" + "".join(f"<li>{e(line)}</li>" for line in _headline(report)) + "</ul>",
    ]
    for title, key, columns, shape in SECTIONS:
        parts.append(f"<h2>{e(title)}</h2>")
        rows = report[key]
        if not rows:
            parts.append('<p class="none">(none)</p>')
            continue
        head = "".join(f"<th>{e(header)}</th>" for _, header in columns)
        body = "".join(
            "<tr>"
            + "".join(f"<td>{e(cell)}</td>" for cell in _cells(columns, shape(row)))
            + "</tr>"
            for row in rows
        )
        parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    if report["notes"]:
        parts.append("<h2>Notes</h2><ul>")
        parts.extend(f"<li>{e(note)}</li>" for note in report["notes"])
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
