"""evolution-store: an OpenTelemetry-native tracing store and reward-linking server."""

from .errors import (
    Conflict,
    EvolutionStoreError,
    InvalidInput,
    NotFound,
    Overloaded,
    StorageError,
)
from .models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from .queries import Page, RewardQuery, SpanQuery
from .store import EvolutionStore

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
