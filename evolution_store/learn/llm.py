"""The chat client the learners use: OpenAI-compatible `POST {base}/chat/completions` on httpx
(DESIGN §7 "The LLM the learners use").

A learner must never crash because its LLM is slow, down or talking nonsense, and must never
spend without limit. So every failure becomes one of two errors it can act on (fall back to
heuristics, or stop asking):

    EvolutionStoreError
    └── LLMError
        ├── LLMUnavailable      unreachable after retries, a non-2xx answer, or a body that is
        │                       not a chat completion; the message says which, in plain words
        └── LLMBudgetExhausted  the run's cap on calls or tokens is spent; nothing was sent

and every call, answered or not, is reported to an `on_call` hook as an `LLMCall`, so the
optimiser's own LLM use can be traced like any agent's.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from evolution_store.errors import EvolutionStoreError
from evolution_store.models import SpanRecord

logger = logging.getLogger(__name__)

#: LM Studio's local server: a developer's own machine is the default, never a paid API.
DEFAULT_BASE_URL = "http://127.0.0.1:1234/v1"
DEFAULT_MODEL = "local-model"
DEFAULT_TIMEOUT = 60.0

# Worth another attempt: the server was not there yet, or dropped the connection. A read
# timeout is not: a model too slow once is as slow the second time, and each try costs `timeout`.
_RETRYABLE_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.RemoteProtocolError,
)


class LLMError(EvolutionStoreError):
    """Root of the errors the LLM client raises."""


class LLMUnavailable(LLMError):
    """No usable reply: the server is unreachable (after retries), answered non-2xx, timed out,
    or sent a body that is not an OpenAI chat completion."""


class LLMBudgetExhausted(LLMError):
    """The run's cap on LLM calls or tokens is spent. No request was sent."""


def default_base_url() -> str:
    """`EVOLUTION_LLM_BASE_URL`, else `OPENAI_BASE_URL`, else LM Studio's local server."""
    return (
        os.environ.get("EVOLUTION_LLM_BASE_URL")
        or os.environ.get("OPENAI_BASE_URL")
        or DEFAULT_BASE_URL
    )


def default_model() -> str:
    """`EVOLUTION_LLM_MODEL`, else "local-model" (LM Studio answers with whatever is loaded)."""
    return os.environ.get("EVOLUTION_LLM_MODEL") or DEFAULT_MODEL


@dataclass(frozen=True)
class LLMCall:
    """One `complete()` call as it happened: what was asked, what came back (or why nothing
    did), its token usage and its wall-clock span in epoch nanoseconds."""

    model: str
    messages: list[dict]
    reply: str | None
    error: str | None
    input_tokens: int
    output_tokens: int
    start_ns: int
    end_ns: int


def call_span(
    call: LLMCall,
    *,
    agent: str,
    trace_id: str,
    span_id: str,
    parent_span_id: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> SpanRecord:
    """A learner's own LLM call as a gen_ai client span (model, token counts, error status),
    so its cost shows among the agent's spans; `attributes` add what the learner knows."""
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=f"chat {call.model}",
        kind="client",
        start_time=call.start_ns,
        end_time=call.end_ns,
        status_code="error" if call.error else "unset",
        status_message=call.error or "",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": call.model,
            "gen_ai.usage.input_tokens": call.input_tokens,
            "gen_ai.usage.output_tokens": call.output_tokens,
            "gen_ai.agent.name": agent,
            **(attributes or {}),
        },
    )


