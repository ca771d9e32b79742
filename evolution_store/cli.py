"""The `evolution-store` command. Each command parses its flags, calls one library function
and prints; a startup failure is one line on stderr and a non-zero exit, never a traceback.

    evolution-store serve                       # SQLite ./evolution.db, API on 127.0.0.1:8000
    evolution-store serve --db postgresql://postgres@127.0.0.1:5432/evolution
    evolution-store db upgrade --db sqlite:///./evolution.db
    evolution-store prompts list --agent support          # the registry: cli_registry.py
    evolution-store experiments show <id> --url http://127.0.0.1:8000
    evolution-store train apo --agent support --seed-prompt p.j2 --dataset ex.jsonl \\
        --evaluate my_eval:evaluate --out apo-run              # learners: cli_train.py
    evolution-store learn patterns --agent support --since 7d  # miners: cli_learn.py
"""

from __future__ import annotations

from typing import Any

import click

from .cli_analyze import analyze
from .cli_export import export
from .cli_learn import learn
from .cli_ppo import ppo
from .cli_registry import experiments, prompts
from .cli_report import report
from .cli_train import train
from .cli_worker import worker

PORT = click.IntRange(0, 65535)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="evolution-store", prog_name="evolution-store")
def cli() -> None:
    """evolution-store: an OpenTelemetry-native tracing store and reward-linking server for
    self-improving LLM agents."""


def _settings(**overrides: Any) -> Any:
    """Settings from the environment (EVOLUTION_*), with the flags that were given on top."""
    from pydantic import ValidationError

    from .config import Settings

    try:
        return Settings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise click.ClickException(f"invalid setting {field}: {first['msg']}") from exc


@cli.command()
@click.option(
    "--db",
    "store_url",
    metavar="URL",
    help="Database URL: sqlite:///path.db or postgresql://user@host/db. "
    "[default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option("--host", metavar="HOST", help="Interface to bind. [default: 127.0.0.1]")
@click.option(
    "--port",
    type=PORT,
    metavar="PORT",
    help="REST API port (it also serves /v1/traces); 0 disables. [default: 8000]",
)
@click.option(
    "--otlp-http-port",
    type=PORT,
    metavar="PORT",
    help="OTLP/HTTP port (/v1/traces); 0 disables. [default: 4318]",
)
@click.option(
    "--otlp-grpc-port",
    type=PORT,
    metavar="PORT",
    help="OTLP/gRPC port; 0 disables. [default: 4317]",
)
@click.option(
    "--otlp-decode-workers",
    type=click.IntRange(0, 32),
    metavar="N",
    help="Worker processes that decode OTLP bodies; 0 decodes on the event loop. "
    "[default: 1 with two or more CPUs, else 0]",
)
def serve(
    store_url: str | None,
    host: str | None,
    port: int | None,
    otlp_http_port: int | None,
    otlp_grpc_port: int | None,
    otlp_decode_workers: int | None,
) -> None:
    """Run the server: REST API, OTLP over HTTP and gRPC, one store.

    Migrates the database on start. SIGTERM or Ctrl+C stops intake, commits every request
    already accepted, and exits 0. Set EVOLUTION_API_KEYS to require API keys.
    """
    settings = _settings(
        store_url=store_url,
        host=host,
        port=port,
        otlp_http_port=otlp_http_port,
        otlp_grpc_port=otlp_grpc_port,
        otlp_decode_workers=otlp_decode_workers,
    )
    from api.serve import ServeError, run

    try:
        run(settings, echo=lambda line: click.echo(line, err=True))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@click.option(
    "--db",
    "store_url",
    metavar="URL",
    help="Database URL. [default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
def upgrade(store_url: str | None) -> None:
    """Migrate the database to the latest schema (serve also does this on start)."""
    from sqlalchemy.exc import SQLAlchemyError

    from .backends import redact_url
    from .db_errors import first_line
    from .errors import EvolutionStoreError
    from .migrate import upgrade as upgrade_database

    settings = _settings(store_url=store_url)
    shown = redact_url(settings.store_url)
    try:
        upgrade_database(settings.store_url)
    except (EvolutionStoreError, SQLAlchemyError, OSError) as exc:
        raise click.ClickException(f"cannot upgrade {shown}: {first_line(exc)}") from exc
    click.echo(f"{shown} is at the latest schema")


cli.add_command(prompts)
cli.add_command(experiments)
train.add_command(ppo)
cli.add_command(train)
cli.add_command(learn)
cli.add_command(report)
cli.add_command(worker)
cli.add_command(analyze)
cli.add_command(export)
