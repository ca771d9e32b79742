"""Process-wide state shared by the instrumentation modules: the tracer the decorator uses and
the backend (remote server, embedded store, or none) that tasks and rewards are written to.

It lives in its own module so `_decorator`, `_context` and `_rewards` can read it without
importing `_config` (which knows about exporters and would create import cycles).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from ._backends import Backend

logger = logging.getLogger("instrumentation")

SCOPE_NAME = "evolution_store.instrumentation"
SCOPE_VERSION = "0.1.0"

TASK_ID_ATTR = "evolution.task.id"
EXECUTION_ID_ATTR = "evolution.execution.id"
TAGS_ATTR = "evolution.tags"


class _State:
    __slots__ = ("tracer", "backend", "session")

    def __init__(self) -> None:
        self.tracer: trace.Tracer | None = None
        self.backend: Backend | None = None
        self.session: Any = None


STATE = _State()


def get_tracer() -> trace.Tracer:
    """The tracer decorated functions use: the configured provider's, else the global one.

    Without `configure()` this is the API's proxy tracer, which starts delegating as soon as
    the application installs a global TracerProvider, so decorating before configuring works.
    """
    tracer = STATE.tracer
    if tracer is None:
        tracer = STATE.tracer = trace.get_tracer(SCOPE_NAME, SCOPE_VERSION)
    return tracer