class ChatLLM:
    """A synchronous OpenAI-compatible chat client with retries and a per-run budget.

    Thread-safe: the budget is counted under a lock and httpx's client may be shared.
    Connect errors, 429 and 5xx are retried `retries` times, waiting `backoff * 2**attempt`
    seconds, or the server's `Retry-After` (at most `max_retry_after`). `max_calls` and
    `max_tokens` (input + output, summed over the run) cap the spend: once reached, `complete`
    raises `LLMBudgetExhausted` without sending. `temperature` and `max_reply_tokens` go in
    each request body (`max_reply_tokens` as OpenAI's `max_tokens`).

    Usage::

        with ChatLLM("http://127.0.0.1:1234/v1", max_calls=100) as llm:
            text = llm.complete([{"role": "user", "content": "Say hi"}])
    """

    def __init__(
        self,
        base_url: str | None = None,
        model: str | None = None,
        *,
        api_key: str | None = None,
        temperature: float = 0.7,
        max_reply_tokens: int = 4096,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = 2,
        backoff: float = 0.5,
        max_retry_after: float = 30.0,
        max_calls: int | None = None,
        max_tokens: int | None = None,
        on_call: Callable[[LLMCall], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout <= 0 or retries < 0 or backoff < 0 or max_retry_after < 0:
            raise ValueError("timeout must be > 0; retries, backoff, max_retry_after >= 0")
        self.base_url = (base_url or default_base_url()).rstrip("/")
        self.model = model or default_model()
        self.temperature = temperature
        self.max_reply_tokens = max_reply_tokens
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.max_calls = max_calls
        self.max_tokens = max_tokens
        #: called with every `LLMCall`, from the calling thread; public so an engine can attach
        #: its recorder to a client it was handed.
        self.on_call = on_call
        self._sleep = sleep
        self._url = self.base_url + "/chat/completions"
        api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(headers=headers, timeout=timeout)
        self._lock = threading.Lock()
        self._calls = 0
        self._tokens_used = 0

    @property
    def calls(self) -> int:
        """`complete()` calls that got past the budget (answered or failed)."""
        return self._calls

    @property
    def tokens_used(self) -> int:
        """Input + output tokens of the answered calls."""
        return self._tokens_used

    def complete(self, messages: list[dict]) -> str:
        """The reply text (`choices[0].message.content`, `""` when null).

        Raises `LLMBudgetExhausted` (nothing sent) or `LLMUnavailable` (see the class)."""
        self._reserve_call()
        start_ns = time.time_ns()
        reply = error = None
        input_tokens = output_tokens = 0
        try:
            reply, input_tokens, output_tokens = self._request(messages)
            with self._lock:
                self._tokens_used += input_tokens + output_tokens
            return reply
        except LLMUnavailable as exc:
            error = str(exc)
            raise
        finally:
            self._report(
                LLMCall(
                    model=self.model,
                    messages=messages,
                    reply=reply,
                    error=error,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    start_ns=start_ns,
                    end_ns=time.time_ns(),
                )
            )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChatLLM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _reserve_call(self) -> None:
        with self._lock:
            if self.max_calls is not None and self._calls >= self.max_calls:
                raise LLMBudgetExhausted(f"LLM call budget spent ({self.max_calls} calls)")
            if self.max_tokens is not None and self._tokens_used >= self.max_tokens:
                raise LLMBudgetExhausted(
                    f"LLM token budget spent ({self._tokens_used} of {self.max_tokens} tokens)"
                )
            self._calls += 1

    def _request(self, messages: list[dict]) -> tuple[str, int, int]:
        body = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_reply_tokens,
        }
        attempts = self.retries + 1
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._client.post(self._url, json=body)
            except _RETRYABLE_ERRORS as exc:
                problem, cause = f"cannot reach {self._url}: {exc or type(exc).__name__}", exc
            except httpx.TimeoutException as exc:
                raise LLMUnavailable(
                    f"{self._url} did not answer within {self.timeout:g} s"
                ) from exc
            except httpx.HTTPError as exc:
                raise LLMUnavailable(f"request to {self._url} failed: {exc}") from exc
            else:
                if response.is_success:
                    return _parse_completion(response, messages)
                problem, cause = f"{self._url} answered {_describe(response)}", None
                if response.status_code != 429 and response.status_code < 500:
                    raise LLMUnavailable(problem)
                retry_after = _retry_after_seconds(response.headers.get("retry-after"))
            if attempt + 1 < attempts:
                delay = (
                    self.backoff * 2**attempt
                    if retry_after is None
                    else min(retry_after, self.max_retry_after)
                )
                logger.info(
                    "LLM attempt %d failed (%s); retry in %.2f s", attempt + 1, problem, delay
                )
                self._sleep(delay)
        raise LLMUnavailable(f"{problem} (gave up after {attempts} attempts)") from cause

    def _report(self, call: LLMCall) -> None:
        if self.on_call is None:
            return
        # A broken hook (a recorder bug) must not cost the learner its reply.
        try:
            self.on_call(call)
        except Exception:
            logger.exception("LLM on_call hook failed")


def resolve_llm(
    llm: Any,
    model: str | None = None,
    *,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    timeout: float | None = None,
    on_call: Callable[[LLMCall], None] | None = None,
) -> Any:
    """What a learner's `llm=` argument means: None → None (no LLM); a base URL → a `ChatLLM`
    (the caller closes it); an object with a `.complete(messages) -> str` method → itself,
    untouched (limits and `on_call` apply only to a client built here). Else `TypeError`."""
    if llm is None:
        return None
    if isinstance(llm, str):
        return ChatLLM(
            llm,
            model,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
            max_calls=max_calls,
            max_tokens=max_tokens,
            on_call=on_call,
        )
    if callable(getattr(llm, "complete", None)):
        return llm
    raise TypeError(
        "llm must be None, a base URL string, or an object with .complete(messages) -> str; "
        f"got {type(llm).__name__}"
    )


def _parse_completion(response: httpx.Response, messages: list[dict]) -> tuple[str, int, int]:
    """(reply text, input tokens, output tokens) of a 2xx answer; `LLMUnavailable` if it is not
    a chat completion. Token counts the server omits are estimated (about 4 characters each)."""
    try:
        data = response.json()
    except ValueError as exc:
        raise LLMUnavailable(
            f"{response.url} answered with a body that is not JSON: {_snippet(response.text)}"
        ) from exc
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise LLMUnavailable(
            f"{response.url} answered without choices[0].message.content: {_snippet(response.text)}"
        ) from exc
    if content is None:
        content = ""
    if not isinstance(content, str):
        raise LLMUnavailable(
            f"{response.url} answered with non-text content: {_snippet(response.text)}"
        )
    usage = data.get("usage") if isinstance(data, dict) else None
    prompt_text = "".join(str(message.get("content") or "") for message in messages)
    input_tokens = _usage_count(usage, "prompt_tokens", prompt_text)
    output_tokens = _usage_count(usage, "completion_tokens", content)
    return content, input_tokens, output_tokens


def _usage_count(usage: Any, key: str, text: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return (len(text) + 3) // 4


def _retry_after_seconds(header: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date); None if absent or
    unreadable."""
    if not header:
        return None
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(response: httpx.Response) -> str:
    return f"{response.status_code} {response.reason_phrase}: {_snippet(response.text)}"


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
