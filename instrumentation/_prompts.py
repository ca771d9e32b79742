"""`get_prompt()`: the prompt an agent should use now, from the registry (DESIGN §7), cached so
the agent's path almost never waits on the network, and `PromptHandle`, what it returns.

The cache holds one entry per (agent, label, key): during an A/B experiment the answer depends
on the sticky key. An entry is fresh for `CACHE_TTL` seconds (60, as Langfuse's client); after
that it is still served while one daemon thread per entry fetches the new answer
(stale-while-revalidate). Only the first call for a key waits on a fetch. When a fetch fails
(server down, no prompt under that label, not configured) the last good answer keeps being
served, else the caller's `fallback`; one warning is logged per run of failures, not one per
call. Without a cached answer or a fallback, `get_prompt` fetches again and raises
`EvolutionClientError` if that fails too.

The answer comes from the configured sink (`STATE.sink.resolve_prompt`: REST in remote mode,
the store in embedded mode); a new `configure()` means a new sink and an empty cache.

`with handle:` pushes the handle onto `_current.CURRENT_PROMPTS`, so the span processor stamps
`evolution.prompt.id` / `.version` (and the experiment's id and variant) on spans started
inside, and `task()` opened inside records them in the execution's config.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._current import CURRENT_PROMPTS
from ._exceptions import EvolutionClientError
from ._state import STATE, logger

if TYPE_CHECKING:
    from jinja2 import Template

    from ._sinks import Sink

CACHE_TTL = 60.0
"""Seconds a fetched prompt is served before a background refresh is started."""
MAX_CACHED = 4096
"""Entries kept (least recently used dropped): sticky keys are often user ids."""
REFRESH_THREAD_NAME = "evolution-prompt-refresh"

PROMPT_ID_ATTR = "evolution.prompt.id"
PROMPT_VERSION_ATTR = "evolution.prompt.version"
EXPERIMENT_ID_ATTR = "evolution.experiment.id"
EXPERIMENT_VARIANT_ATTR = "evolution.experiment.variant"


@functools.cache
def _environment() -> Any:
    # Sandboxed: templates may be written by learners (an LLM), and rendering must not reach
    # Python internals. Jinja2 is imported on first render, not with the package.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True, slots=True)
class PromptHandle:
    """A prompt version as `get_prompt` served it; `id` and `version` are None for a fallback.

    ```python
    prompt = instrumentation.get_prompt("triage", key=user_id, fallback=DEFAULT_PROMPT)
    with prompt:                       # spans inside carry evolution.prompt.id / .version
        reply = llm(prompt.render(ticket=ticket))
    ```

    `render(**variables)` fills the Jinja2 template; a variable the template uses but the call
    does not give raises `jinja2.UndefinedError`. `task(..., prompt=handle)` (or a `task()`
    opened inside `with handle:`) also records `prompt_id`, `prompt_version`, `experiment_id`
    and `variant` in the execution's config, which is what experiment results group by.
    """

    id: str | None
    version: int | None
    content: str
    experiment_id: str | None = None
    variant: int | None = None
    agent: str | None = None
    label: str | None = None
    span_attributes: Mapping[str, str | int] = field(init=False, repr=False, compare=False)
    _template: Template | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        attributes = {
            PROMPT_ID_ATTR: self.id,
            PROMPT_VERSION_ATTR: self.version,
            EXPERIMENT_ID_ATTR: self.experiment_id,
            EXPERIMENT_VARIANT_ATTR: self.variant,
        }
        # Built once: the span processor stamps it on every span started under the handle.
        object.__setattr__(
            self,
            "span_attributes",
            {key: value for key, value in attributes.items() if value is not None},
        )

    @classmethod
    def from_resolved(cls, answer: Mapping[str, Any], label: str | None = None) -> PromptHandle:
        """A handle from the registry's resolve answer (`GET /agents/{agent}/prompt`)."""
        return cls(
            id=answer["id"],
            version=answer["version"],
            content=answer["content"],
            experiment_id=answer.get("experiment_id"),
            variant=answer.get("variant"),
            agent=answer.get("agent"),
            label=answer.get("label", label),
        )

    def render(self, **variables: Any) -> str:
        """The template filled with `variables` (Jinja2; undefined variables raise)."""
        template = self._template
        if template is None:
            template = _environment().from_string(self.content)
            object.__setattr__(self, "_template", template)
        return template.render(**variables)

    def execution_config(self) -> dict[str, Any]:
        """What `task(..., prompt=self)` adds to the execution's config."""
        config = {
            "prompt_id": self.id,
            "prompt_version": self.version,
            "experiment_id": self.experiment_id,
            "variant": self.variant,
        }
        return {key: value for key, value in config.items() if value is not None}

    def __enter__(self) -> PromptHandle:
        CURRENT_PROMPTS.set((*CURRENT_PROMPTS.get(), self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = CURRENT_PROMPTS.get()
        for index in range(len(stack) - 1, -1, -1):  # innermost first; tolerate odd nesting
            if stack[index] is self:
                CURRENT_PROMPTS.set(stack[:index] + stack[index + 1 :])
                return

    async def __aenter__(self) -> PromptHandle:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


CacheKey = tuple[str, str, str | None]


class _Entry:
    """One (agent, label, key): the last good answer and how the latest fetch went."""

    __slots__ = ("handle", "error", "expires", "fetches", "refreshing", "warned", "fetch_lock")

    def __init__(self) -> None:
        self.handle: PromptHandle | None = None
        self.error: Exception | None = None  # the latest fetch's failure, None after a success
        self.expires = 0.0  # monotonic time after which a refresh is due
        self.fetches = 0
        self.refreshing = False
        self.warned = False  # one warning per run of failures
        self.fetch_lock = threading.Lock()  # one blocking fetch at a time


class PromptCache:
    """The process's cache of resolved prompts (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        self._sink: Sink | None = None

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def entry(self, key: CacheKey, sink: Sink | None) -> _Entry:
        with self._lock:
            if sink is not self._sink:  # configure() was called again: another server or store
                self._entries.clear()
                self._sink = sink
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                if len(self._entries) > MAX_CACHED:
                    self._entries.popitem(last=False)
            else:
                self._entries.move_to_end(key)
            return entry

    def fetch(self, entry: _Entry, sink: Sink | None, key: CacheKey, ttl: float) -> None:
        """Ask the sink for the prompt and record the answer or the failure in `entry`."""
        agent, label, sticky = key
        try:
            if sink is None:
                raise EvolutionClientError(
                    "instrumentation is not configured: call instrumentation.configure(...) "
                    "first, or pass get_prompt(..., fallback=...)"
                )
            handle = PromptHandle.from_resolved(
                sink.resolve_prompt(agent, label=label, key=sticky), label
            )
        except Exception as exc:  # any failure: the callers serve the cache or the fallback
            with self._lock:
                entry.error = exc
                entry.expires = time.monotonic() + ttl
                entry.fetches += 1
            return
        with self._lock:
            entry.handle, entry.error, entry.warned = handle, None, False
            entry.expires = time.monotonic() + ttl
            entry.fetches += 1

    def fetch_now(self, entry: _Entry, sink: Sink | None, key: CacheKey, ttl: float) -> None:
        """Fetch on the caller's thread; callers queued behind a fetch reuse its outcome."""
        seen = entry.fetches
        with entry.fetch_lock:
            if entry.fetches == seen:
                self.fetch(entry, sink, key, ttl)

    def serve(
        self, entry: _Entry, sink: Sink | None, key: CacheKey, ttl: float
    ) -> tuple[PromptHandle | None, Exception | None]:
        """What the entry holds now; if it has expired, a background refresh is started
        (unless one is running) for the calls after this one."""
        with self._lock:
            served = entry.handle, entry.error
            if entry.refreshing or time.monotonic() < entry.expires:
                return served
            entry.refreshing = True
        thread = threading.Thread(
            target=self._refresh,
            args=(entry, sink, key, ttl),
            name=REFRESH_THREAD_NAME,
            daemon=True,
        )
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: keep serving what we have
            with self._lock:
                entry.refreshing = False
        return served

    def _refresh(self, entry: _Entry, sink: Sink | None, key: CacheKey, ttl: float) -> None:
        try:
            self.fetch_now(entry, sink, key, ttl)
        finally:
            with self._lock:
                entry.refreshing = False

    def warn_once(self, entry: _Entry) -> bool:
        """True for the first caller to see the entry's current failure."""
        with self._lock:
            if entry.warned or entry.error is None:
                return False
            entry.warned = True
            return True

    def after_fork(self) -> None:
        # A refresh thread of the parent does not exist here: its flags and locks are reset.
        self._lock = threading.Lock()
        for entry in self._entries.values():
            entry.refreshing = False
            entry.fetch_lock = threading.Lock()


CACHE = PromptCache()
os.register_at_fork(after_in_child=CACHE.after_fork)


def get_prompt(
    agent: str,
    label: str = "production",
    key: str | None = None,
    fallback: str | PromptHandle | None = None,
    *,
    cache_ttl: float | None = None,
) -> PromptHandle:
    """The prompt `agent` should use now: the version `label` names, or, while an A/B
    experiment runs, the variant the sticky `key` (a user or session id) is assigned to.

    Served from a per-process cache (fresh for `cache_ttl`, default 60 s, then refreshed in
    the background while the cached value is still served). If the registry cannot answer,
    the cached value is served, else `fallback` (a template string or a `PromptHandle`; its
    `id` is None) and one warning is logged. With neither, `EvolutionClientError` is raised.

    ```python
    prompt = instrumentation.get_prompt("triage", fallback="You triage {{ ticket }}.")
    with instrumentation.task("triage", input=ticket, prompt=prompt):
        reply = llm(prompt.render(ticket=ticket))
    ```
    """
    ttl = CACHE_TTL if cache_ttl is None else cache_ttl
    sink = STATE.sink
    cache_key: CacheKey = (agent, label, key)
    entry = CACHE.entry(cache_key, sink)
    if entry.fetches == 0 or (entry.handle is None and fallback is None):
        CACHE.fetch_now(entry, sink, cache_key, ttl)  # nothing to serve without waiting
        handle, error = entry.handle, entry.error
    else:
        handle, error = CACHE.serve(entry, sink, cache_key, ttl)
    if handle is not None:
        if error is not None and CACHE.warn_once(entry):
            logger.warning(
                "prompt registry unavailable for agent %r label %r (%s); serving cached "
                "version %s until it answers",
                agent,
                label,
                error,
                handle.version,
            )
        return handle
    if fallback is not None:
        if CACHE.warn_once(entry):
            logger.warning(
                "prompt registry unavailable for agent %r label %r (%s); using the fallback "
                "prompt until it answers",
                agent,
                label,
                error,
            )
        if isinstance(fallback, PromptHandle):
            return fallback
        return _fallback_handle(fallback, agent, label)
    status = getattr(error, "status", None)
    raise EvolutionClientError(
        f"no prompt for agent {agent!r} label {label!r}: {error}", status=status
    ) from error


@functools.lru_cache(maxsize=256)
def _fallback_handle(content: str, agent: str, label: str) -> PromptHandle:
    # Cached so a fallback served on every call compiles its template once.
    return PromptHandle(id=None, version=None, content=content, agent=agent, label=label)
