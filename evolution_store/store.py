"""`EvolutionStore`: the async facade over one database — the writer for every write, the
reader engine for every read."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import (
    aggregates,
    experiment_queries,
    experiment_writes,
    marker_writes,
    prompt_writes,
    queries,
    registry_queries,
    task_writes,
)
from .backends import backend_for
from .backends.base import Backend, StatementHook
from .db_errors import first_line, translate_read_error
from .errors import InvalidInput, StorageError
from .group_commit import GroupCommitWriter, WriteContext
from .models import ExecutionIn, RewardIn, SpanRecord, TaskIn
from .promote import PriceTable
from .queries import Page, RewardQuery, SpanQuery
from .registry_models import (
    ApproveIn,
    ExperimentIn,
    ExperimentStopIn,
    PromptIn,
    PromptStatusIn,
    ResultsIn,
)
from .reward_writes import write_reward
from .span_rows import PreparedBatch, prepare_spans
from .span_writes import IngestResult, apply_span_batches
from .store_analysis import AnalysisReads
from .store_jobs import JobsStore
from .store_learning import LearningStore
from .store_report import ReportReads
from .store_ui import UiReads

#: Rough bytes per span when the caller cannot say (used for the queue's byte bound).
APPROX_SPAN_BYTES = 2048


class EvolutionStore(LearningStore, UiReads, ReportReads, AnalysisReads, JobsStore):
    """Tasks, executions, spans and rewards in SQLite or Postgres.

    Open it with `EvolutionStore.open(url)` (migrates by default) and close it when done::

        store = await EvolutionStore.open("sqlite:///evolution.db")
        await store.ingest([SpanRecord(trace_id=..., span_id=..., name="chat", start_time=...)])
        page = await store.list_spans(SpanQuery(trace_id=...))
        await store.close()

    Every write goes through one group-commit writer and returns after COMMIT; reads use
    their own connections. Raises `Overloaded` when the write queue is full, `NotFound`,
    `InvalidInput`, and `StorageError` for database failures.
    """

    def __init__(
        self,
        backend: Backend,
        writer_engine: AsyncEngine,
        reader_engine: AsyncEngine,
        writer: GroupCommitWriter,
        prices: PriceTable,
    ) -> None:
        self._backend = backend
        self._writer_engine = writer_engine
        self._reader_engine = reader_engine
        self._writer = writer
        self._prices = prices
        # The writer's latest view of the indexed attribute keys, for preparing span rows
        # ahead of it; a span prepared with a stale view is re-indexed inside the writer.
        self._indexed_keys: frozenset[str] = frozenset()
        self._closed = False

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = True,
        statement_hook: StatementHook | None = None,
        queue_max_spans: int = 200_000,
        queue_max_bytes: int = 256 * 1024 * 1024,
        prices: Mapping[str, tuple[float, float]] | None = None,
    ) -> EvolutionStore:
        """Connect, migrate to the latest schema (unless `migrate=False`), start the writer.

        `statement_hook(sql, params)` is called for every statement either engine runs (and
        for each COPY), so tests can count statements."""
        backend = backend_for(url)
        writer_engine, reader_engine = backend.create_engines()
        if statement_hook is not None:
            for engine in (writer_engine, reader_engine):
                _observe(engine, statement_hook)
            backend.statement_hook = statement_hook
        try:
            if migrate:
                from .migrate import upgrade_engine

                await upgrade_engine(writer_engine)
            async with reader_engine.connect() as conn:
                await backend.version(conn)
        except (DBAPIError, SQLAlchemyError, OSError) as exc:
            await writer_engine.dispose()
            await reader_engine.dispose()
            raise StorageError(f"cannot open {backend.name} database: {first_line(exc)}") from exc
        writer = GroupCommitWriter(
            writer_engine, backend, max_spans=queue_max_spans, max_bytes=queue_max_bytes
        )
        writer.start()
        return cls(backend, writer_engine, reader_engine, writer, PriceTable(prices))

    @property
    def backend_name(self) -> str:
        return self._backend.name

    @property
    def writer(self) -> GroupCommitWriter:
        """The group-commit writer: `idle`, and `expect()` for a write on its way."""
        return self._writer

    async def close(self, timeout: float = 30.0) -> None:
        """Stop intake, commit everything queued, release connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._writer.shutdown(timeout)
        await self._writer_engine.dispose()
        await self._reader_engine.dispose()
        await asyncio.to_thread(self._backend.close)

    async def __aenter__(self) -> EvolutionStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def version(self) -> str:
        return await self._read(self._backend.version)

    # -- writes ------------------------------------------------------------------------------

    async def ingest(
        self,
        spans: Sequence[SpanRecord],
        rewards: Sequence[RewardIn] = (),
        *,
        size_bytes: int | None = None,
    ) -> IngestResult:
        """Store spans (idempotent on trace_id + span_id), the rewards they carry (Agent
        Lightning, OpenInference and GenAI carriers, DESIGN §2) and `rewards` given beside
        them. Returns after the transaction holding them has committed.

        A span the database refuses is rejected alone (`IngestResult.rejected`), never its
        batch."""
        batch = prepare_spans(spans, self._prices, self._indexed_keys)
        batch.rewards.extend(rewards)
        return await self.ingest_prepared(batch, size_bytes=size_bytes)

    async def ingest_prepared(
        self, batch: PreparedBatch, *, size_bytes: int | None = None
    ) -> IngestResult:
        """`ingest` for a batch already through `span_rows.prepare_spans` (with `prices` and
        `indexed_keys`), e.g. by an `OtlpDecodePool` worker. Spans the database refuses are
        counted in `batch.report` as well as in the result."""
        if not batch.spans and not batch.rewards:
            return IngestResult()
        size = size_bytes if size_bytes is not None else APPROX_SPAN_BYTES * len(batch.spans)
        try:
            return await self._submit(batch, size)
        except InvalidInput:
            if len(batch.spans) + len(batch.rewards) <= 1:
                raise
        # A value the database refused (the group's other requests were committed without
        # this one): store the rest in halves, down to the spans it refuses, rejected alone.
        return await self._ingest_apart(batch, size)

    async def _submit(self, batch: PreparedBatch, size: int) -> IngestResult:
        return await self._writer.submit_batch(
            self._apply_spans, batch, spans=len(batch.spans), size=size
        )

    async def _ingest_apart(self, batch: PreparedBatch, size: int) -> IngestResult:
        items = [*batch.spans, *batch.rewards]
        if len(items) == 1:
            part = PreparedBatch(batch.spans, batch.rewards)
            try:
                return await self._submit(part, size)
            except InvalidInput as exc:
                if batch.spans:
                    batch.report.reject(f"span {batch.spans[0].span_id}: {exc}")
                    return IngestResult(rejected=1)
                batch.report.note(f"reward {batch.rewards[0].id or ''}: {exc}".strip())
                return IngestResult()
        half = len(items) // 2
        result = IngestResult()
        for part_items in (items[:half], items[half:]):
            part = PreparedBatch(
                [item for item in part_items if not isinstance(item, RewardIn)],
                [item for item in part_items if isinstance(item, RewardIn)],
                batch.report,
            )
            try:
                done = await self._submit(part, size * len(part_items) // len(items))
            except InvalidInput:
                done = await self._ingest_apart(part, size * len(part_items) // len(items))
            result.accepted += done.accepted
            result.duplicates += done.duplicates
            result.rewards += done.rewards
            result.rejected += done.rejected
        return result

    @property
    def prices(self) -> PriceTable:
        """The price table that fills `cost` for LLM spans that carry none."""
        return self._prices

    @property
    def indexed_keys(self) -> frozenset[str]:
        """The attribute keys copied into the attribute index, as the writer last read them."""
        return self._indexed_keys

    async def _apply_spans(
        self, conn: AsyncConnection, ctx: WriteContext, batches: list[PreparedBatch]
    ) -> list[IngestResult]:
        results = await apply_span_batches(conn, ctx, batches)
        self._indexed_keys = frozenset(ctx.cache.get("indexed_keys", self._indexed_keys))
        return results

    async def create_task(self, task: TaskIn) -> tuple[dict[str, Any], bool]:
        """Create a task (queued); idempotent on id. Returns (task, created)."""
        task_id, created = await self._writer.submit(
            lambda conn, ctx: task_writes.create_task(conn, ctx, task)
        )
        return await self.get_task(task_id), created

    async def start_execution(self, task_id: str, execution: ExecutionIn) -> dict[str, Any]:
        """A new execution of the task (a retry when not the first). Raises NotFound."""
        execution_id = await self._writer.submit(
            lambda conn, ctx: task_writes.start_execution(conn, ctx, task_id, execution)
        )
        return await self.get_execution(execution_id)

    async def set_task_status(self, task_id: str, status: str) -> dict[str, Any]:
        await self._writer.submit(
            lambda conn, ctx: task_writes.set_task_status(conn, ctx, task_id, status)
        )
        return await self.get_task(task_id)

    async def set_execution_status(self, execution_id: str, status: str) -> dict[str, Any]:
        """Set an execution's status; its task follows if it is the latest execution."""
        await self._writer.submit(
            lambda conn, ctx: task_writes.set_execution_status(conn, ctx, execution_id, status)
        )
        return await self.get_execution(execution_id)

    async def add_reward(self, reward: RewardIn) -> tuple[dict[str, Any], bool]:
        """Store a reward, linked now to matching spans or later when they arrive. Returns
        (reward, created). Idempotent on `reward.id`: the same content again returns the
        stored reward; other content under a stored id raises `Conflict`."""
        # A new reward comes back from the write itself, as a read after COMMIT would show it;
        # only one stored before is read back.
        reward_id, stored = await self._writer.submit(
            lambda conn, ctx: write_reward(conn, ctx, reward)
        )
        if stored is not None:
            return stored, True
        return await self.get_reward(reward_id), False

    async def add_span_tags(
        self, span_id: str, tags: list[str], *, trace_id: str | None = None
    ) -> dict[str, Any]:
        found_trace, _ = await self._writer.submit(
            lambda conn, ctx: task_writes.add_span_tags(conn, ctx, span_id, tags, trace_id)
        )
        return await self.get_span(span_id, trace_id=found_trace)

    async def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every write queued so far has committed."""
        return await self._writer.force_flush(timeout)

    # -- reads -------------------------------------------------------------------------------

    async def _read(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            async with self._reader_engine.connect() as conn:
                return await fn(conn, *args, **kwargs)
        except Exception as exc:
            error = translate_read_error(exc)
            if error is exc:
                raise
            raise error from exc

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self._read(queries.get_task, task_id)

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        tag: str | None = None,
        agent: str | None = None,
        since: int | None = None,
        until: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        return await self._read(
            queries.list_tasks,
            status=status,
            tag=tag,
            agent=agent,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )

    async def agent_tasks(self, agent: str, *, limit: int = 200) -> list[dict[str, Any]]:
        """Up to `limit` (1–1000) tasks the agent's spans ran under that have an input, failed
        ones first, then the newest: the examples an optimiser learns from."""
        return await self._read(queries.agent_tasks, agent, limit=limit)

    async def get_execution(self, execution_id: str) -> dict[str, Any]:
        return await self._read(queries.get_execution, execution_id)

    async def list_executions(self, task_id: str) -> list[dict[str, Any]]:
        return await self._read(queries.list_executions, task_id)

    async def get_span(self, span_id: str, *, trace_id: str | None = None) -> dict[str, Any]:
        return await self._read(queries.get_span, span_id, trace_id)

    async def list_spans(self, query: SpanQuery | None = None) -> Page:
        return await self._read(queries.list_spans, query or SpanQuery())

    async def span_rewards(
        self, span_id: str, *, trace_id: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(queries.span_rewards, span_id, trace_id)

    async def get_reward(self, reward_id: str) -> dict[str, Any]:
        return await self._read(queries.get_reward, reward_id)

    async def list_rewards(self, query: RewardQuery | None = None) -> Page:
        return await self._read(queries.list_rewards, query or RewardQuery())

    async def rewards_summary(
        self, group_by: str = "name", query: RewardQuery | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(aggregates.rewards_summary, group_by, query or RewardQuery())

    async def agent_stats(
        self, agent: str, *, start_after: int | None = None, start_before: int | None = None
    ) -> dict[str, Any]:
        return await self._read(
            aggregates.agent_stats, agent, start_after=start_after, start_before=start_before
        )

    # -- the prompt registry (DESIGN §7) -----------------------------------------------------

    async def create_prompt(self, prompt: PromptIn) -> tuple[dict[str, Any], bool]:
        """A new version of `prompt.agent`'s prompt (labelled `latest`), or the same agent,
        content and parents posted before. Returns (prompt, created)."""
        prompt_id, created = await self._writer.submit(
            lambda conn, ctx: prompt_writes.create_prompt(conn, ctx, prompt)
        )
        return await self.get_prompt(prompt_id), created

    async def get_prompt(self, prompt_id: str) -> dict[str, Any]:
        return await self._read(registry_queries.get_prompt, prompt_id)

    async def list_prompts(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        label: str | None = None,
        created_by: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        return await self._read(
            registry_queries.list_prompts,
            agent=agent,
            status=status,
            label=label,
            created_by=created_by,
            cursor=cursor,
            limit=limit,
        )

    async def prompt_lineage(self, prompt_id: str) -> dict[str, Any]:
        return await self._read(registry_queries.prompt_lineage, prompt_id)

    async def prompt_diff(self, prompt_id: str, against_id: str) -> dict[str, Any]:
        return await self._read(registry_queries.prompt_diff, prompt_id, against_id)

    async def set_prompt_status(self, prompt_id: str, change: PromptStatusIn) -> dict[str, Any]:
        """Move a prompt along its lifecycle; `Conflict` names the allowed moves."""
        await self._writer.submit(
            lambda conn, ctx: prompt_writes.set_prompt_status(
                conn, ctx, prompt_id, change.status, change.note, change.fitness
            )
        )
        return await self.get_prompt(prompt_id)

    async def approve_prompt(
        self, prompt_id: str, approval: ApproveIn, *, approved_by: str
    ) -> dict[str, Any]:
        """Make a candidate (or an archived version: a rollback) production; the previous
        production prompt is archived. `approved_by` is recorded (never a key itself)."""
        await self._writer.submit(
            lambda conn, ctx: prompt_writes.approve_prompt(
                conn, ctx, prompt_id, note=approval.note, approved_by=approved_by
            )
        )
        return await self.get_prompt(prompt_id)

    async def set_label(self, agent: str, label: str, prompt_id: str) -> dict[str, Any]:
        await self._writer.submit(
            lambda conn, ctx: prompt_writes.set_label(conn, ctx, agent, label, prompt_id)
        )
        return await self._read(registry_queries.get_label, agent, label)

    async def list_labels(self, agent: str) -> list[dict[str, Any]]:
        return await self._read(registry_queries.list_labels, agent)

    async def resolve_prompt(
        self, agent: str, *, label: str = "production", key: str | None = None
    ) -> dict[str, Any]:
        """The prompt `agent` should use now (an A/B variant, sticky by `key`, while one runs)."""
        return await self._read(
            registry_queries.resolve_prompt, self._backend, agent, label=label, key=key
        )

    async def add_marker(
        self,
        *,
        agent: str,
        kind: str,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> str:
        """Store a marker (`kind` such as `coach.applied`) for `agent`; returns its span id.
        `attributes` may name another task (`evolution.task.id`) so it lands on a run's own
        timeline rather than the agent's marker task."""
        return await self._writer.submit(
            lambda conn, ctx: marker_writes.write_marker(
                conn,
                ctx,
                agent=agent,
                kind=kind,
                before=before,
                after=after,
                attributes=attributes,
            )
        )

    async def list_markers(
        self,
        *,
        agent: str | None = None,
        kind: str | None = None,
        start_after: int | None = None,
        start_before: int | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        return await self._read(
            registry_queries.list_markers,
            agent=agent,
            kind=kind,
            start_after=start_after,
            start_before=start_before,
            cursor=cursor,
            limit=limit,
        )

    async def create_experiment(self, experiment: ExperimentIn) -> dict[str, Any]:
        """Start an A/B or regression experiment (`Conflict`: an A/B already runs)."""
        experiment_id = await self._writer.submit(
            lambda conn, ctx: experiment_writes.create_experiment(conn, ctx, experiment)
        )
        return await self.get_experiment(experiment_id)

    async def get_experiment(self, experiment_id: str) -> dict[str, Any]:
        """The experiment with its live results."""
        return await self._read(experiment_queries.get_experiment, experiment_id)

    async def list_experiments(
        self,
        *,
        agent: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 100,
    ) -> Page:
        return await self._read(
            experiment_queries.list_experiments,
            agent=agent,
            status=status,
            cursor=cursor,
            limit=limit,
        )

    async def stop_experiment(
        self, experiment_id: str, stop: ExperimentStopIn, *, approved_by: str
    ) -> dict[str, Any]:
        await self._writer.submit(
            lambda conn, ctx: experiment_writes.stop_experiment(
                conn, ctx, experiment_id, stop, approved_by=approved_by
            )
        )
        return await self.get_experiment(experiment_id)

    async def add_experiment_results(
        self, experiment_id: str, results: ResultsIn
    ) -> dict[str, Any]:
        await self._writer.submit(
            lambda conn, ctx: experiment_writes.add_results(conn, ctx, experiment_id, results)
        )
        return await self.get_experiment(experiment_id)

    async def explain(self, statement: Any) -> str:
        """The database's plan for a query (tests use it to check indexes are used)."""
        return await self._read(self._backend.explain, statement)


def _observe(engine: AsyncEngine, hook: StatementHook) -> None:
    def before(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool):
        hook(statement, params)

    event.listen(engine.sync_engine, "before_cursor_execute", before)


__all__ = ["EvolutionStore", "IngestResult", "Page", "RewardQuery", "SpanQuery"]
