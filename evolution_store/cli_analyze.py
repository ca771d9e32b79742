"""`evolution-store analyze`: the lab technician's report on a window of stored runs
(`evolution_store.learn.analyze`), printed or written as Markdown, HTML or JSON. `cli.py`
adds the command.

    evolution-store analyze --db sqlite:///./evolution.db
    evolution-store analyze --agent support --since 7d --format html -o report.html
    evolution-store analyze --agent support --propose --llm-base-url http://127.0.0.1:1234/v1
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .cli_learn import parse_since
from .cli_registry import _call_store
from .cli_train import needs_learn_extra


def _load_analyze() -> Callable[..., Any]:
    """`analyze`, or the one-line error naming the extra (`needs_learn_extra`)."""
    try:
        from .learn.analysis import analyze
    except ModuleNotFoundError as exc:
        raise needs_learn_extra("analyze", exc) from exc
    return analyze


def _render(report: Any, output_format: str) -> str:
    if output_format == "json":
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"
    if output_format == "html":
        return report.to_html()
    return report.to_markdown()


@click.command()
@click.option(
    "--db",
    metavar="URL",
    help="Database URL, opened in-process. "
    "[default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option("--agent", metavar="A", help="Only the executions with a span of agent A.")
@click.option(
    "--since",
    metavar="T",
    default="24h",
    show_default=True,
    callback=lambda _ctx, _param, value: parse_since(value),
    help="Executions created since T: ISO-8601 (2025-01-31T12:00:00Z) or a duration back "
    "from now (30m, 24h, 7d).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["md", "html", "json"]),
    default="md",
    show_default=True,
    help="Markdown, a self-contained HTML page, or the report as JSON.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the report to FILE instead of stdout.",
)
@click.option(
    "--propose",
    is_flag=True,
    help="Ask the LLM for a revised prompt for the top opportunities (at most 3) and store "
    "each as a registry draft (created_by lab) for a person to approve.",
)
@click.option(
    "--llm-base-url",
    metavar="URL",
    help="OpenAI-compatible base URL for --propose. [default: $EVOLUTION_LLM_BASE_URL, else "
    "$OPENAI_BASE_URL, else http://127.0.0.1:1234/v1]",
)
@click.option(
    "--model", metavar="M", help="Model name for --propose. [default: $EVOLUTION_LLM_MODEL]"
)
def analyze(
    db: str | None,
    agent: str | None,
    since: int,
    output_format: str,
    output: Path | None,
    propose: bool,
    llm_base_url: str | None,
    model: str | None,
) -> None:
    """Report what the stored runs of a window did and what to improve first.

    Executions and their success rate (Wilson interval), p50/p95/max duration per operation,
    the slowest steps and their share of run time, recurring errors grouped by type and
    normalised message, task names and tags with low success, active patterns, a regression
    since the newest marker, and a ranked list of opportunities with their evidence. Needs
    the [learn] extra. With --propose, drafts are stored in the registry, never approved.
    """
    run_analysis = _load_analyze()  # first: a missing extra must not cost a database read
    start = datetime.fromtimestamp(since / 1e9, UTC)

    async def work(store: Any) -> Any:
        return await run_analysis(
            store, agent=agent, since=start, propose=propose, llm=llm_base_url, model=model
        )

    try:
        report = _call_store(db, work)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    rendered = _render(report, output_format)
    if output is None:
        click.echo(rendered, nl=False)
    else:
        try:
            output.write_text(rendered, encoding="utf-8")
        except OSError as exc:
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
        click.echo(f"{report.summary()}; written to {output}", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    for proposal in report.proposals:
        click.echo(
            f"draft {proposal['prompt_id']} (agent {proposal['agent']}, version "
            f"{proposal['version']}) for {proposal['opportunity']}",
            err=True,
        )
