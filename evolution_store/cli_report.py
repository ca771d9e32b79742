"""`evolution-store report`: the static report, one self-contained HTML file (issue 22) that
opens from disk with no server and no network — to attach to an issue, mail, or keep. `cli.py`
adds the command; `api/ui/report.py` gathers and renders.

    evolution-store report --agent support --since 7d -o report.html
    evolution-store report --task 3f2a9c0d --db postgresql://postgres@127.0.0.1/evolution -o t.html
"""

from __future__ import annotations

from pathlib import Path

import click

from .cli_learn import parse_since
from .cli_registry import _call_store

#: traces shown as full waterfalls, and spans in each, unless told otherwise
WATERFALLS = 20
SPANS_PER_WATERFALL = 200
MAX_TASKS = 1000


@click.command()
@click.option("--task", "task_id", metavar="ID", help="Report on this task alone.")
@click.option("--agent", metavar="NAME", help="Report on the tasks this agent's spans ran under.")
@click.option(
    "--since",
    metavar="T",
    callback=lambda _ctx, _param, value: None if value is None else parse_since(value),
    help="Only tasks created since T: ISO-8601 (2025-01-31T12:00:00Z) or a duration back "
    "from now (30m, 24h, 7d, 2w).",
)
@click.option(
    "--db",
    metavar="URL",
    help="Database URL. [default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The HTML file to write.",
)
@click.option(
    "--max-tasks",
    metavar="N",
    type=click.IntRange(1, 100_000),
    default=MAX_TASKS,
    show_default=True,
    help="Report on at most this many tasks (the newest).",
)
@click.option(
    "--waterfalls",
    metavar="N",
    type=click.IntRange(0, 1000),
    default=WATERFALLS,
    show_default=True,
    help="Executions drawn as full span waterfalls (failed first, then the newest); "
    "the others are summary rows.",
)
@click.option(
    "--spans-per-waterfall",
    metavar="N",
    type=click.IntRange(1, 100_000),
    default=SPANS_PER_WATERFALL,
    show_default=True,
    help="Spans shown in each waterfall at most (the first by start time).",
)
def report(
    task_id: str | None,
    agent: str | None,
    since: int | None,
    db: str | None,
    output: Path,
    max_tasks: int,
    waterfalls: int,
    spans_per_waterfall: int,
) -> None:
    """Write a static HTML report: timeline, span waterfalls, metrics charts, rewards and
    patterns of one task (--task), an agent's tasks (--agent) or every task.

    The file is self-contained (styles, charts and data inline) and opens from disk with no
    network.
    """
    if task_id is not None and agent is not None:
        raise click.UsageError("give --task or --agent, not both")
    from api.ui.report import ReportOptions, build_report

    options = ReportOptions(
        task_id=task_id,
        agent=agent,
        since=since,
        max_tasks=max_tasks,
        waterfalls=waterfalls,
        spans_per_waterfall=spans_per_waterfall,
    )
    html = _call_store(db, lambda store: build_report(store, options))
    try:
        output.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    size = len(html.encode("utf-8"))
    click.echo(f"wrote {output} ({size / 1024:,.0f} KiB)", err=True)
