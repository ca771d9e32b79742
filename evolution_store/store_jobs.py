"""`JobsStore`: stored analysis reports and the worker's job runs, mixed into `EvolutionStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .group_commit import GroupCommitWriter


class JobsStore:
    """Methods of `EvolutionStore` for stored analysis reports and the worker's job runs.
    They read through `_read` and write through the one group-commit writer."""

    # Provided by EvolutionStore: one read on a reader connection, and the group-commit writer.
    _read: Callable[..., Awaitable[Any]]
    _writer: GroupCommitWriter
