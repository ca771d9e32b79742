"""`evolution-store export`: an agent's traced, rewarded LLM calls as a fine-tuning dataset
(TRL SFT/DPO/KTO, VERL, triplets). The shapes are `evolution_store.learn.export`'s; this
parses, shows progress, and prints what was written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .cli_learn import parse_since
from .cli_registry import _call_store
from .cli_train import needs_learn_extra

#: the formats `export()` writes (repeated here so `--help` works without the [learn] extra)
FORMATS = ("trl-sft", "trl-dpo", "trl-kto", "triplets", "verl")


class _Counter:
    """Calls read so far, redrawn in place on a terminal (stderr); silent otherwise, so a
    redirected log gets only the final line."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.drawn = False

    def __call__(self, read: int) -> None:
        if self.tty:
            click.echo(f"\rexporting: {read:,} calls read\x1b[K", err=True, nl=False, color=True)
            self.drawn = True

    def close(self) -> None:
        if self.drawn:
            click.echo("", err=True)


@click.command("export")
@click.option(
    "--format",
    "format_",
    required=True,
    type=click.Choice(FORMATS),
    help="trl-sft (messages), trl-dpo (prompt/chosen/rejected), trl-kto (prompt/completion/"
    "label), triplets (prompt/response/reward/metadata, JSON lines), verl (Parquet).",
)
@click.option("--agent", required=True, metavar="NAME", help="The agent whose LLM calls to export.")
@click.option(
    "--db",
    metavar="URL",
    help="Database URL. [default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option(
    "--reward-name",
    default="reward",
    show_default=True,
    metavar="NAME",
    help="Which linked reward scores a call.",
)
@click.option(
    "--min-reward",
    type=float,
    metavar="X",
    help="trl-sft, triplets: only calls rewarded at least X; trl-kto: the label's threshold "
    "(else reward > 0); verl: a call reaching X gives its completion as ground truth.",
)
@click.option(
    "--margin",
    type=float,
    default=0.5,
    show_default=True,
    metavar="X",
    help="trl-dpo: the least reward difference between chosen and rejected.",
)
@click.option(
    "--since",
    metavar="T",
    callback=lambda _ctx, _param, value: None if value is None else parse_since(value),
    help="Only calls started since T: ISO-8601 (2025-01-31T12:00:00Z) or a duration back from "
    "now (30m, 24h, 7d).",
)
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="The file to write (replaced).",
)
def export(
    format_: str,
    agent: str,
    db: str | None,
    reward_name: str,
    min_reward: float | None,
    margin: float,
    since: int | None,
    out: Path,
) -> None:
    """Export AGENT's traced LLM calls and their linked rewards for fine-tuning.

    The prompt and completion come from the span's gen_ai or OpenInference messages, or from
    what @track_evolution captured. Memory stays flat whatever the store's size (trl-dpo keeps
    each prompt's distinct completions to pair them).
    """
    try:
        from .learn.export import export as write_export
    except ModuleNotFoundError as exc:
        raise needs_learn_extra("export", exc) from exc
    counter = _Counter()

    async def run(store: Any) -> int:
        return await write_export(
            store,
            format_,
            agent=agent,
            out=out,
            reward_name=reward_name,
            min_reward=min_reward,
            since=since,
            margin=margin,
            progress=counter,
        )

    try:
        written = _call_store(db, run)
    except ModuleNotFoundError as exc:  # pyarrow, for verl
        raise needs_learn_extra(f"export --format {format_}", exc) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        counter.close()
    click.echo(f"wrote {written:,} {format_} records to {out}")
