"""One analysis of the coach (issue 23): render the prompt from a snapshot of the run, ask the
LLM, read its reply, check each recommendation against the bounds, and trace the call. It runs
on the coach's analysis thread and sees nothing of the loop but the snapshot it is handed, so
the loop's state is never shared with a thread that may be stuck on a slow model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .coach_prompt import (
    REGISTRY_AGENT,
    REGISTRY_PREFIX,
    Bound,
    Generation,
    Recommendation,
    Refusal,
    check,
    packaged_template,
    parse_reply,
    render,
)
from .coach_trail import StoreTrail, analysis_span
from .llm import ChatLLM, LLMCall

__all__ = ["AnalysisFailed", "Analyst", "Outcome", "Snapshot"]


class AnalysisFailed(Exception):
    """No usable answer: the LLM failed, the reply held no JSON, or the registry prompt could
    not be read. The message says which."""


@dataclass(frozen=True)
class Snapshot:
    """What one analysis sees, frozen when it was due."""

    generation: int
    generations: tuple[Generation, ...]
    config: dict[str, Any]
    applications: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What one analysis made of the reply: `made` recommendations in all, split into those
    to apply and those refused."""

    assessment: str
    made: int
    accepted: list[Recommendation]
    refused: list[Refusal]


class Analyst:
    """Asks the LLM about a `Snapshot`, one call at a time (the coach's thread is its only
    caller). `llm` is a base URL (None: the default of `llm.default_base_url`) or an object
    with `.complete(messages) -> str`; a client built here is closed by `close()`. `trail`
    (set once the store is open; `has_store` says one will be) records each call."""

    def __init__(
        self,
        llm: Any,
        model: str | None,
        *,
        bounds: Mapping[str, Bound],
        prompt_version: str,
        has_store: bool,
        run_id: str,
        timeout: float,
        temperature: float,
        view: Mapping[str, Any],
    ) -> None:
        self.bounds = dict(bounds)
        self.prompt_version = prompt_version
        self.run_id = run_id
        self.timeout = timeout
        self.trail: StoreTrail | None = None
        #: what the template needs besides the snapshot (interval, metric, goal, limits)
        self.view = dict(view)
        self._label: str | None = None
        self._text = ""
        if prompt_version.startswith(REGISTRY_PREFIX):
            if not has_store:
                raise ValueError(f"prompt_version {prompt_version!r} needs a store to read it from")
            self._label = prompt_version[len(REGISTRY_PREFIX) :] or "production"
        else:
            self._text = packaged_template(prompt_version)
        self._client_args = (llm, model, timeout, temperature)
        self._call: LLMCall | None = None
        self.owns_llm = llm is None or isinstance(llm, str)
        if self.owns_llm:
            self.llm: Any = self._new_client()
        elif callable(getattr(llm, "complete", None)):
            self.llm = llm
            if getattr(llm, "on_call", self._seen) is None:
                llm.on_call = self._seen  # a ChatLLM handed in: trace its calls too
        else:
            raise TypeError(
                f"llm must be a base URL or have .complete(messages) -> str, not {llm!r}"
            )

    def analyse(self, snapshot: Snapshot) -> Outcome:
        """The checked recommendations. `AnalysisFailed` when there is no usable answer (the
        failed call is traced all the same)."""
        self._call = None
        messages: list[dict] | None = None
        reply: str | None = None
        version = self.prompt_version
        start_ns = time.time_ns()
        try:
            template, version = self._template()
            prompt = render(
                template,
                generations=snapshot.generations,
                config=snapshot.config,
                applications=snapshot.applications,
                bounds=self.bounds,
                **self.view,
            )
            messages = [{"role": "user", "content": prompt}]
            reply = self.llm.complete(messages)
            assessment, raw = parse_reply(reply)
        except Exception as exc:  # noqa: BLE001 - every failure is the same to the coach
            error = f"{type(exc).__name__}: {exc}"
            if messages is not None:
                self._trace(snapshot, messages, reply, error, start_ns, version, {"failed": True})
            raise AnalysisFailed(error) from exc
        accepted, refused = check(raw, self.bounds, snapshot.generation)
        outcome = Outcome(assessment, len(raw), accepted, refused)
        summary = {
            "assessment": assessment,
            "recommendations": len(raw),
            "accepted": len(accepted),
            "refused": len(refused),
        }
        self._trace(snapshot, messages, reply, None, start_ns, version, summary)
        return outcome

    def close(self) -> None:
        if self.owns_llm:
            self.llm.close()

    def forked(self) -> None:
        """In a forked child: a client of its own (the parent's sockets are the parent's),
        and no trail (nor its store connections)."""
        self.trail = None
        if self.owns_llm:
            self.llm = self._new_client()

    def _new_client(self) -> ChatLLM:
        llm, model, timeout, temperature = self._client_args
        return ChatLLM(
            llm, model, timeout=timeout, temperature=temperature, retries=1, on_call=self._seen
        )

    def _template(self) -> tuple[str, str]:
        """(template text, the version to record): a registry prompt is read at every
        analysis, so promoting a new version takes effect during the run."""
        if self._label is None:
            return self._text, self.prompt_version
        assert self.trail is not None
        label = self._label
        prompt = self.trail.call(
            lambda store: store.resolve_prompt(REGISTRY_AGENT, label=label), self.timeout
        )
        return prompt["content"], f"{REGISTRY_PREFIX}{label} ({prompt['id']} v{prompt['version']})"

    def _seen(self, call: LLMCall) -> None:
        self._call = call

    def _trace(
        self,
        snapshot: Snapshot,
        messages: list[dict],
        reply: str | None,
        error: str | None,
        start_ns: int,
        version: str,
        outcome: dict[str, Any],
    ) -> None:
        if self.trail is None:
            return
        # A client of the user's own reports no `LLMCall`: time it here, estimate its tokens.
        call = self._call or LLMCall(
            model=str(getattr(self.llm, "model", None) or "unknown"),
            messages=messages,
            reply=reply,
            error=error,
            input_tokens=(len(messages[0]["content"]) + 3) // 4,
            output_tokens=(len(reply or "") + 3) // 4,
            start_ns=start_ns,
            end_ns=time.time_ns(),
        )
        self.trail.span(
            analysis_span(
                call,
                run_id=self.run_id,
                generation=snapshot.generation,
                prompt_version=version,
                outcome=outcome,
            )
        )
