"""The async evolution coach (issue 23): an LLM watches a running optimisation loop (a GA, the
APO engine) every `interval` generations, recommends parameter changes within bounds the user
declared, has them applied at the loop's next `apply` without stopping it, and reports whether
they helped.

The loop must never wait for the LLM. So `observe` only records (a few small copies) and, on
every `interval`-th call, hands a snapshot to a named daemon thread; `apply` only looks into a
lock-protected slot that thread fills. At most one analysis is in flight: an interval that
comes while one runs is skipped and counted, never queued. A slow or dead LLM costs only failed
analyses (each call bounded by `timeout`; a failure is logged once and skipped).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import numbers
import os
import secrets
import threading
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from statistics import fmean
from typing import Any

from .coach_analysis import AnalysisFailed, Analyst, Outcome, Snapshot
from .coach_prompt import (
    Generation,
    Recommendation,
    Refusal,
    describe_application,
    parse_bounds,
    trim_lines,
)
from .coach_trail import StoreTrail

__all__ = ["Application", "Coach", "Recommendation", "Refusal"]

logger = logging.getLogger(__name__)

#: applications the LLM is shown, newest last
SHOWN_APPLICATIONS = 3


@dataclasses.dataclass(frozen=True)
class Application:
    """Recommendations applied by one `apply`: `changes` is `{parameter: (old, new)}`;
    `generation` the last one observed before it (the new values hold from the next)."""

    generation: int | None
    changes: dict[str, tuple[Any, Any]]
    reason: str
    at: datetime


@dataclasses.dataclass
class _Effect:
    """The tracked metric over the `interval` generations before an application and after."""

    application: Application
    before: list[float]
    after: list[float] = dataclasses.field(default_factory=list)


class Coach:
    """Recommends parameter changes for a running loop from an LLM, in the background.

    Usage::

        coach = Coach(
            "http://127.0.0.1:1234/v1",  # OpenAI-compatible (LM Studio by default)
            interval=5,
            parameters={"mutation_rate": (0.0, 1.0), "population": (4, 200)},
        )
        for gen in range(200):
            ...one generation...
            coach.observe(gen, metrics={"best": b, "mean": m}, config=cfg, log_lines=lines)
            cfg = coach.apply(cfg)
        coach.close()
        coach.applications, coach.stats()

    `llm`: a base URL (None: `EVOLUTION_LLM_BASE_URL`, else `OPENAI_BASE_URL`, else LM Studio's
    `http://127.0.0.1:1234/v1`) or an object with `.complete(messages) -> str`. `parameters`:
    `{name: (low, high)}` (inclusive; integers when both ends are ints) or `{name: [choices]}`;
    anything else the LLM names is refused. `auto_apply=False` keeps accepted recommendations
    in `pending` until `approve()`. `prompt_version`: a packaged prompt (`"v1"`) or
    `"registry:<label>"`, the prompt of agent `evolution.coach` with that label, read from
    `store` at each analysis (an analysis that cannot read it fails; no silent fallback).
    `store` (an `EvolutionStore` or a database URL) gets a gen_ai span per analysis and a
    `coach.applied` marker per application on task `run_id` (see `coach_trail`). `metric` is
    the tracked metric, `goal` "max" or "min" says which way is better.
    """

    def __init__(
        self,
        llm: Any = None,
        model: str | None = None,
        *,
        parameters: Mapping[str, Any],
        interval: int = 5,
        max_log_generations: int = 25,
        auto_apply: bool = True,
        prompt_version: str = "v1",
        store: Any = None,
        run_id: str | None = None,
        metric: str = "best",
        goal: str = "max",
        max_log_lines: int = 5,
        max_line_chars: int = 200,
        timeout: float = 60.0,
        temperature: float = 0.2,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if interval < 1 or max_log_generations < 1:
            raise ValueError("interval and max_log_generations must be at least 1")
        if goal not in ("max", "min"):
            raise ValueError(f"goal must be 'max' or 'min', not {goal!r}")
        self.interval = interval
        self.max_log_generations = max_log_generations
        self.max_log_lines = max_log_lines
        self.max_line_chars = max_line_chars
        self.auto_apply = auto_apply
        self.prompt_version = prompt_version
        self.metric = metric
        self.goal = goal
        self.run_id = run_id or f"coach-{secrets.token_hex(6)}"
        self._analyst = Analyst(
            llm,
            model,
            bounds=parse_bounds(parameters),
            prompt_version=prompt_version,
            has_store=store is not None,
            run_id=self.run_id,
            timeout=timeout,
            temperature=temperature,
            view={
                "interval": interval,
                "max_log_generations": max_log_generations,
                "max_log_lines": max_log_lines,
                "metric": metric,
                "goal": goal,
            },
        )
        try:
            self._trail = (
                None if store is None else StoreTrail(store, run_id=self.run_id, loop=loop)
            )
        except BaseException:
            self._analyst.close()
            raise
        self._analyst.trail = self._trail

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._history: deque[Generation] = deque(maxlen=max_log_generations)
        self._recent: deque[float] = deque(maxlen=interval)
        self._config: dict[str, Any] = {}
        self._observed = 0
        self._last_generation: int | None = None
        self._busy = False
        self._request: Snapshot | None = None
        self._inbox: dict[str, Recommendation] = {}
        self._pending: dict[str, Recommendation] = {}
        self._effects: list[_Effect] = []
        self._counts = dict.fromkeys(
            ("analyses", "skipped", "failed", "recommendations", "applied", "refused"), 0
        ) | {"unchanged": 0, "rejected": 0}
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        #: every `Application`, oldest first
        self.applications: list[Application] = []
        #: every refused recommendation (unknown parameter, out of bounds), oldest first
        self.refusals: list[Refusal] = []
        #: the LLM's latest assessment of the run
        self.assessment = ""
        self._orphans: list[Any] = []
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    # -- the loop's side: never waits ------------------------------------------------------

    def observe(
        self,
        generation: int,
        metrics: Mapping[str, Any] | None = None,
        config: Any = None,
        log_lines: Sequence[Any] = (),
    ) -> None:
        """Record one generation; every `interval`-th call starts an analysis unless one is
        still running (then it is skipped). `config` (a dict or a dataclass) is the full
        current configuration the LLM sees."""
        if self._closed:
            raise RuntimeError("the coach is closed")
        record = Generation(
            int(generation),
            {str(k): _plain_metric(v) for k, v in (metrics or {}).items()},
            trim_lines(log_lines, self.max_log_lines, self.max_line_chars),
        )
        value = record.metrics.get(self.metric)
        with self._lock:
            self._history.append(record)
            self._last_generation = record.generation
            if config is not None:
                self._config = _as_dict(config)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._recent.append(float(value))
                for effect in self._effects:
                    if len(effect.after) < self.interval:
                        effect.after.append(float(value))
            self._observed += 1
            if self._observed % self.interval:
                return
            if self._busy:
                self._counts["skipped"] += 1
                return
            self._busy = True
            self._request = self._snapshot()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="evolution-coach", daemon=True
                )
                self._thread.start()
            self._wake.notify()

    def apply(self, config: Any) -> Any:
        """`config` with the recommendations that have arrived applied (a new dict, or a
        `dataclasses.replace` copy), or `config` itself when there are none."""
        if not isinstance(config, Mapping) and not _is_dataclass(config):
            raise TypeError(f"apply() takes a dict or a dataclass, not {type(config).__name__}")
        with self._lock:
            if not self._inbox or self._closed:
                return config
            ready = list(self._inbox.values())
            self._inbox.clear()
            generation = self._last_generation
        current = _as_dict(config)
        changes: dict[str, tuple[Any, Any]] = {}
        reasons = []
        unchanged = refused = 0
        for rec in ready:
            if _is_dataclass(config) and rec.parameter not in current:
                why = "not a field of the config"
                self._refuse(Refusal(rec.parameter, rec.value, why, rec.generation))
                refused += 1
            elif rec.parameter in current and current[rec.parameter] == rec.value:
                unchanged += 1
            else:
                changes[rec.parameter] = (current.get(rec.parameter), rec.value)
                if rec.reason:
                    reasons.append(f"{rec.parameter}: {rec.reason}")
        with self._lock:
            self._counts["unchanged"] += unchanged
            if not changes:
                return config
            application = Application(generation, changes, "; ".join(reasons), datetime.now(UTC))
            self.applications.append(application)
            self._counts["applied"] += len(changes)
            self._effects.append(_Effect(application, list(self._recent)))
        if self._trail is not None:
            self._trail.marker(
                generation=-1 if generation is None else generation,
                before={p: old for p, (old, _new) in changes.items()},
                after={p: new for p, (_old, new) in changes.items()},
                reason=application.reason,
            )
        new = {p: new for p, (_old, new) in changes.items()}
        if _is_dataclass(config):
            return dataclasses.replace(config, **new)
        return {**config, **new}

    async def aobserve(self, *args: Any, **kwargs: Any) -> None:
        """`observe` for async loops; it yields once so the coach's store writes can run."""
        self._bind()
        self.observe(*args, **kwargs)
        await asyncio.sleep(0)

    async def aapply(self, config: Any) -> Any:
        """`apply` for async loops."""
        self._bind()
        return self.apply(config)

    # -- a person's side -------------------------------------------------------------------

    @property
    def pending(self) -> list[Recommendation]:
        """Accepted recommendations not applied yet: awaiting `approve()` (auto_apply=False)
        or the next `apply`."""
        with self._lock:
            return [*self._pending.values(), *self._inbox.values()]

    def approve(self, *parameters: str) -> list[Recommendation]:
        """Queue pending recommendations (all, or those of `parameters`) for the next
        `apply`; returns them."""
        return self._take_pending(parameters, approve=True)

    def reject(self, *parameters: str) -> list[Recommendation]:
        """Drop pending recommendations (all, or those of `parameters`); returns them."""
        return self._take_pending(parameters, approve=False)

    def _take_pending(self, parameters: Sequence[str], *, approve: bool) -> list[Recommendation]:
        with self._lock:
            names = list(parameters) or list(self._pending)
            taken = [self._pending.pop(n) for n in names if n in self._pending]
            if approve:
                self._inbox.update((r.parameter, r) for r in taken)
            else:
                self._counts["rejected"] += len(taken)
            return taken

    def stats(self) -> dict[str, Any]:
        """Counts of analyses (done, skipped while one ran, failed), of recommendations
        (made, applied, refused, unchanged, rejected, pending) and of `applications` (one per
        `apply` that changed something); and per application, in `effects`, the tracked
        metric's mean over the `interval` generations after it against the `interval` before
        (`change` = after − before; `improved` judged by `goal`)."""
        with self._lock:
            stats: dict[str, Any] = dict(self._counts)
            stats["applications"] = len(self.applications)
            stats["in_flight"] = self._busy
            stats["pending"] = len(self._pending) + len(self._inbox)
            stats["metric"], stats["goal"] = self.metric, self.goal
            stats["effects"] = [self._effect(e) for e in self._effects]
        return stats

    def _effect(self, effect: _Effect) -> dict[str, Any]:
        before = fmean(effect.before) if effect.before else None
        after = fmean(effect.after) if effect.after else None
        change = None if before is None or after is None else after - before
        return {
            "generation": effect.application.generation,
            "changes": dict(effect.application.changes),
            "before": before,
            "after": after,
            "n_before": len(effect.before),
            "n_after": len(effect.after),
            "change": change,
            "improved": None if change is None else (change > 0) == (self.goal == "max"),
        }

    # -- the analysis thread ---------------------------------------------------------------

    def _snapshot(self) -> Snapshot:
        """Called under the lock: the state one analysis sees."""
        shown = []
        for effect in self._effects[-SHOWN_APPLICATIONS:]:
            application = effect.application
            shown.append(
                describe_application(
                    application.generation,
                    application.changes,
                    application.reason,
                    self._effect(effect),
                    self.metric,
                )
            )
        return Snapshot(
            generation=self._history[-1].generation,
            generations=tuple(self._history),
            config=dict(self._config),
            applications=tuple(shown),
        )

    def _work(self) -> None:
        try:
            while True:
                with self._lock:
                    while self._request is None and not self._closed:
                        self._wake.wait()
                    if self._closed:
                        return
                    snapshot, self._request = self._request, None
                try:
                    self._record(self._analyst.analyse(snapshot))
                except AnalysisFailed as exc:
                    self._fail(snapshot, exc)
                except Exception:  # a bug here must not end the thread, nor reach the loop
                    logger.exception("coach analysis crashed")
                finally:
                    with self._lock:
                        self._busy = False
        finally:
            self._analyst.close()

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self._busy = False  # with the results, so `stats()` never sees one without the other
            self._counts["analyses"] += 1
            self._counts["recommendations"] += outcome.made
            self.assessment = outcome.assessment
            slot = self._inbox if self.auto_apply else self._pending
            slot.update((r.parameter, r) for r in outcome.accepted)
        for refusal in outcome.refused:
            self._refuse(refusal)

    def _refuse(self, refusal: Refusal) -> None:
        logger.info(
            "coach refused %s=%r (%s), generation %s",
            refusal.parameter,
            refusal.value,
            refusal.why,
            refusal.generation,
        )
        with self._lock:
            self._counts["refused"] += 1
            self.refusals.append(refusal)

    def _fail(self, snapshot: Snapshot, exc: AnalysisFailed) -> None:
        message = str(exc)
        with self._lock:
            self._busy = False
            self._counts["failed"] += 1
            repeat, self._last_error = message == self._last_error, message
            closed = self._closed
        # The same failure every interval (the LLM is down) is said once, not every time; a
        # failure after close() is of no consequence.
        log = logger.debug if repeat or closed else logger.warning
        log(
            "coach analysis at generation %s failed, the run goes on without it: %s",
            snapshot.generation,
            message,
        )

    # -- closing ---------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Stop analysing and wait (up to `timeout`) for the store writes on their way.
        An analysis in flight is not waited for: its answer could no longer be applied, so
        its daemon thread drops it when the call ends (and then closes the LLM client).
        Idempotent. In async code use `aclose()` (or `async with`)."""
        if self._stop():
            self._release(timeout)
        if self._trail is not None:
            self._trail.close(timeout)

    async def aclose(self, timeout: float = 5.0) -> None:
        """`close` for async code: waits without blocking the event loop (also for the store
        writes a sync `close()` on this loop could not wait for)."""
        if self._stop():
            self._release(timeout)
        if self._trail is not None:
            await self._trail.aclose(timeout)

    def _stop(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            self._closed = True
            self._request = None
            self._wake.notify_all()
            return True

    def _release(self, timeout: float) -> None:
        """After `_stop`: an idle worker exits at once (closing the client on its way out);
        a busy one is left to finish its call."""
        with self._lock:
            thread, busy = self._thread, self._busy
        if thread is None:
            self._analyst.close()
        elif not busy:
            thread.join(timeout)

    def _forked(self) -> None:
        """In a forked child: the parent's analysis thread does not exist here, and the
        parent's sockets and store connections must not be used (nor closed: they are the
        parent's). The child gets fresh locks and a client of its own, and writes no trail."""
        self._orphans.append((self._trail, self._analyst.llm))
        self._trail = None
        self._analyst.forked()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread, self._busy, self._request = None, False, None

    def _bind(self) -> None:
        if self._trail is not None:
            self._trail.bind(asyncio.get_running_loop())

    def __enter__(self) -> Coach:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Coach:
        self._bind()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _after_fork(ref: weakref.ref[Coach]) -> None:
    coach = ref()
    if coach is not None:
        coach._forked()


def _plain_metric(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, numbers.Real):  # NumPy scalars
        return float(value)
    return str(value)


def _is_dataclass(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, Mapping):
        return dict(config)
    if _is_dataclass(config):
        return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    raise TypeError(f"config must be a dict or a dataclass, not {type(config).__name__}")
