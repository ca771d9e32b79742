"""The task the running code is inside: one context variable, set by `task()`.

Its readers: the span processor stamps the task's ids on every span started inside it, the
decorator carries it into generators that resume later, and `emit_reward` aims a reward at its
execution when no span is current. This leaf module lets `_context`, `_decorator` and `_rewards`
share it without importing one another. It holds `_context.TaskHandle`s, described here by the
`CurrentTask` protocol because naming the class would import `_context`.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Protocol


class CurrentTask(Protocol):
    """What the package reads from the current task (`TaskHandle` is the implementation)."""

    execution_id: str  # what `emit_reward` aims at when no span is current
    span_attributes: Mapping[str, str]  # the ids the span processor stamps on every span


CURRENT_TASK: contextvars.ContextVar[CurrentTask | None] = contextvars.ContextVar(
    "evolution_current_task", default=None
)


def current_task() -> CurrentTask | None:
    """The innermost `task()` block's handle in this context, if any."""
    return CURRENT_TASK.get()
