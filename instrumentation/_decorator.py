"""`@track_evolution`: one span per call of a sync, async, generator or async generator function.

Everything that does not depend on the call is computed once at decoration time (`_Spec`:
span name, static attributes, argument names). A call then costs one `start_span`, one
context attach/detach and, when the span is recording and `capture_io` is on, a zip of the
arguments and one capped JSON dump. The call's own behaviour is untouched: arguments, return
values and exceptions (including `asyncio.CancelledError`) pass through unchanged.

Operation names: the outermost decorated call in a context gets `gen_ai.operation.name =
"invoke_agent"`; decorated calls nested inside it get `"execute_tool"` (plus `gen_ai.tool.name`),
since a decorated helper called by an agent is usually one of its tools or steps. Pass
`operation=` to choose yourself. Nested calls carry the calling agent's `gen_ai.agent.name`
(the store's per-agent stats then add a tool's tokens and cost to its agent), except a nested
`operation="invoke_agent"` call, which is a sub-agent of its own.
"""

from __future__ import annotations

import collections.abc
import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from opentelemetry import context as context_api
from opentelemetry.trace import Span, Status, StatusCode, set_span_in_context

from ._current import CURRENT_PROMPTS, CURRENT_TASK, CurrentPrompt, CurrentTask
from ._serialize import value_attributes
from ._state import STATE, TAGS_ATTR, get_tracer

F = TypeVar("F", bound=Callable[..., Any])

_TRACKED_KEY = context_api.create_key("evolution-tracked")
OPERATION_ATTR = "gen_ai.operation.name"
AGENT_NAME_ATTR = "gen_ai.agent.name"
TOOL_NAME_ATTR = "gen_ai.tool.name"
ROOT_OPERATION = "invoke_agent"
AGENT_OPERATIONS = frozenset({"invoke_agent", "create_agent"})
NESTED_OPERATION = "execute_tool"
_MAX_STATUS = 1000
_MAX_STREAM_ITEMS = 256


class _Spec:
    """Per-function data, computed once at decoration time."""

    __slots__ = (
        "name",
        "root_attrs",
        "nested_attrs",
        "own_agent",
        "capture_io",
        "signature",
        "positional",
        "skip",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str,
        tags: tuple[str, ...],
        capture_io: bool,
        operation: str | None,
        skip_first: bool,
    ) -> None:
        self.name = name
        base: dict[str, Any] = {AGENT_NAME_ATTR: name}
        if tags:
            base[TAGS_ATTR] = tags
        self.root_attrs = {OPERATION_ATTR: operation or ROOT_OPERATION, **base}
        self.nested_attrs = (
            self.root_attrs
            if operation
            else {OPERATION_ATTR: NESTED_OPERATION, TOOL_NAME_ATTR: name, **base}
        )
        # A nested sub-agent keeps its own agent name; any other nested call (a tool, a step,
        # an LLM call) is attributed to the agent that made it, so per-agent stats add up.
        self.own_agent = operation in AGENT_OPERATIONS
        self.capture_io = capture_io
        try:
            self.signature: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):  # some builtins have no signature
            self.signature = None
        params = list(self.signature.parameters.values()) if self.signature else []
        self.positional = tuple(
            p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        )
        self.skip = params[0].name if skip_first and params else None

    def input_attributes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        if len(args) <= len(self.positional):
            arguments = dict(zip(self.positional, args, strict=False))
            if kwargs:
                arguments.update(kwargs)
        else:  # *args in play: let Signature.bind sort them out
            try:
                arguments = dict(self.signature.bind(*args, **kwargs).arguments)  # type: ignore[union-attr]
            except (TypeError, AttributeError):
                arguments = {"args": list(args), "kwargs": kwargs}
        if self.skip is not None:
            arguments.pop(self.skip, None)
        return value_attributes("input", arguments)


def _display_name(fn: Callable[..., Any]) -> str:
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return qualname.rpartition("<locals>.")[2]


def _start(spec: _Spec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Span, Any]:
    """Start the call's span as a child of the current context; return it and its context."""
    parent = context_api.get_current()
    agent = context_api.get_value(_TRACKED_KEY, parent)  # the outermost tracked call's name
    if agent is None:
        attributes = spec.root_attrs
    elif spec.own_agent or agent == spec.name:
        attributes = spec.nested_attrs
    else:  # per-agent stats then count an agent's tools as the agent's work
        attributes = {**spec.nested_attrs, AGENT_NAME_ATTR: agent}
    tracer = STATE.tracer or get_tracer()
    span = tracer.start_span(
        spec.name,
        parent,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    )
    if spec.capture_io and span.is_recording():
        try:  # noqa: SIM105 - contextlib.suppress costs more on this per-call path
            span.set_attributes(spec.input_attributes(args, kwargs))
        except Exception:  # capturing inputs must never break the call
            pass
    ctx = set_span_in_context(span, parent)
    if agent is None or (spec.own_agent and agent != spec.name):
        ctx = context_api.set_value(_TRACKED_KEY, spec.name, ctx)  # calls below are its work
    return span, ctx


