"""Process-wide state shared by the instrumentation modules: the tracer the decorator uses and
the sink (remote server, embedded store, or none) that tasks and rewards are written to.

`configure()` sets it; `_decorator`, `_context` and `_rewards` read it here, so they need not
import `_config`, which sits above them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    from ._sinks import Sink

logger = logging.getLogger("instrumentation")

SCOPE_NAME = "evolution_store.instrumentation"
SCOPE_VERSION = "0.1.0"

TASK_ID_ATTR = "evolution.task.id"
EXECUTION_ID_ATTR = "evolution.execution.id"
TAGS_ATTR = "evolution.tags"


class _State:
    __slots__ = ("tracer", "sink", "session")

    def __init__(self) -> None:
        self.tracer: trace.Tracer | None = None
        self.sink: Sink | None = None
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
