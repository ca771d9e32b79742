"""`task()`: one Task and a new Execution around a block of agent work, and the span processor
that stamps their ids on every span started inside it.

Ids are generated client-side (uuid4 hex), so nothing waits for the server before spans can
carry them; the Task and Execution are still created explicitly so name, input, tags and
status are stored. A sink failure is logged, never raised: tracing must not break the agent.
The handle of the innermost block sits in `_current.CURRENT_TASK`.

A prompt handle (`task(..., prompt=handle)`, or a `with handle:` block around the `task()`
call) adds its `evolution.prompt.*` attributes to the task's spans and its id, version and
experiment variant to the execution's config, so rewards group by `config:prompt_id`.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ._current import CURRENT_PROMPTS, CURRENT_TASK, CurrentPrompt, CurrentTask
from ._rewards import emit_reward
from ._serialize import jsonable
from ._state import EXECUTION_ID_ATTR, STATE, TASK_ID_ATTR, logger


class TaskHandle:
    """What `with task(...) as t` gives you: the ids spans are stamped with, and `reward()`.

    ```python
    with instrumentation.task("answer", input={"q": q}) as t:
        answer = agent(q)
        t.reward(1.0 if answer == expected else 0.0)
    ```
    """

    __slots__ = (
        "task_id",
        "execution_id",
        "name",
        "input",
        "tags",
        "metadata",
        "config",
        "prompt",
        "span_attributes",
    )

    def __init__(
        self,
        *,
        task_id: str,
        execution_id: str,
        name: str,
        input: Any,
        tags: tuple[str, ...],
        metadata: dict[str, Any],
        config: dict[str, Any],
        prompt: CurrentPrompt | None = None,
    ) -> None:
        self.task_id = task_id
        self.execution_id = execution_id
        self.name = name
        self.input = input
        self.tags = tags
        self.metadata = metadata
        self.config = config
        self.prompt = prompt
        # Built once, so the span processor stamps every span of the block in one call.
        self.span_attributes: Mapping[str, str | int] = {
            **(prompt.span_attributes if prompt is not None else {}),
            TASK_ID_ATTR: task_id,
            EXECUTION_ID_ATTR: execution_id,
        }

    def reward(self, value: float | Mapping[str, float], **kwargs: Any) -> dict[str, Any] | None:
        """`emit_reward` aimed at this execution unless `kwargs` names another target."""
        if not any(
            kwargs.get(key) for key in ("span_id", "trace_id", "task_id", "execution_id", "links")
        ):
            kwargs["execution_id"] = self.execution_id
        return emit_reward(value, **kwargs)

    def __repr__(self) -> str:
        return f"TaskHandle(task_id={self.task_id!r}, execution_id={self.execution_id!r})"


def _status_for(exc: BaseException | None) -> str:
    if exc is None:
        return "succeeded"
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is TimeoutError since 3.11
        return "timeout"
    return "failed"


class _TaskScope:
    """The object `task()` returns; usable once, with `with` or `async with`."""

    __slots__ = ("_handle", "_token", "_used")

    def __init__(self, handle: TaskHandle) -> None:
        self._handle = handle
        self._token: contextvars.Token[CurrentTask | None] | None = None
        self._used = False

    def _claim(self) -> None:
        if self._used:
            raise RuntimeError("a task() block can be entered only once; call task() again")
        self._used = True

    def _open_args(self) -> dict[str, Any]:
        h = self._handle
        return {
            "task_id": h.task_id,
            "execution_id": h.execution_id,
            "name": h.name,
            "input": h.input,
            "tags": list(h.tags),
            "metadata": h.metadata,
            "config": h.config,
        }

    def _enter(self) -> TaskHandle:
        self._token = CURRENT_TASK.set(self._handle)
        return self._handle

    def _exit(self) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        try:
            CURRENT_TASK.reset(token)
        except ValueError:  # exited in another context (e.g. a generator moved across tasks)
            CURRENT_TASK.set(token.old_value if token.old_value is not token.MISSING else None)

    def __enter__(self) -> TaskHandle:
        self._claim()
        sink = STATE.sink
        if sink is not None:
            try:
                sink.open_task(**self._open_args())
            except Exception as exc:
                logger.warning("could not record task %s: %s", self._handle.task_id, exc)
        return self._enter()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()
        sink = STATE.sink
        if sink is not None:
            try:
                sink.finish_execution(self._handle.execution_id, _status_for(exc))
            except Exception as error:
                logger.warning(
                    "could not record the end of execution %s: %s",
                    self._handle.execution_id,
                    error,
                )

    async def __aenter__(self) -> TaskHandle:
        self._claim()
        sink = STATE.sink
        if sink is not None:
            try:
                await sink.aopen_task(**self._open_args())
            except Exception as exc:
                logger.warning("could not record task %s: %s", self._handle.task_id, exc)
        return self._enter()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit()
        sink = STATE.sink
        if sink is None:
            return
        status = _status_for(exc)
        try:
            # Shielded so a cancelled task still records that it failed.
            await asyncio.shield(sink.afinish_execution(self._handle.execution_id, status))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.warning(
                "could not record the end of execution %s: %s", self._handle.execution_id, error
            )


def task(
    name: str,
    input: Any = None,
    task_id: str | None = None,
    tags: Iterable[str] = (),
    *,
    metadata: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    prompt: CurrentPrompt | None = None,
) -> _TaskScope:
    """Open a Task and a new Execution of it for the block; spans inside carry their ids.

    A `task_id` the store already knows makes this a retry: a new execution (attempt n+1) of
    the same task. `config` is stored on the execution (prompt version, model, ...: what the
    learners compare). `prompt` (a `PromptHandle` from `get_prompt`; default: the one of an
    enclosing `with handle:` block) stamps its id and version on the block's spans and adds
    `prompt_id`, `prompt_version`, `experiment_id` and `variant` to `config`. On exit the
    execution is marked succeeded, failed, or timeout (on `TimeoutError`); the exception, if
    any, propagates unchanged.

    ```python
    async with instrumentation.task("triage", input=ticket, tags=["prod"]) as t:
        await agent.run(ticket)
    ```
    """
    if isinstance(tags, str):
        tags = (tags,)
    if prompt is None:
        prompts = CURRENT_PROMPTS.get()
        prompt = prompts[-1] if prompts else None
    if prompt is not None:
        config = {**prompt.execution_config(), **dict(config or {})}  # explicit keys win
    handle = TaskHandle(
        task_id=task_id or uuid.uuid4().hex,
        execution_id=uuid.uuid4().hex,
        name=name,
        input=jsonable(input),
        tags=tuple(tags),
        metadata=dict(metadata or {}),
        config=jsonable(dict(config or {})),
        prompt=prompt,
    )
    return _TaskScope(handle)


class EvolutionSpanProcessor(SpanProcessor):
    """Stamps task/execution ids on starting spans and forwards every span to the processors
    `configure()` installed (batch processors around our exporters).

    Installed once per TracerProvider; `configure()` swaps the processors behind it, which is
    how a second `configure()` call replaces the first even on a global provider that cannot be
    replaced. `on_start` costs two contextvar reads: the task's attributes, then those of the
    innermost prompt in use (`with handle:`), which win over a prompt given to `task()`.
    """

    def __init__(self) -> None:
        self._processors: tuple[SpanProcessor, ...] = ()

    def set_processors(self, processors: Iterable[SpanProcessor]) -> tuple[SpanProcessor, ...]:
        """Install new processors and return the old ones (the caller shuts them down)."""
        old, self._processors = self._processors, tuple(processors)
        return old

    @property
    def processors(self) -> tuple[SpanProcessor, ...]:
        return self._processors

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        handle = CURRENT_TASK.get()
        if handle is not None:
            span.set_attributes(handle.span_attributes)
        prompts = CURRENT_PROMPTS.get()
        if prompts:
            span.set_attributes(prompts[-1].span_attributes)
        for processor in self._processors:
            processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for processor in self._processors:
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self.set_processors(()):
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return all([processor.force_flush(timeout_millis) for processor in self._processors])