def _record_error(span: Span, exc: BaseException) -> None:
    try:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        span.set_status(Status(StatusCode.ERROR, message[:_MAX_STATUS]))
        span.record_exception(exc, escaped=True)
    except Exception:
        pass


def _record_output(span: Span, value: Any) -> None:
    try:
        if span.is_recording():
            span.set_attributes(value_attributes("output", value))
    except Exception:
        pass


def _wrap_function(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    capture = spec.capture_io

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span, ctx = _start(spec, args, kwargs)
        token = context_api.attach(ctx)
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # recorded, then re-raised unchanged
            _record_error(span, exc)
            span.end()
            raise
        finally:
            context_api.detach(token)
        if capture:
            _record_output(span, result)
        span.end()
        return result

    return wrapper


def _wrap_coroutine_function(fn: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    capture = spec.capture_io

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        span, ctx = _start(spec, args, kwargs)
        token = context_api.attach(ctx)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:  # includes CancelledError: recorded, re-raised
            _record_error(span, exc)
            span.end()
            raise
        finally:
            context_api.detach(token)
        if capture:
            _record_output(span, result)
        span.end()
        return result

    return wrapper


class _StreamState:
    """What a traced (async) generator shares: its span, context and collected output."""

    __slots__ = ("span", "ctx", "capture", "items", "done", "task", "prompts")

    def __init__(self, span: Span, ctx: Any, capture: bool) -> None:
        self.span = span
        self.ctx = ctx
        self.capture = capture
        self.items: list[Any] = []
        self.done = False
        # Context is captured at creation: steps run with the creator's task and prompts, not
        # the consumer's.
        self.task: CurrentTask | None = CURRENT_TASK.get()
        self.prompts: tuple[CurrentPrompt, ...] = CURRENT_PROMPTS.get()

    def enter(self) -> tuple[object, Any, Any]:
        token = context_api.attach(self.ctx)
        task = self.task
        task_token = prompts_token = None
        if task is not None and CURRENT_TASK.get() is not task:
            task_token = CURRENT_TASK.set(task)
        if CURRENT_PROMPTS.get() is not self.prompts:
            prompts_token = CURRENT_PROMPTS.set(self.prompts)
        return token, task_token, prompts_token

    def leave(self, tokens: tuple[object, Any, Any]) -> None:
        token, task_token, prompts_token = tokens
        if prompts_token is not None:
            CURRENT_PROMPTS.reset(prompts_token)
        if task_token is not None:
            CURRENT_TASK.reset(task_token)
        context_api.detach(token)

    def collect(self, item: Any) -> None:
        if self.capture and len(self.items) < _MAX_STREAM_ITEMS:
            self.items.append(item)

    def finish(self, exc: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        if exc is not None:
            _record_error(self.span, exc)
        elif self.capture and self.items:
            items = self.items
            joined = "".join(items) if all(isinstance(i, str) for i in items) else items
            _record_output(self.span, joined)
        self.items = []
        self.span.end()


class _TracedGenerator(collections.abc.Generator):
    """A generator whose span covers its whole life: it ends when the generator is exhausted,
    raises, is closed, or is garbage-collected. Each step runs inside the span's context."""

    __slots__ = ("_gen", "_state")

    def __init__(self, gen: collections.abc.Generator, state: _StreamState) -> None:
        self._gen = gen
        self._state = state

    def __next__(self) -> Any:
        return self._step(self._gen.send, None)

    def send(self, value: Any) -> Any:
        return self._step(self._gen.send, value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._step(self._gen.throw, typ)
        return self._step(self._gen.throw, typ, val, tb)

    def _step(self, method: Callable[..., Any], *args: Any) -> Any:
        state = self._state
        tokens = state.enter()
        try:
            item = method(*args)
        except StopIteration as stop:
            if stop.value is not None:
                state.collect(stop.value)
            state.finish()
            raise
        except BaseException as exc:
            state.finish(exc)
            raise
        finally:
            state.leave(tokens)
        state.collect(item)
        return item

    def close(self) -> None:
        state = self._state
        if state.done:
            self._gen.close()
            return
        tokens = state.enter()
        try:
            self._gen.close()
        except BaseException as exc:
            state.finish(exc)
            raise
        finally:
            state.leave(tokens)
        state.finish()

    def __getattr__(self, name: str) -> Any:  # gi_frame, gi_running, ...
        return getattr(self._gen, name)

    def __del__(self) -> None:
        if not self._state.done:
            with contextlib.suppress(Exception):
                self.close()


class _TracedAsyncGenerator(collections.abc.AsyncGenerator):
    """The async twin of `_TracedGenerator` (`asend`, `athrow`, `aclose`)."""

    __slots__ = ("_agen", "_state")

    def __init__(self, agen: collections.abc.AsyncGenerator, state: _StreamState) -> None:
        self._agen = agen
        self._state = state

    def __anext__(self) -> Any:
        return self._step(self._agen.asend, None)

    def asend(self, value: Any) -> Any:
        return self._step(self._agen.asend, value)

    def athrow(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if val is None and tb is None:
            return self._step(self._agen.athrow, typ)
        return self._step(self._agen.athrow, typ, val, tb)

    async def _step(self, method: Callable[..., Any], *args: Any) -> Any:
        state = self._state
        tokens = state.enter()
        try:
            item = await method(*args)
        except StopAsyncIteration:
            state.finish()
            raise
        except BaseException as exc:
            state.finish(exc)
            raise
        finally:
            state.leave(tokens)
        state.collect(item)
        return item

    async def aclose(self) -> None:
        state = self._state
        if state.done:
            await self._agen.aclose()
            return
        tokens = state.enter()
        try:
            await self._agen.aclose()
        except BaseException as exc:
            state.finish(exc)
            raise
        finally:
            state.leave(tokens)
        state.finish()

    def __getattr__(self, name: str) -> Any:  # ag_frame, ag_running, ...
        return getattr(self._agen, name)

    def __del__(self) -> None:
        # Cannot await aclose() here; the event loop's async-generator hooks close the inner one.
        if not self._state.done:
            with contextlib.suppress(Exception):
                self._state.finish()


def _wrap_generator_function(
    fn: Callable[..., Any], spec: _Spec, traced: type[_TracedGenerator | _TracedAsyncGenerator]
) -> Callable[..., Any]:
    capture = spec.capture_io

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        span, ctx = _start(spec, args, kwargs)
        token = context_api.attach(ctx)
        try:
            gen = fn(*args, **kwargs)
        except BaseException as exc:
            _record_error(span, exc)
            span.end()
            raise
        finally:
            context_api.detach(token)
        return traced(gen, _StreamState(span, ctx, capture))

    return wrapper


def wrap_callable(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    tags: Iterable[str] = (),
    capture_io: bool = True,
    operation: str | None = None,
    skip_first: bool | None = None,
) -> Callable[..., Any]:
    """Trace `fn` (a function or a bound method); shared by the decorator and the proxy."""
    if skip_first is None:
        try:
            first = next(iter(inspect.signature(fn).parameters), None)
        except (TypeError, ValueError):
            first = None
        skip_first = first in ("self", "cls")
    tags = (tags,) if isinstance(tags, str) else tuple(tags)
    spec = _Spec(
        fn,
        name=name or _display_name(fn),
        tags=tags,
        capture_io=capture_io,
        operation=operation,
        skip_first=skip_first,
    )
    if inspect.isasyncgenfunction(fn):
        return _wrap_generator_function(fn, spec, _TracedAsyncGenerator)
    if inspect.isgeneratorfunction(fn):
        return _wrap_generator_function(fn, spec, _TracedGenerator)
    if inspect.iscoroutinefunction(fn):
        return _wrap_coroutine_function(fn, spec)
    return _wrap_function(fn, spec)


@overload
def track_evolution(name: F, /) -> F: ...


@overload
def track_evolution(
    name: str | None = None,
    tags: Iterable[str] = (),
    capture_io: bool = True,
    *,
    operation: str | None = None,
) -> Callable[[F], F]: ...


def track_evolution(
    name: Any = None,
    tags: Iterable[str] = (),
    capture_io: bool = True,
    *,
    operation: str | None = None,
) -> Any:
    """Trace every call of a function or method as a span, bare (`@track_evolution`) or with
    options (`@track_evolution("planner", tags=["v2"])`).

    Works on sync, async, generator and async generator functions, methods, classmethods and
    staticmethods. Arguments (minus self/cls) are stored as JSON in `input.value`, the result
    in `output.value` (capped at 16 KiB; streams store their items), unless `capture_io=False`
    (for secrets or very large values). Exceptions and cancellation mark the span ERROR with an
    exception event and propagate unchanged. Spans nest through contextvars, so nesting is
    right across `await`s and asyncio tasks; threads started by hand do not inherit it.
    Attributes: `gen_ai.operation.name` = `invoke_agent` for the outermost decorated call,
    `execute_tool` (+ `gen_ai.tool.name`) for decorated calls inside it, or `operation=`;
    `gen_ai.agent.name` = the name (default the function's qualified name) of the agent whose
    work the call is: the outermost call's, or the nearest `operation="invoke_agent"` call's;
    `evolution.tags`.

    ```python
    @track_evolution(tags=["prod"])
    async def answer(question: str) -> str:
        return await llm(question)
    ```
    """

    def decorate(fn: Any) -> Any:
        if isinstance(fn, classmethod | staticmethod):
            inner = wrap_callable(
                fn.__func__,
                name=name,
                tags=tags,
                capture_io=capture_io,
                operation=operation,
                skip_first=isinstance(fn, classmethod),
            )
            return type(fn)(inner)
        return wrap_callable(fn, name=name, tags=tags, capture_io=capture_io, operation=operation)

    if callable(name) or isinstance(name, classmethod | staticmethod):
        fn, name = name, None
        return decorate(fn)
    return decorate
