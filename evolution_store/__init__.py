"""evolution-store: an OpenTelemetry-native tracing store and reward-linking server."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (
    Conflict,
    EvolutionStoreError,
    InvalidInput,
    NotFound,
    Overloaded,
    StorageError,
)
from .models import ExecutionIn, RewardIn, SpanRecord, TaskIn

if TYPE_CHECKING:
    from .queries import Page, RewardQuery, SpanQuery
    from .store import EvolutionStore

#: Imported on first use (PEP 562): they bring the database stack (SQLAlchemy, drivers), which
#: an OTLP decode worker process (`otlp_decode_pool`) never needs, and would hold for its life.
_LAZY = {
    "EvolutionStore": ".store",
    "Page": ".queries",
    "RewardQuery": ".queries",
    "SpanQuery": ".queries",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Conflict",
    "EvolutionStore",
    "EvolutionStoreError",
    "ExecutionIn",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "Page",
    "RewardIn",
    "RewardQuery",
    "SpanQuery",
    "SpanRecord",
    "StorageError",
    "TaskIn",
]
