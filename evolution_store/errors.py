"""The one exception tree of evolution-store.

    EvolutionStoreError
    ├── InvalidInput      bad ids, bad filters, bad cursors (API: 422 / 400)
    ├── NotFound          the task, execution, span or reward does not exist (API: 404)
    ├── Conflict          the write contradicts what is stored (API: 409)
    ├── Overloaded        the write queue is full; retry later (API: 503 + Retry-After)
    └── StorageError      the database failed; driver errors are translated to this (API: 503)

Driver exceptions never leave `evolution_store`: the store translates them (`db_errors`) with
`raise StorageError(...) from exc`, so callers handle one tree. `Overloaded` and `StorageError`
carry `retry_after`, the seconds a client should wait, which every route passes on.
"""

from __future__ import annotations


class EvolutionStoreError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidInput(EvolutionStoreError, ValueError):
    """The caller sent something the store cannot accept; `field` names the culprit if known.

    Also a `ValueError`, so pydantic validators can raise it and report a validation error."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(EvolutionStoreError):
    """The named record does not exist."""


class Conflict(EvolutionStoreError):
    """The write contradicts stored state (e.g. a reward id reused with different content)."""


class Overloaded(EvolutionStoreError):
    """The writer's queue (or the OTLP intake budget) is full. Nothing from this request was
    stored; retry after a pause."""

    def __init__(self, message: str = "write queue is full", *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: seconds a client should wait after a database failure (it may be restarting)
STORAGE_RETRY_AFTER = 5.0


class StorageError(EvolutionStoreError):
    """The database refused or failed. The request's data was not committed."""

    def __init__(
        self, message: str = "storage unavailable", *, retry_after: float = STORAGE_RETRY_AFTER
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
