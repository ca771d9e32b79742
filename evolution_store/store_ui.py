"""`UiReads`: the dashboard's reads (pages of api/ui), mixed into `EvolutionStore`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import ui_queries

if TYPE_CHECKING:
    from .group_commit import GroupCommitWriter


class UiReads:
    """Methods of `EvolutionStore` for the dashboard's reads (pages of api/ui).
    They read through `_read` and write through the one group-commit writer.
    `ui_queries` says what each costs: none grows with the number of spans stored."""

    # Provided by EvolutionStore: one read on a reader connection, and the group-commit writer.
    _read: Callable[..., Awaitable[Any]]
    _writer: GroupCommitWriter

    async def ui_agents(self, *, limit: int = 200) -> list[str]:
        """The agents named on spans, in order (at most `limit`)."""
        return await self._read(ui_queries.agents, limit=limit)

    async def ui_agent_summary(
        self,
        agent: str,
        *,
        since: int | None = None,
        until: int | None = None,
        cap: int = ui_queries.RECENT_CAP,
    ) -> dict[str, Any]:
        """The agent's runs, success, latency, tokens, cost, mean reward and time buckets over
        its newest `cap` spans in [since, until) (`capped` when older ones were left out)."""
        recent = await self._read(ui_queries.agent_recent, agent, since=since, until=until, cap=cap)
        return ui_queries.summarise_recent(recent, agent=agent)

    async def ui_trace(self, trace_id: str) -> dict[str, Any]:
        """The trace's spans for a waterfall, each with its linked rewards' count and mean."""
        return await self._read(ui_queries.trace_spans, trace_id)

    async def ui_task_traces(self, task_id: str) -> list[dict[str, Any]]:
        return await self._read(ui_queries.task_traces, task_id)

    async def ui_task_rewards(self, task_id: str) -> list[dict[str, Any]]:
        """Rewards judging the task, its executions or its spans, with the execution judged."""
        return await self._read(ui_queries.task_rewards, task_id)

    async def ui_recent_markers(
        self, *, agent: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        return await self._read(ui_queries.recent_markers, agent=agent, limit=limit)

    async def ui_prompt_agents(self) -> list[str]:
        return await self._read(ui_queries.prompt_agents)
