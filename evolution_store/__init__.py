"""evolution-store: an OpenTelemetry-native tracing store and reward-linking server."""

from .errors import (
    Conflict,
    EvolutionStoreError,
    InvalidInput,
    NotFound,
    Overloaded,
    StorageError,
)
from .store import EvolutionStore

__all__ = [
    "Conflict",
    "EvolutionStore",
    "EvolutionStoreError",
    "InvalidInput",
    "NotFound",
    "Overloaded",
    "StorageError",
]
