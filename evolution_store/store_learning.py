"""`LearningStore`: what the learners read and write (DESIGN §7) — the pattern learner's
execution facts and patterns, PPO's decision steps, the exports' LLM calls — mixed into
`EvolutionStore`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import (
    decision_queries,
    llm_call_queries,
    pattern_apply,
    pattern_facts,
    pattern_queries,
    pattern_writes,
)
from .db_errors import translate_read_error
from .pattern_facts import ExecutionFacts
from .queries import Page

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .backends.base import Backend
    from .group_commit import GroupCommitWriter


class LearningStore:
    """Methods of `EvolutionStore` for the learners.
    They read through `_read` and write through the one group-commit writer."""

    # Provided by EvolutionStore.
    _read: Callable[..., Awaitable[Any]]
    _writer: GroupCommitWriter
    _backend: Backend
    _reader_engine: AsyncEngine

    # -- the pattern learner (DESIGN §7) -----------------------------------------------------

    async def execution_facts(
        self,
        *,
        agent: str | None = None,
        since: int | None = None,
        reward_name: str = "reward",
        limit: int | None = None,
    ) -> list[ExecutionFacts]:
        """What the pattern learner reads: the facts of every execution created at or after
        `since` (ns), newest first, at most `limit`; with `agent`, those whose agent (the most
        frequent among their spans) it is. `ExecutionFacts` says what each field counts. A
        few statements per few thousand executions, never one per execution."""
        return await self._read(
            pattern_facts.execution_facts,
            self._backend,
            agent=agent,
            since=since,
            reward_name=reward_name,
            limit=limit,
        )

    # -- PPO on logged decisions (evolution_store.learn.ppo) ----------------------------------

    async def decision_steps(
        self, *, agent: str, decision: str, since: int | None = None
    ) -> list[dict[str, Any]]:
        """`agent`'s decisions named `decision` started at or after `since` (ns), as episodes
        (one per execution, steps in `sequence` order, run-level rewards on the last step):
        `decision_queries.decision_steps` says what each holds. A few statements, whatever
        the number of executions."""
        return await self._read(
            decision_queries.decision_steps,
            self._backend,
            agent=agent,
            decision=decision,
            since=since,
        )

    # -- the exports (evolution_store.learn.export) --------------------------------------------

    async def llm_calls(
        self,
        *,
        agent: str,
        since: int | None = None,
        reward_name: str = "reward",
        batch: int = llm_call_queries.DEFAULT_BATCH,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """The LLM calls of `agent` started at or after `since` (ns), in start order, in pages
        of at most `batch`, each with its prompt and completion as chat messages and the mean
        of its linked rewards named `reward_name` (`llm_call_queries.llm_calls` says which
        attributes and which rewards). Memory stays at one page whatever the store's size."""
        try:
            async for page in llm_call_queries.llm_calls(
                self._reader_engine,
                self._backend,
                agent=agent,
                since=since,
                reward_name=reward_name,
                batch=batch,
            ):
                yield page
        except Exception as exc:
            error = translate_read_error(exc)
            if error is exc:
                raise
            raise error from exc

    async def save_patterns(
        self, patterns: list[dict[str, Any]], *, scope: dict[str, Any]
    ) -> dict[str, int]:
        """Store a mining run's patterns (upsert by id) and mark stale the active patterns of
        `scope` (`{"agent": A}` or `{"agent": None}` for all) it did not find, in one commit.
        Returns `{"new", "updated", "stale"}` counts."""
        return await self._writer.submit(
            lambda conn, ctx: pattern_writes.save_patterns(conn, ctx, patterns, scope=scope)
        )

    async def list_patterns(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        context: str | None = None,
        max_q: float | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        """Patterns by q, then effect size; `context` is "overall", "agent:<name>" or
        "task:<name>" (`pattern_queries.context_filter`)."""
        return await self._read(
            pattern_queries.list_patterns,
            agent=agent,
            kind=kind,
            status=status,
            context=context,
            max_q=max_q,
            cursor=cursor,
            limit=limit,
        )

    async def get_pattern(self, pattern_id: str) -> dict[str, Any]:
        return await self._read(pattern_queries.get_pattern, pattern_id)

    async def mark_pattern_applied(
        self, pattern_id: str, applied: dict[str, Any]
    ) -> dict[str, Any]:
        """Set a pattern `applied` with what was done (`Conflict` if it already was)."""
        await self._writer.submit(
            lambda conn, ctx: pattern_writes.mark_applied(conn, ctx, pattern_id, applied)
        )
        return await self.get_pattern(pattern_id)

    async def apply_pattern(self, pattern_id: str, *, applied_by: str) -> dict[str, Any]:
        """Turn a pattern into a proposal a person reviews (`pattern_apply` says which) and
        mark it applied, with a `pattern.applied` marker, in one transaction. `NotFound`, or
        `Conflict` with the reason it cannot be applied."""
        # Refused early when the pattern alone says no: a refusal inside the writer's
        # transaction would roll back the writes grouped with it. The write checks again,
        # as the pattern may change in between.
        pattern_apply.plan(await self.get_pattern(pattern_id))
        await self._writer.submit(
            lambda conn, ctx: pattern_apply.apply_in_transaction(
                conn, ctx, pattern_id, applied_by=applied_by
            )
        )
        return await self.get_pattern(pattern_id)
