"""A PPO run's policy kept in the prompt registry (`evolution-store train ppo --register`), so
it gets what prompts get: versions, lineage, a person's approval, rollback. Agents then read
the approved one with `Policy.load("registry:<agent>/<decision>")`.

The policy document is stored as the content of a prompt of the agent
`<agent>.policy.<decision>` (`instrumentation.policy_registry_agent`), a candidate created by
`ppo` whose parent is the version it was trained to replace.
"""

from __future__ import annotations

import json
from typing import Any

from instrumentation import policy_registry_agent

from ..errors import NotFound
from ..registry_models import PromptIn
from .ppo import PPOResult, policy_document


async def register_policy(
    store: Any, result: PPOResult, *, agent: str, decision: str
) -> dict[str, Any]:
    """Store `result`'s policy as a candidate version (created by `ppo`) of the registry agent
    for `agent`'s `decision`, child of its production version (else its latest); returns the
    prompt row. Registering the same policy again returns the stored row."""
    registry_agent = policy_registry_agent(agent, decision)
    parent = await _current(store, registry_agent)
    settings = result.settings
    prompt = PromptIn(
        agent=registry_agent,
        # Indented, keys in a fixed order: the registry's diff view shows what moved.
        content=json.dumps(policy_document(result), indent=2, sort_keys=True),
        parent_ids=[parent["id"]] if parent else [],
        status="candidate",
        fitness={"n": result.steps_used, "entropy": result.entropy},
        created_by="ppo",
        note=(
            f"PPO on {result.steps_used} logged steps of {decision!r} (gamma {settings.gamma}, "
            f"lam {settings.lam}, clip {settings.clip}, seed {settings.seed})"
        ),
    )
    row, _created = await store.create_prompt(prompt)
    return row


async def _current(store: Any, registry_agent: str) -> dict[str, Any] | None:
    for label in ("production", "latest"):
        try:
            return await store.resolve_prompt(registry_agent, label=label)
        except NotFound:
            continue
    return None
