"""The task and the prompts the running code is inside: context variables set by `task()` and
by `with handle:` on a `PromptHandle`.

The task's readers: the span processor stamps the task's ids on every span started inside it,
the decorator carries it into generators that resume later, and `emit_reward` aims a reward at
its execution when no span is current. This leaf module lets `_context`, `_decorator`,
`_rewards` and `_prompts` share them without importing one another. `CURRENT_TASK` holds
`_context.TaskHandle`s, described here by the `CurrentTask` protocol because naming the class
would import `_context`.

`CURRENT_PROMPTS` is the stack of prompt handles in use (`with handle:` blocks, innermost
last); the span processor stamps the innermost one's `evolution.prompt.*` attributes, and
`task()` opened inside one records it in the execution's config. A stack rather than a token
per block, because one cached handle is shared by every thread and coroutine that uses it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any, Protocol


class CurrentTask(Protocol):
    """What the package reads from the current task (`TaskHandle` is the implementation)."""

    execution_id: str  # what `emit_reward` aims at when no span is current
    span_attributes: Mapping[str, str | int]  # what the span processor stamps on every span


CURRENT_TASK: contextvars.ContextVar[CurrentTask | None] = contextvars.ContextVar(
    "evolution_current_task", default=None
)


def current_task() -> CurrentTask | None:
    """The innermost `task()` block's handle in this context, if any."""
    return CURRENT_TASK.get()


class CurrentPrompt(Protocol):
    """What the package reads from a prompt in use (`PromptHandle` is the implementation)."""

    span_attributes: Mapping[str, str | int]  # evolution.prompt.id / .version, experiment

    def execution_config(self) -> dict[str, Any]: ...  # what `task()` adds to the config


CURRENT_PROMPTS: contextvars.ContextVar[tuple[CurrentPrompt, ...]] = contextvars.ContextVar(
    "evolution_current_prompts", default=()
)
