"""`AnalysisReads`: the lab technician's reads (evolution-store analyze),
mixed into `EvolutionStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import analysis_queries

if TYPE_CHECKING:
    from .group_commit import GroupCommitWriter


class AnalysisReads:
    """Methods of `EvolutionStore` for the lab technician's reads (evolution-store analyze).
    They read through `_read` and write through the one group-commit writer.

    Every method reads the window of executions created in [since, until) (ns), with `agent`
    those with a span of that agent (`analysis_queries` says what is left out)."""

    # Provided by EvolutionStore: one read on a reader connection, and the group-commit writer.
    _read: Callable[..., Awaitable[Any]]
    _writer: GroupCommitWriter

    async def analysis_execution_counts(
        self, *, since: int, until: int, agent: str | None = None
    ) -> dict[str, int]:
        """status -> executions of the window."""
        return await self._read(
            analysis_queries.execution_counts, since=since, until=until, agent=agent
        )

    async def analysis_group_outcomes(
        self, *, since: int, until: int, agent: str | None = None
    ) -> list[tuple[str, str, int, int]]:
        """(kind "task" | "tag", name, finished, succeeded) of the window's executions."""
        return await self._read(
            analysis_queries.group_outcomes, since=since, until=until, agent=agent
        )

    async def analysis_window_spans(
        self,
        *,
        since: int,
        until: int,
        agent: str | None = None,
        consume: Callable[[list[Any]], None],
    ) -> None:
        """`consume(rows)` with the window's timed spans, by operation and duration, streamed
        (`analysis_queries.window_spans`)."""
        await self._read(
            analysis_queries.window_spans, since=since, until=until, agent=agent, consume=consume
        )

    async def analysis_error_spans(
        self,
        *,
        since: int,
        until: int,
        agent: str | None = None,
        consume: Callable[[list[Any]], None],
    ) -> None:
        """`consume(rows)` with the window's error spans, a partition at a time."""
        await self._read(
            analysis_queries.error_spans, since=since, until=until, agent=agent, consume=consume
        )
