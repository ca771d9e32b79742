"""`evolution-store worker`: the analysis and pattern mining on a schedule, and the "run now"
requests the server records (`POST /api/v1/jobs/{name}/run`), in this process — never in the
server's (DESIGN §7). `cli.py` adds the command; `evolution_store.worker` does the work.

    evolution-store worker --db sqlite:///./evolution.db            # every hour, adaptive
    evolution-store worker --every 30m --min-every 5m --agent support
    evolution-store worker --once                                   # each job now, then exit
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import click

from .cli_registry import _store_url
from .cli_train import needs_learn_extra

#: an interval: a number and an optional unit (seconds by default)
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_interval(value: str | float) -> float:
    """`--every` / `--min-every` in seconds: `90`, `90s`, `30m`, `1h`, `1d`; at least 1 s."""
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _INTERVAL.match(value)
        if match is None:
            raise click.BadParameter(f"{value!r} is not an interval such as 90s, 30m, 1h or 1d")
        seconds = float(match.group(1)) * _SECONDS[match.group(2).lower()]
    if seconds < 1:
        raise click.BadParameter(f"{value!r} is shorter than one second")
    return seconds


def _interval_option(_ctx: click.Context, _param: click.Parameter, value: Any) -> float:
    return parse_interval(value)


def run_line(run: dict[str, Any]) -> str:
    """One finished run for the terminal: what, why, how it went, and where its report is."""
    head = f"{run['job']} ({run['trigger']}"
    head += f", agent {run['agent']})" if run["agent"] else ")"
    if run["status"] == "failed":
        return f"{head} failed: {run['error']}"
    figures = ", ".join(f"{key} {value}" for key, value in (run["result"] or {}).items())
    report = f"; report {run['report_id']}" if run["report_id"] else ""
    return f"{head} succeeded: {figures or 'done'}{report}"


def _load_jobs() -> None:
    """The jobs' learners, or the one-line error naming the extra they need."""
    try:
        import evolution_store.learn.analysis  # noqa: F401
        import evolution_store.learn.patterns  # noqa: F401
    except ModuleNotFoundError as exc:
        raise needs_learn_extra("worker", exc) from exc


@click.command()
@click.option(
    "--db",
    metavar="URL",
    help="Database URL, opened in-process (the server's database). "
    "[default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option(
    "--every",
    metavar="T",
    default="1h",
    show_default=True,
    callback=_interval_option,
    help="Run the analysis and pattern mining every T (90s, 30m, 1h, 1d); sooner while the "
    "success rate falls.",
)
@click.option(
    "--min-every",
    metavar="T",
    default="5m",
    show_default=True,
    callback=_interval_option,
    help="The shortest interval the schedule goes down to while the success rate falls "
    "(it halves for each analysis in a row that saw it drop).",
)
@click.option("--agent", metavar="A", help="Look only at agent A's runs. [default: every agent]")
@click.option(
    "--once",
    is_flag=True,
    help="Run each job now, and any run-now request waiting, then exit (non-zero if a job failed).",
)
@click.pass_context
def worker(
    ctx: click.Context,
    db: str | None,
    every: float,
    min_every: float,
    agent: str | None,
    once: bool,
) -> None:
    """Run the lab technician's analysis and pattern mining on a schedule, and the runs
    requested with POST /api/v1/jobs/{name}/run (checked every 2 s).

    Every run is recorded (GET /api/v1/jobs) and its report stored (GET /api/v1/reports); a
    failing job is recorded with its error and the worker goes on. SIGTERM or Ctrl+C lets the
    job in progress finish, then exits 0. Needs the learn extra.
    """
    _load_jobs()  # first: a missing extra must not cost a database connection
    from .backends import redact_url
    from .errors import EvolutionStoreError
    from .worker import WorkerSettings, run_worker

    url = _store_url(db)
    settings = WorkerSettings(every=every, min_every=min(min_every, every), agent=agent)
    if not once:
        click.echo(
            f"worker on {redact_url(url)}: analysis and patterns every {every:g} s "
            f"(down to {settings.min_every:g} s while success falls); Ctrl+C stops",
            err=True,
        )
    try:
        runs = asyncio.run(
            run_worker(url, settings, once=once, on_run=lambda run: click.echo(run_line(run)))
        )
    except EvolutionStoreError as exc:
        raise click.ClickException(f"worker on {redact_url(url)}: {exc}") from exc
    if any(run["status"] == "failed" for run in runs):
        ctx.exit(1)
