"""The coach's trail in the store: a gen_ai span per analysis and a `coach.applied` marker per
application, both on the coached run's task, so the run's timeline shows when parameters
changed and what the LLM was told (issue 23).

`EvolutionStore` is async and bound to the event loop it was opened in, while the coach
writes from its analysis thread and from the user's loop, which may be plain sync code. So
every write is a coroutine handed to the store's own loop with
`asyncio.run_coroutine_threadsafe` and never waited for by the caller; `close()` / `aclose()`
wait for what is still on its way.

- `store` a database URL: the trail opens its own `EvolutionStore` on a private loop in a
  named daemon thread, and closes both at the end. Works from sync and async code alike.
- `store` an `EvolutionStore`: its loop is `loop=`, else the loop running when the trail is
  made or first used from async code (`bind`). A write that finds no loop is skipped with a
  warning. Writes run whenever that loop gets control, so a sync loop running *inside* the
  store's event loop delays them until it yields; `aclose()` then waits for them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..models import SpanRecord
from .llm import call_span

if TYPE_CHECKING:
    from ..store import EvolutionStore
    from .llm import LLMCall

logger = logging.getLogger("evolution_store.learn.coach")

#: the agent the coach's spans and markers carry
COACH_AGENT = "evolution.coach"
MARKER_KIND = "coach.applied"

Write = Callable[["EvolutionStore"], Awaitable[Any]]


class StoreTrail:
    """Fire-and-forget writes to an `EvolutionStore` from any thread (see the module)."""

    def __init__(
        self,
        store: EvolutionStore | str,
        *,
        run_id: str,
        loop: asyncio.AbstractEventLoop | None = None,
        open_timeout: float = 60.0,
    ) -> None:
        from ..store import EvolutionStore

        if not isinstance(store, EvolutionStore | str):
            raise TypeError(f"store must be an EvolutionStore or a database URL, not {store!r}")
        self.run_id = run_id
        self._lock = threading.Lock()
        self._futures: set[concurrent.futures.Future] = set()
        self._warned: set[str] = set()
        self._thread: threading.Thread | None = None
        self._closed = False
        if isinstance(store, EvolutionStore):
            self._store: EvolutionStore | None = store
            self._loop = loop or _running_loop()
            return
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="evolution-coach-store", daemon=True
        )
        self._thread.start()
        opening = asyncio.run_coroutine_threadsafe(EvolutionStore.open(store), self._loop)
        try:
            self._store = opening.result(open_timeout)
        except BaseException:
            self._stop_loop()
            raise

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Adopt `loop` as the store's loop if none is known yet."""
        if self._loop is None:
            self._loop = loop

    def submit(self, write: Write, what: str) -> None:
        """Schedule `write(store)` on the store's loop; failures are logged once per kind."""
        if self._closed or self._store is None:
            return
        if self._loop is None or self._loop.is_closed():
            self._warn_once(
                "no-loop",
                "the coach has an EvolutionStore but no event loop to write with: pass loop=, "
                "or use it from async code (aobserve/aapply); its trail is not written",
            )
            return
        try:
            future = asyncio.run_coroutine_threadsafe(_call(write, self._store), self._loop)
        except RuntimeError:  # the loop closed in between: the trail is being closed
            return
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(lambda done: self._done(done, what))

    def call(self, write: Write, timeout: float) -> Any:
        """Run `write(store)` on the store's loop and wait for its result (from a thread
        other than that loop's). `TimeoutError` when the loop does not get to it in time."""
        if self._store is None or self._loop is None:
            raise RuntimeError("no store loop to read with")
        future = asyncio.run_coroutine_threadsafe(_call(write, self._store), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError(
                f"the store's event loop did not answer within {timeout:g} s"
            ) from exc

    def span(self, record: SpanRecord) -> None:
        self.submit(lambda store: store.ingest([record]), "analysis span")

    def marker(
        self,
        *,
        generation: int,
        before: dict[str, Any],
        after: dict[str, Any],
        reason: str,
    ) -> None:
        attributes = {
            "evolution.task.id": self.run_id,
            "evolution.coach.run_id": self.run_id,
            "evolution.coach.generation": generation,
            "evolution.coach.reason": reason,
            "evolution.coach.changes": orjson.dumps(
                {p: [before[p], after[p]] for p in after}, default=str
            ).decode(),
        }
        self.submit(
            lambda store: store.add_marker(
                agent=COACH_AGENT,
                kind=MARKER_KIND,
                before=_plain(before),
                after=_plain(after),
                attributes=attributes,
            ),
            "marker",
        )

    def close(self, timeout: float) -> None:
        """Wait (up to `timeout`) for the writes on their way, then close what the trail
        opened. Idempotent. Called on the store's own loop it cannot wait, so it leaves the
        trail open for a later `aclose()`, which does."""
        if self._closed:
            return
        running = _running_loop()
        if running is not None and running is self._loop:
            if self._pending():
                logger.warning(
                    "coach.close() called inside the store's event loop: %d writes not yet "
                    "done; `await coach.aclose()` (or `async with`) waits for them",
                    len(self._pending()),
                )
            return
        self._closed = True
        concurrent.futures.wait(self._pending(), timeout)
        self._close_own(timeout)

    async def aclose(self, timeout: float) -> None:
        """`close` for async code: awaits the writes on their way without blocking the loop."""
        if self._closed:
            return
        self._closed = True
        pending = [asyncio.wrap_future(f) for f in self._pending()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        if self._thread is not None:
            await asyncio.to_thread(self._close_own, timeout)

    def _close_own(self, timeout: float) -> None:
        """Close the store and loop the trail opened itself (a URL was given)."""
        if self._thread is None or self._store is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._store.close(), self._loop)
        try:
            closing.result(timeout)
        except Exception as exc:  # noqa: BLE001 - closing must not raise into the caller
            logger.warning("the coach could not close its store: %s", exc)
        self._stop_loop()

    def _stop_loop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._store = None

    def _pending(self) -> list[concurrent.futures.Future]:
        with self._lock:
            return list(self._futures)

    def _done(self, future: concurrent.futures.Future, what: str) -> None:
        with self._lock:
            self._futures.discard(future)
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self._warn_once(what, f"the coach could not write its {what}: {error}")

    def _warn_once(self, key: str, message: str) -> None:
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        logger.warning(message)


def analysis_span(
    call: LLMCall, *, run_id: str, generation: int, prompt_version: str, outcome: dict[str, Any]
) -> SpanRecord:
    """The gen_ai span of one analysis: the LLM call with its messages and token counts, on
    the run's task (one trace per run), plus what the coach made of the reply."""
    output = [] if call.reply is None else [_message("assistant", call.reply)]
    attributes: dict[str, Any] = {
        "gen_ai.input.messages": json.dumps(
            [_message(m.get("role", "user"), str(m.get("content", ""))) for m in call.messages]
        ),
        "gen_ai.output.messages": json.dumps(output),
        "evolution.task.id": run_id,
        "evolution.coach.run_id": run_id,
        "evolution.coach.generation": generation,
        "evolution.coach.prompt_version": prompt_version,
        **{f"evolution.coach.{key}": value for key, value in outcome.items()},
    }
    return call_span(
        call,
        agent=COACH_AGENT,
        trace_id=_hex(f"coach-run:{run_id}", 32),
        span_id=secrets.token_hex(8),
        attributes=attributes,
    )


async def _call(write: Write, store: EvolutionStore) -> Any:
    return await write(store)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _message(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"type": "text", "content": text}]}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """JSON-safe values for a marker: config values may be anything a user keeps there."""
    return orjson.loads(orjson.dumps(values, default=str, option=orjson.OPT_NON_STR_KEYS))


def _hex(text: str, width: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:width]
