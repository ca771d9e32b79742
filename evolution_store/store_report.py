"""`ReportReads`: the static report's reads (evolution-store report),
mixed into `EvolutionStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import report_queries

if TYPE_CHECKING:
    from .group_commit import GroupCommitWriter


class ReportReads:
    """Methods of `EvolutionStore` for the static report's reads (evolution-store report).
    They read through `_read` and write through the one group-commit writer."""

    # Provided by EvolutionStore: one read on a reader connection, and the group-commit writer.
    _read: Callable[..., Awaitable[Any]]
    _writer: GroupCommitWriter

    async def report_tasks(
        self,
        *,
        task_id: str | None = None,
        agent: str | None = None,
        since: int | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """The tasks a report covers, newest first: the one named (`NotFound` if unknown),
        else those `agent` ran, else all; created since `since` (ns)."""
        return await self._read(
            report_queries.report_tasks, task_id=task_id, agent=agent, since=since, limit=limit
        )

    async def execution_summaries(self, task_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The executions of `task_ids` with their spans' sums and linked rewards."""
        return await self._read(report_queries.execution_summaries, task_ids)

    async def waterfall_spans(
        self, execution_ids: Sequence[str], *, cap: int = 500
    ) -> dict[str, dict[str, Any]]:
        """Each execution's first `cap` spans, each with the rewards linked to it."""
        return await self._read(report_queries.waterfall_spans, execution_ids, cap=cap)

    async def selection_rewards(
        self, task_ids: Sequence[str], *, limit: int = report_queries.REWARD_LIST_CAP
    ) -> dict[str, Any]:
        """The rewards judging `task_ids`: a summary by name and the newest `limit`."""
        return await self._read(report_queries.selection_rewards, task_ids, limit=limit)
