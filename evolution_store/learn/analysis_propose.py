"""The lab technician's proposals: for the top opportunities of a report, a revised prompt
from an LLM, stored as a registry draft (`created_by="lab"`) that a person may approve.

Nothing here applies or approves anything, and nothing here may fail the analysis: an LLM
that is unreachable, over budget or replying nonsense costs the report its proposals and
adds one note, never an exception.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import orjson

from evolution_store.errors import EvolutionStoreError, NotFound

from .apo.reflection import parse_reply
from .llm import LLMError, default_base_url, resolve_llm

if TYPE_CHECKING:
    from .analysis import AnalysisReport

logger = logging.getLogger(__name__)

#: labels tried for the prompt a draft revises: production first, else the newest version
CURRENT_LABELS = ("production", "latest")
EVIDENCE_CHARS = 4000

_SYSTEM = (
    "You improve the instructions (the prompt) an AI agent follows. You are shown the current "
    "prompt and one problem a periodic analysis of the agent's logged runs found, with its "
    "evidence. Work out what in the prompt could cause or fix it and revise the prompt."
)

_TASK = """Write a revised prompt that addresses this problem without breaking what works:
- change only what the evidence supports; keep the instructions that are still needed;
- keep it concise; keep every {{ template variable }} exactly as it is.
Reply with the complete revised prompt inside a ``` block and nothing else."""


def proposal_messages(prompt: str, opportunity: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages asking for a revision of `prompt` against `opportunity`."""
    evidence = orjson.dumps(opportunity["evidence"], default=str).decode()[:EVIDENCE_CHARS]
    lines = [
        "<current_prompt>",
        prompt,
        "</current_prompt>",
        "",
        f"Problem ({opportunity['kind']}): {opportunity['title']}",
        f"Evidence: {evidence}",
        "",
        _TASK,
    ]
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


async def current_prompt(store: Any, agent: str) -> dict[str, Any] | None:
    """The agent's production prompt, else its latest; None without one. By label, not
    `resolve_prompt`, so a running A/B experiment does not pick what is revised."""
    for label in CURRENT_LABELS:
        page = await store.list_prompts(agent=agent, label=label, limit=1)
        if page.items:
            return page.items[0]
    return None


async def propose_drafts(
    store: Any, report: AnalysisReport, *, llm: Any, model: str | None, limit: int
) -> None:
    """Add to `report.proposals` a draft for each of the top `limit` opportunities whose
    agent has a prompt, each a revision of that prompt for one opportunity, and to
    `report.notes` why any were not made."""
    from evolution_store.registry_models import PromptIn

    # A reply may propose nothing usable, so a few more calls than drafts, never unbounded.
    calls = 2 * limit
    client = resolve_llm(llm if llm is not None else default_base_url(), model, max_calls=calls)
    built_here = client is not llm
    skipped: list[str] = []
    currents: dict[str, dict[str, Any] | None] = {}
    try:
        for opportunity in report.opportunities:
            if len(report.proposals) >= limit:
                break
            agent = opportunity["agent"]
            if agent is None:
                continue
            # Read once per agent: a draft made here becomes the agent's `latest`.
            if agent not in currents:
                currents[agent] = await current_prompt(store, agent)
            current = currents[agent]
            if current is None:
                skipped.append(agent)
                continue
            messages = proposal_messages(current["content"], opportunity)
            try:
                reply = await asyncio.to_thread(client.complete, messages)
            except LLMError as exc:
                report.notes.append(f"no more proposals: the LLM gave no usable reply ({exc})")
                break
            content = parse_reply(reply, current["content"])
            if content is None:
                report.notes.append(f"{opportunity['id']}: the LLM proposed no change")
                continue
            note = (
                f"lab report {report.id}, opportunity {opportunity['id']} "
                f"(rank {opportunity['rank']}): {opportunity['title']}"
            )
            try:
                draft, created = await store.create_prompt(
                    PromptIn(
                        agent=agent,
                        content=content,
                        parent_ids=[current["id"]],
                        status="draft",
                        created_by="lab",
                        note=note[:10_000],
                    )
                )
            except (ValueError, NotFound, EvolutionStoreError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                report.notes.append(f"{opportunity['id']}: draft refused ({first})")
                continue
            report.proposals.append(
                {
                    "prompt_id": draft["id"],
                    "agent": agent,
                    "version": draft["version"],
                    "parent_id": current["id"],
                    "opportunity": opportunity["id"],
                    "title": opportunity["title"],
                    "created": created,
                }
            )
    finally:
        if built_here and hasattr(client, "close"):
            client.close()
    if skipped:
        names = ", ".join(sorted(set(skipped)))
        report.notes.append(f"no prompt in the registry to revise for: {names}")
