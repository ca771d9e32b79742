"""The group-commit writer: one loop that owns the write connection (DESIGN §3).

Every write in the store — span batches from every ingest route, tasks, executions, rewards,
tags — is a job on one bounded queue. Whenever the loop wakes it takes everything queued (up to
`GROUP_MAX_SPANS`), applies it in ONE transaction, commits, and only then resolves each job's
future: concurrent requests share one commit, and a caller that got its answer knows its data
is durable. The jobs' SQL lives elsewhere (`span_writes`, `task_writes`, `reward_writes`);
this module only schedules it.

A full queue raises `Overloaded` at once (the API answers 503 + Retry-After). Nothing waits on
a timer: the loop sleeps on an event until a job arrives. `shutdown()` stops intake, drains
what is queued, commits, exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .backends.base import Backend
from .db_errors import translate_write_error
from .errors import EvolutionStoreError, Overloaded, StorageError

log = logging.getLogger(__name__)

#: A job's work: runs inside the group's transaction, returns the job's result.
Operation = Callable[[AsyncConnection, "WriteContext"], Awaitable[Any]]
#: Applies many span jobs' payloads at once; returns one result per payload.
BatchOperation = Callable[[AsyncConnection, "WriteContext", list[Any]], Awaitable[list[Any]]]

#: The most spans one transaction carries; more wait for the next group.
GROUP_MAX_SPANS = 20_000

#: A group smaller than this waits for writes announced as on their way (`expect`) before it
#: commits: larger commits cost the database less per span (bench/README.md, "Gathering").
GATHER_SPANS = 2048

#: Announced writes a group leaves to the next one, so that the commit overlaps with their
#: decoding instead of the decoder idling through it.
GATHER_LEAVES = 1

#: The longest a group waits for announced writes: a slow decode delays others by this at most.
GATHER_SECONDS = 0.05

#: After a group met a span stored before (`StoredSpanMet`), groups look spans up before
#: inserting them for this long: retries that resend whole batches come in bursts.
LOOKUP_SECONDS = 60.0


@dataclass
class WriteContext:
    """State shared by the operations of one transaction."""

    backend: Backend
    now_ns: int
    #: Spans are assumed not stored yet: no lookup of their ids before the insert, whose
    #: unique index refuses a duplicate (`StoredSpanMet`). Nearly every group holds only new
    #: spans, so the lookup would almost always find nothing.
    optimistic: bool = False
    cache: dict[str, Any] = field(default_factory=dict)


class StoredSpanMet(Exception):
    """Internal signal, never seen by callers: an optimistic group (`WriteContext.optimistic`)
    met a span stored before. The loop rolls the group back and applies it again, with lookups."""


@dataclass
class _Job:
    operation: Operation | None
    batch: BatchOperation | None
    payload: Any
    spans: int
    size: int
    future: asyncio.Future[Any]


class GroupCommitWriter:
    """The group-commit loop over the writer engine (one connection).

    Usage::

        writer = GroupCommitWriter(engine, backend)
        writer.start()
        result = await writer.submit(operation)            # resolves after COMMIT
        results = await writer.submit_batch(apply, payload, spans=512, size=80_000)
        await writer.shutdown(timeout=30)
    """

    def __init__(
        self,
        engine: AsyncEngine,
        backend: Backend,
        *,
        max_spans: int = 200_000,
        max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._engine = engine
        self._backend = backend
        self._max_spans = max_spans
        self._max_bytes = max_bytes
        self._queue: deque[_Job] = deque()
        self._queued_spans = 0
        self._queued_bytes = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.groups_committed = 0
        self.conflicts = 0  # optimistic groups applied again (`StoredSpanMet`)
        self._incoming = 0  # writes announced by `expect` and not yet submitted
        self._committing = False
        self._lookups_until = 0.0  # `time.monotonic()` until which groups are not optimistic

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="evolution-store-writer")

    async def submit(self, operation: Operation, *, size: int = 256) -> Any:
        """Run `operation` in the next group's transaction; return its result after COMMIT."""
        return await self._enqueue(_Job(operation, None, None, 0, size, self._future()))

    async def submit_batch(
        self, batch: BatchOperation, payload: Any, *, spans: int, size: int
    ) -> Any:
        """Queue a span payload. Payloads of consecutive jobs with the same `batch` function are
        applied together in one call, so a group's spans go in as a few multi-row statements."""
        return await self._enqueue(_Job(None, batch, payload, spans, size, self._future()))

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, job: _Job) -> Any:
        if self._closing or self._task is None:
            raise Overloaded("the store is shutting down", retry_after=5)
        over_spans = self._queued_spans + job.spans > self._max_spans
        over_bytes = self._queued_bytes + job.size > self._max_bytes
        # A single job larger than the whole budget is still let in when the queue is empty,
        # or it could never be written.
        if (over_spans or over_bytes) and self._queue:
            raise Overloaded(
                f"write queue full ({self._queued_spans} spans, {self._queued_bytes} bytes)",
                retry_after=1,
            )
        self._queue.append(job)
        self._queued_spans += job.spans
        self._queued_bytes += job.size
        self._wake.set()
        # A client that disconnects must not cancel its write half-way: shield the future.
        return await asyncio.shield(job.future)

    @property
    def idle(self) -> bool:
        """Nothing queued, announced (`expect`) or being committed."""
        return not self._queue and not self._incoming and not self._committing

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        """Announce a write on its way (a body being decoded) for the length of the block.

        While more than `GATHER_LEAVES` are announced, a group smaller than `GATHER_SPANS`
        waits for them (at most `GATHER_SECONDS`) instead of committing alone. The caller
        submits right after the block, with no await in between, so the writer never sees the
        write neither announced nor queued."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            self._wake.set()  # a gathering group re-checks: this write may never come

    async def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop intake, drain and commit what is queued, stop the worker. Idempotent.

        Returns False if the queue could not be drained within `timeout`.
        """
        self._closing = True
        task, self._task = self._task, None
        if task is None:
            return True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
            return True
        except TimeoutError:
            task.cancel()
            self._fail_all(StorageError("the store shut down before this write was committed"))
            return False

    async def force_flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is committed."""
        if self._task is None:
            return not self._queue
        try:
            await asyncio.wait_for(self.submit(_noop), timeout)
            return True
        except (TimeoutError, EvolutionStoreError):
            return False

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._more_is_coming():
                await self._gather()
            group = self._take_group()
            self._committing = True
            try:
                await self._commit_group(group)
            finally:
                self._committing = False

    def _more_is_coming(self) -> bool:
        """Whether the group should wait for announced writes (`GATHER_*`)."""
        return (
            self._incoming > GATHER_LEAVES
            and self._queued_spans < GATHER_SPANS
            and not self._closing
        )

    async def _gather(self) -> None:
        """Wait while announced writes may still grow the group."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GATHER_SECONDS
        while self._more_is_coming():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _take_group(self) -> list[_Job]:
        group: list[_Job] = []
        spans = 0
        while self._queue and (not group or spans + self._queue[0].spans <= GROUP_MAX_SPANS):
            job = self._queue.popleft()
            spans += job.spans
            self._queued_spans -= job.spans
            self._queued_bytes -= job.size
            group.append(job)
        return group

    async def _commit_group(self, group: list[_Job]) -> None:
        try:
            results = await self._apply(group)
        except StoredSpanMet:
            log.debug("a group of %d writes met a stored span; applying it again", len(group))
            self.conflicts += 1
            self._lookups_until = time.monotonic() + LOOKUP_SECONDS
            await self._commit_group(group)
            return
        except Exception as exc:  # one bad job must not sink the others: retry them alone
            if len(group) == 1:
                self._settle(group[0], error=translate_write_error(exc))
                return
            log.warning("group of %d writes failed (%s); retrying each alone", len(group), exc)
            for job in group:
                await self._commit_group([job])
            return
        self.groups_committed += 1
        self._backend.group_committed()
        for job, result in zip(group, results, strict=True):
            self._settle(job, result=result)

    async def _apply(self, group: list[_Job]) -> list[Any]:
        ctx = WriteContext(
            backend=self._backend,
            now_ns=time.time_ns(),
            optimistic=time.monotonic() >= self._lookups_until,
        )
        results: list[Any] = [None] * len(group)
        async with self._engine.begin() as conn:
            await self._backend.begin_group(conn)
            index = 0
            while index < len(group):
                job = group[index]
                if job.batch is None:
                    assert job.operation is not None
                    results[index] = await job.operation(conn, ctx)
                    index += 1
                    continue
                # Merge the run of consecutive batch jobs that share one batch function (`==`, not
                # `is`: each access to a bound method makes a new object).
                end = index
                while end < len(group) and group[end].batch == job.batch:
                    end += 1
                payloads = [group[i].payload for i in range(index, end)]
                results[index:end] = await job.batch(conn, ctx, payloads)
                index = end
        return results

    def _settle(self, job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    def _fail_all(self, error: EvolutionStoreError) -> None:
        while self._queue:
            self._settle(self._queue.popleft(), error=error)
        self._queued_spans = self._queued_bytes = 0


async def _noop(_conn: AsyncConnection, _ctx: WriteContext) -> None:
    return None
