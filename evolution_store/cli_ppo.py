"""`evolution-store train ppo`: learn a decision's policy from the decisions an agent logged
and the rewards linked to them (`evolution_store.learn.ppo`), write it where
`instrumentation.Policy.load` reads it and, with `--register`, into the prompt registry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .cli_learn import parse_since
from .cli_registry import _call_store
from .cli_train import needs_learn_extra

PPO_FILES = ("learned_policy.json", "policy.json")


@click.command("ppo")
@click.option("--agent", required=True, metavar="NAME", help="The agent whose decisions are read.")
@click.option(
    "--decision",
    required=True,
    metavar="NAME",
    help="Which decision to learn (the `name` given to decide() / Policy.choose).",
)
@click.option(
    "--db",
    metavar="URL",
    help="Database URL where the decisions were logged. "
    "[default: $EVOLUTION_STORE_URL, else sqlite:///./evolution.db]",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help=f"Directory for {', '.join(PPO_FILES)} (created if missing).",
)
@click.option(
    "--since",
    metavar="T",
    callback=lambda _ctx, _param, value: None if value is None else parse_since(value),
    help="Only decisions made since T: ISO-8601 (2025-01-31T12:00:00Z) or a duration back "
    "from now (30m, 24h, 7d).",
)
@click.option("--gamma", type=float, default=0.99, show_default=True, help="Discount.")
@click.option("--lam", type=float, default=0.95, show_default=True, help="GAE lambda.")
@click.option("--clip", type=float, default=0.2, show_default=True, help="PPO's clip epsilon.")
@click.option("--epochs", type=int, default=4, show_default=True, help="Epochs per update round.")
@click.option("--lr", type=float, help="Adam step size. [default: 0.1]")
@click.option(
    "--entropy-coef", type=float, default=0.01, show_default=True, help="Entropy bonus weight."
)
@click.option(
    "--seed", type=int, default=0, metavar="N", show_default=True, help="Minibatch shuffling seed."
)
@click.option(
    "--behaviour",
    type=click.Choice(["logged", "estimate"]),
    default="logged",
    show_default=True,
    help="Decisions logged without a prob: leave them out (logged), or estimate their "
    "behaviour probability from the logged frequencies per state (estimate).",
)
@click.option(
    "--register",
    is_flag=True,
    help="Also store the policy in the prompt registry as a candidate (agent "
    "<agent>.policy.<decision>, created by ppo) for a person to approve; agents read the "
    "approved one with Policy.load('registry:<agent>/<decision>').",
)
def ppo(
    agent: str,
    decision: str,
    db: str | None,
    out: Path,
    since: int | None,
    register: bool,
    **settings: Any,
) -> None:
    """Learn a policy for AGENT's DECISION from its logged decisions and rewards (PPO).

    Episodes are executions, steps the decision's spans in order, a step's reward the rewards
    linked to its span, the run's rewards on its last step. Writes learned_policy.json (per
    action and state figures, per-round diagnostics) and policy.json, which
    `instrumentation.Policy.load` reads to make the decision in the agent.
    """
    try:
        from .learn.policy_registry import register_policy
        from .learn.ppo import policy_document, train_ppo
    except ModuleNotFoundError as exc:
        raise needs_learn_extra("train ppo", exc) from exc

    async def run(store: Any) -> tuple[Any, dict[str, Any] | None]:
        result = await train_ppo(store, agent=agent, decision=decision, since=since, **settings)
        registered = None
        if register:
            registered = await register_policy(store, result, agent=agent, decision=decision)
        return result, registered

    result, registered = _call_store(db, run)
    try:
        out.mkdir(parents=True, exist_ok=True)
        documents = (result.to_dict(), policy_document(result))
        for name, document in zip(PPO_FILES, documents, strict=True):
            text = json.dumps(document, indent=2, ensure_ascii=False, default=str)
            (out / name).write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write to {out}: {exc.strerror or exc}") from exc
    _report(result, [out / name for name in PPO_FILES])
    if registered is not None:
        click.echo(
            f"registered {registered['agent']} v{registered['version']} ({registered['id']}) "
            f"as {registered['status']}: approve it with "
            f"`evolution-store prompts approve {registered['id']}`"
        )


def _report(result: Any, paths: Sequence[Path]) -> None:
    """One line per update round (CleanRL's figures), then what was learned from."""
    click.echo(
        f"{'round':>5} {'epochs':>6} {'loss':>9} {'kl':>8} {'clip':>6} {'entropy':>8} {'ev':>7}"
    )
    for r in result.rounds:
        ev = "-" if r.explained_variance is None else f"{r.explained_variance:.3f}"
        click.echo(
            f"{r.round:>5} {r.epochs:>6} {r.surrogate_loss:>9.4f} {r.kl:>8.5f} "
            f"{r.clip_fraction:>6.3f} {r.entropy:>8.4f} {ev:>7}"
        )
    used = f"{result.steps_used} steps used"
    if result.steps_without_prob:
        what = (
            f"{result.steps_estimated} with an estimated prob"
            if result.behaviour == "estimate"
            else "left out (no logged prob; --behaviour estimate uses them)"
        )
        used += f", {result.steps_without_prob} without prob: {what}"
    click.echo(used)
    click.echo("wrote " + ", ".join(str(path) for path in paths))
