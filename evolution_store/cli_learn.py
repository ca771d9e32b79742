"""`evolution-store learn …`: learners that read what is stored and store what they find, run
from a terminal, outside the server process (DESIGN §7). `cli.py` adds the group.

`learn patterns` mines the executions in the store (`--db`, as the other commands) for the
conditions that go with success and failure (`evolution_store.learn.mine_patterns`), stores
them as pattern rows — the server's `GET /api/v1/patterns` serves them — and prints a table.

    evolution-store learn patterns --db sqlite:///./evolution.db
    evolution-store learn patterns --agent support --since 7d --outcome status --json
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click

from .cli_registry import _call_store, _store_url, _table
from .cli_train import needs_learn_extra

#: `--since` as a duration back from now: a number and a unit
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
#: the latest time a store holds (int64 nanoseconds)
MAX_NS = 2**63 - 1
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: the figures printed for an outcome measured as a rate
_RATES = frozenset({"success_rate"})


@click.group()
def learn() -> None:
    """Learners that mine the stored runs (they run here, never in the server)."""


def parse_since(value: str, *, now_ns: int | None = None) -> int:
    """`--since` as Unix nanoseconds: an ISO-8601 date or time (UTC unless it names a zone),
    or a duration back from now: `30m`, `24h`, `7d`, `2w`."""
    match = _DURATION.match(value)
    if match is not None:
        now = time.time_ns() if now_ns is None else now_ns
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
        return max(0, now - int(seconds * 1e9))
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither an ISO-8601 time (2025-01-31, 2025-01-31T12:00:00Z) nor a "
            f"duration (30m, 24h, 7d, 2w)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # Stored times are int64 nanoseconds (until 2262): a later time selects nothing, as it would.
    return min(max(0, int(when.timestamp() * 1e9)), MAX_NS)


def _load_miner() -> Callable[..., Any]:
    """`mine_patterns`, or the one-line error naming the extra, as `train` gives it."""
    try:
        from .learn.patterns import mine_patterns
    except ModuleNotFoundError as exc:
        raise needs_learn_extra("learn patterns", exc) from exc
    return mine_patterns


# -- printing -----------------------------------------------------------------------------------

PATTERN_COLUMNS = tuple(
    (key, key) for key in ("kind", "context", "condition", "effect", "q", "n", "id")
)


def context_name(context: dict[str, Any] | None) -> str:
    """A pattern's context as `GET /patterns?context=` names it: `overall`, `agent:<name>`,
    `task:<name>`; a context with both reads `agent:<name> task:<name>` (`?context=task:<name>`
    finds it)."""
    context = context or {}
    parts = [
        f"{key}:{context[field]}"
        for key, field in (("agent", "agent"), ("task", "task_name"))
        if context.get(field) is not None
    ]
    return " ".join(parts) or "overall"


def _figure(value: float | None, rate: bool) -> str:
    if value is None:
        return "-"
    if rate:
        return f"{value:.0%}"
    # Tokens and milliseconds read best whole; rewards and costs with three digits.
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def effect_text(effect: dict[str, Any]) -> str:
    """`success_rate 82% vs 51%`: the outcome with the condition against without it."""
    rate = effect.get("outcome") in _RATES
    with_, without = _figure(effect.get("with"), rate), _figure(effect.get("without"), rate)
    return f"{effect.get('outcome')} {with_} vs {without}"


def pattern_row(pattern: dict[str, Any]) -> dict[str, str]:
    """One table row: what a person scans for before reading the explanation."""
    evidence = pattern.get("evidence") or {}
    q = evidence.get("q_value")
    return {
        "kind": pattern["kind"],
        "context": context_name(pattern.get("context")),
        "condition": pattern["condition"],
        "effect": effect_text(pattern.get("effect") or {}),
        "q": "-" if q is None else f"{q:.2g}",
        "n": f"{evidence.get('n_with', '-')}/{evidence.get('n_without', '-')}",
        "id": pattern["id"],
    }


# -- the command --------------------------------------------------------------------------------


@learn.command()
@click.option(
    "--db",
    metavar="URL",
    help="Database URL, opened in-process. "
    "[default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option("--agent", metavar="A", help="Mine only the executions of agent A.")
@click.option(
    "--since",
    metavar="T",
    callback=lambda _ctx, _param, value: None if value is None else parse_since(value),
    help="Only executions created since T: ISO-8601 (2025-01-31T12:00:00Z) or a duration "
    "back from now (30m, 24h, 7d).",
)
@click.option(
    "--outcome",
    type=click.Choice(["reward", "status"]),
    default="reward",
    show_default=True,
    help="reward: the mean of each execution's linked rewards of --reward-name; status: "
    "whether it succeeded.",
)
@click.option(
    "--reward-name",
    metavar="N",
    default="reward",
    show_default=True,
    help="The rewards that make the outcome (rewards linked to an execution's spans, its "
    "trace, itself or its task).",
)
@click.option(
    "--min-support",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Executions a condition needs on each side (with and without) to be tested.",
)
@click.option(
    "--fdr",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.05,
    show_default=True,
    help="False discovery rate: patterns are kept at q ≤ FDR (Benjamini–Hochberg over every "
    "test of the run).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the patterns as JSON, not a table.")
def patterns(
    db: str | None,
    agent: str | None,
    since: int | None,
    outcome: str,
    reward_name: str,
    min_support: int,
    fdr: float,
    as_json: bool,
) -> None:
    """Find what goes with success and failure in the stored executions, and store it.

    Each condition (a config value or threshold, agent, task, tag, model, tool, ordered tool
    pair, error type, prompt) with enough support on both sides is tested — Fisher's exact
    test for a binary outcome, Mann–Whitney for a continuous one — overall and within each
    agent and task; Benjamini–Hochberg keeps those at q ≤ --fdr. Mining again updates the same
    condition's pattern and marks those no longer found stale. Serve them with
    `GET /api/v1/patterns`; apply one with `POST /api/v1/patterns/{id}/apply`.
    """
    mine_patterns = _load_miner()  # first: a missing extra must not cost a database read

    async def mine(store: Any) -> list[dict[str, Any]]:
        return await mine_patterns(
            store,
            agent=agent,
            since=since,
            outcome=outcome,
            reward_name=reward_name,
            min_support=min_support,
            fdr=fdr,
        )

    found = _call_store(db, mine)  # best first: lowest q, then the largest effect
    if as_json:
        click.echo(json.dumps(found, indent=2, ensure_ascii=False, default=str))
        return
    from .backends import redact_url

    where = redact_url(_store_url(db))
    if not found:
        click.echo(
            f"no pattern at q ≤ {fdr:g} (min support {min_support} on each side); "
            f"stale ones are marked in {where}"
        )
        return
    _table(PATTERN_COLUMNS, [pattern_row(pattern) for pattern in found])
    click.echo()
    click.echo(f"{len(found)} pattern(s) at q ≤ {fdr:g}, stored in {where}")
    for pattern in found[:3]:
        click.echo(f"- {pattern['explanation']}")
