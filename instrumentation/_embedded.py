"""Embedded mode: an `EvolutionStore` in this process, fed by the SDK's BatchSpanProcessor.

The store is async and bound to one event loop, while spans end on any thread and the user may
have no loop at all. So the store lives on a private loop in a named daemon thread
(`StoreRunner`); the span exporter (`StoreSpanExporter`, on the batch processor's worker thread)
and the sink `task()` / `emit_reward()` write to (`EmbeddedSink`) call into it with
`run_coroutine_threadsafe`. The runner re-creates its thread
and reopens the store lazily in a forked child, and `shutdown()` closes the store (which
commits everything queued) before stopping the loop.

This module imports `evolution_store` (and with it SQLAlchemy); only `configure(store_url=…)`
imports it, so remote-only users never load the server stack.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

try:
    from evolution_store import EvolutionStore, NotFound, Overloaded
    from evolution_store.models import ExecutionIn, RewardIn, SpanRecord, TaskIn
except ImportError as exc:  # pragma: no cover - the package ships both halves
    raise ImportError(
        "embedded mode needs the evolution_store package (pip install evolution-store); "
        "use configure(endpoint=...) to send spans to a server instead"
    ) from exc

from ._exceptions import EvolutionClientError
from ._spans import span_fields
from ._state import logger

THREAD_NAME = "evolution-store-embedded"
DEFAULT_TIMEOUT = 30.0

StoreCall = Callable[[EvolutionStore], Coroutine[Any, Any, Any]]


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


class StoreRunner:
    """One `EvolutionStore` on a private event loop in a daemon thread.

    ```python
    runner = StoreRunner("sqlite:///agent.db")
    task = runner.call(lambda store: store.get_task(task_id))
    runner.shutdown()
    ```
    """

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._store: EvolutionStore | None = None
        self._pid = os.getpid()
        self._closed = False
        self._orphans: list[Any] = []
        self._start()
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=_run_loop, args=(loop,), name=THREAD_NAME, daemon=True)
        thread.start()
        try:
            store = asyncio.run_coroutine_threadsafe(EvolutionStore.open(self.url), loop).result(
                self.timeout
            )
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(self.timeout)
            raise
        self._loop, self._thread, self._store = loop, thread, store

    def _forked(self) -> None:
        # The parent's loop thread does not exist here and its connections must not be used
        # (nor closed: they belong to the parent). Keep them referenced, start afresh lazily.
        self._orphans.append((self._loop, self._store))
        self._loop = self._thread = self._store = None
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _ready(self) -> tuple[asyncio.AbstractEventLoop, EvolutionStore]:
        if self._closed:
            raise RuntimeError("the embedded store has been shut down")
        loop, store = self._loop, self._store
        if loop is None or store is None:
            with self._lock:
                if self._loop is None:
                    self._start()
                loop, store = self._loop, self._store
        assert loop is not None and store is not None
        return loop, store

    def call(self, fn: StoreCall, timeout: float | None = None) -> Any:
        """Run `fn(store)` on the store's loop and wait for its result (from any thread)."""
        loop, store = self._ready()
        future = asyncio.run_coroutine_threadsafe(fn(store), loop)
        return future.result(self.timeout if timeout is None else timeout)

    async def acall(self, fn: StoreCall) -> Any:
        """Run `fn(store)` on the store's loop and await it from another event loop."""
        loop, store = self._ready()
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(fn(store), loop))

    def shutdown(self, timeout: float | None = None) -> None:
        """Close the store (committing what is queued) and stop the thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread, store = self._loop, self._thread, self._store
            self._loop = self._thread = self._store = None
        if loop is None or thread is None:
            return
        wait = self.timeout if timeout is None else timeout
        try:
            if store is not None:
                asyncio.run_coroutine_threadsafe(store.close(wait), loop).result(wait)
        except Exception as exc:
            logger.warning("closing the embedded store failed: %s", exc)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(wait)
            if not thread.is_alive():
                loop.close()


def _after_fork(ref: weakref.ref[StoreRunner]) -> None:
    runner = ref()
    if runner is not None:
        runner._forked()


class StoreSpanExporter(SpanExporter):
    """Writes finished spans into the embedded store, which also stores the rewards carried in
    them (the same ingest path as the server's receivers, so embedded == remote).

    It runs on the BatchSpanProcessor's worker thread, so blocking until the store commits is
    fine there and gives the processor real back-pressure; when the store's queue is full the
    batch is retried until the export timeout, then dropped with a warning.
    """

    def __init__(self, runner: StoreRunner, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._runner = runner
        self._timeout = timeout
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            return self._ingest([SpanRecord(**span_fields(span)) for span in spans])
        except Exception as exc:
            logger.warning("embedded export of %d spans failed: %s", len(spans), exc)
            return SpanExportResult.FAILURE
        finally:
            detach(token)

    def _ingest(self, records: list[SpanRecord]) -> SpanExportResult:
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                self._runner.call(lambda store: store.ingest(records), timeout=self._timeout)
                return SpanExportResult.SUCCESS
            except Overloaded as exc:
                pause = min(exc.retry_after, deadline - time.monotonic())
                if pause <= 0:
                    logger.warning("embedded store overloaded; dropped %d spans", len(records))
                    return SpanExportResult.FAILURE
                time.sleep(pause)

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _reward_in(payload: dict[str, Any]) -> RewardIn:
    fields = {key: value for key, value in payload.items() if value is not None}
    if "reward_id" in fields:
        fields["id"] = fields.pop("reward_id")
    return RewardIn(**fields)


class EmbeddedSink:
    """The `Sink` of embedded mode: tasks, executions and rewards written into the store."""

    def __init__(self, runner: StoreRunner) -> None:
        self.runner = runner

    @staticmethod
    def _open(kwargs: dict[str, Any]) -> StoreCall:
        task = TaskIn(
            id=kwargs["task_id"],
            name=kwargs["name"],
            input=kwargs["input"],
            tags=kwargs["tags"],
            metadata=kwargs["metadata"],
        )
        execution = ExecutionIn(id=kwargs["execution_id"], config=kwargs["config"])

        async def run(store: EvolutionStore) -> None:
            await store.create_task(task)
            await store.start_execution(kwargs["task_id"], execution)

        return run

    def open_task(self, **kwargs: Any) -> None:
        self.runner.call(self._open(kwargs))

    async def aopen_task(self, **kwargs: Any) -> None:
        await self.runner.acall(self._open(kwargs))

    def finish_execution(self, execution_id: str, status: str) -> None:
        self.runner.call(lambda store: store.set_execution_status(execution_id, status))

    async def afinish_execution(self, execution_id: str, status: str) -> None:
        await self.runner.acall(lambda store: store.set_execution_status(execution_id, status))

    def add_reward(self, payload: dict[str, Any]) -> dict[str, Any]:
        reward = _reward_in(payload)
        stored, _created = self.runner.call(lambda store: store.add_reward(reward))
        return stored

    def resolve_prompt(
        self, agent: str, *, label: str = "production", key: str | None = None
    ) -> dict[str, Any]:
        try:
            return self.runner.call(lambda store: store.resolve_prompt(agent, label=label, key=key))
        except NotFound as exc:  # the same error as remote mode's 404
            raise EvolutionClientError(str(exc), status=404, detail=str(exc)) from exc

    def shutdown(self, timeout: float | None = None) -> None:
        self.runner.shutdown(timeout)
