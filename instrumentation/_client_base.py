"""What the two REST clients share and what does no I/O: configuration, request building
(`Call`: method, path, query, body; one builder per non-trivial method), retry decisions, and
turning responses into results or `EvolutionClientError`s. `_client.py` holds the twins.

The retry rules (`RETRY_STATUSES`, `retry_after_seconds`) also serve the OTLP/JSON exporter.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import quote

import httpx

from ._exceptions import EvolutionClientError
from ._serialize import dumps

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 10.0
API_PREFIX = "/api/v1"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_DELAY = 10.0

HTTPX_ERRORS = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    params: list[tuple[str, Any]] | None = None
    body: Any = None
    idempotent: bool = True


class ClientState(Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


def segment(value: str) -> str:
    """One URL path segment: caller-chosen task ids may hold any character."""
    return quote(str(value), safe="")


def _query(**params: Any) -> list[tuple[str, Any]]:
    """Query pairs without the Nones; lists repeat the key; booleans as true/false."""
    pairs: list[tuple[str, Any]] = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if isinstance(item, bool):
                item = "true" if item else "false"
            pairs.append((key, item))
    return pairs


def _attribute_filters(attribute: str | Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if attribute is None:
        return []
    if isinstance(attribute, str):
        return [attribute]
    if isinstance(attribute, Mapping):
        return [f"{key}:{value}" for key, value in attribute.items()]
    return list(attribute)


def tag_list(tags: Iterable[str] | str | None) -> list[str]:
    if tags is None:
        return []
    return [tags] if isinstance(tags, str) else list(tags)


#: A/B variants: `[{"prompt_id": …, "weight": …}]`, `[(prompt_id, weight)]` or
#: `{prompt_id: weight}`
Variants = Mapping[str, float] | Iterable[Mapping[str, Any] | tuple[str, float]]


def variant_list(variants: Variants) -> list[dict[str, Any]]:
    """Experiment variants in the REST shape, whichever of the `Variants` forms was given."""
    if isinstance(variants, Mapping):
        return [{"prompt_id": key, "weight": weight} for key, weight in variants.items()]
    shaped: list[dict[str, Any]] = []
    for variant in variants:
        if isinstance(variant, Mapping):
            shaped.append(dict(variant))
        else:
            prompt_id, weight = variant
            shaped.append({"prompt_id": prompt_id, "weight": weight})
    return shaped


def _without_none(**fields: Any) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}


def _reward_body(
    value: float | Mapping[str, float] | None,
    *,
    name: str,
    dimensions: Mapping[str, float] | None,
    feedback: str | None,
    source: str,
    tags: Iterable[str],
    metadata: Mapping[str, Any] | None,
    span_id: str | None,
    trace_id: str | None,
    execution_id: str | None,
    task_id: str | None,
    links: Mapping[str, Any] | None,
    reward_id: str | None,
) -> dict[str, Any]:
    if isinstance(value, Mapping):
        dimensions, value = dict(value), None
    body: dict[str, Any] = {"name": name, "source": source, "tags": tag_list(tags)}
    optional = {
        "id": reward_id,
        "value": value,
        "dimensions": dict(dimensions) if dimensions else None,
        "feedback": feedback,
        "metadata": dict(metadata) if metadata else None,
        "span_id": span_id,
        "trace_id": trace_id,
        "execution_id": execution_id,
        "task_id": task_id,
        "links": dict(links) if links else None,
    }
    body.update({key: item for key, item in optional.items() if item is not None})
    return body


class BaseClient:
    """Configuration and request building shared by both clients; no I/O happens here."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 2,
    ) -> None:
        base = base_url.rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        self.base_url = base
        self.max_retries = max(0, max_retries)
        self._timeout = timeout
        self._headers = {"Accept": "application/json", **dict(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._state = ClientState.UNOPENED

    def _check_open(self) -> None:
        if self._state is ClientState.CLOSED:
            raise RuntimeError("this client has been closed; create a new one")
        self._state = ClientState.OPENED

    def _request_kwargs(self, call: Call) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": call.params or None}
        if call.body is not None:
            kwargs["content"] = dumps(call.body).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        return kwargs

    def _retry_delay(self, call: Call, attempt: int, response: httpx.Response | None) -> float:
        """Seconds to wait before retrying, or -1 when the call must not be retried."""
        if not call.idempotent or attempt >= self.max_retries:
            return -1
        if response is not None:
            if response.status_code not in RETRY_STATUSES:
                return -1
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after is not None:
                return min(retry_after, MAX_RETRY_DELAY)
        return min(0.2 * 2**attempt, MAX_RETRY_DELAY)

    def _transport_error(self, call: Call, exc: Exception) -> EvolutionClientError:
        url = f"{self.base_url}{API_PREFIX}{call.path}"
        return EvolutionClientError(
            f"{call.method} {url} failed: {type(exc).__name__}: {exc}",
            method=call.method,
            url=url,
        )

    @staticmethod
    def _result(call: Call, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:500]
            detail = body.get("detail", body) if isinstance(body, dict) else body
            raise EvolutionClientError(
                f"{call.method} {response.request.url} answered {response.status_code}: {detail}",
                status=response.status_code,
                detail=detail,
                method=call.method,
                url=str(response.request.url),
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise EvolutionClientError(
                f"{call.method} {response.request.url} answered non-JSON content",
                status=response.status_code,
                detail=response.text[:1000],
                method=call.method,
                url=str(response.request.url),
            ) from exc

    # --- calls: one builder per public method -------------------------------------------

    @staticmethod
    def _create_task(
        name: str,
        task_id: str | None,
        input: Any,
        metadata: Mapping[str, Any] | None,
        tags: Iterable[str],
    ) -> Call:
        body: dict[str, Any] = {"name": name, "tags": tag_list(tags)}
        if task_id is not None:
            body["id"] = task_id
        if input is not None:
            body["input"] = input
        if metadata:
            body["metadata"] = dict(metadata)
        return Call("POST", "/tasks", body=body, idempotent=task_id is not None)

    @staticmethod
    def _list_tasks(
        status: str | None, tag: str | None, cursor: str | None, limit: int | None
    ) -> Call:
        return Call("GET", "/tasks", _query(status=status, tag=tag, cursor=cursor, limit=limit))

    @staticmethod
    def _start_execution(
        task_id: str, execution_id: str | None, config: Mapping[str, Any] | None
    ) -> Call:
        body: dict[str, Any] = {"config": dict(config or {})}
        if execution_id is not None:
            body["id"] = execution_id
        return Call(
            "POST",
            f"/tasks/{segment(task_id)}/executions",
            body=body,
            idempotent=execution_id is not None,
        )

    @staticmethod
    def _post_spans(spans: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Call:
        items = [spans] if isinstance(spans, Mapping) else list(spans)
        return Call("POST", "/spans/batch", body={"spans": items})

    @staticmethod
    def _list_spans(**filters: Any) -> Call:
        filters["attribute"] = _attribute_filters(filters.get("attribute")) or None
        return Call("GET", "/spans", _query(**filters))

    @staticmethod
    def _add_reward(**kwargs: Any) -> Call:
        body = _reward_body(**kwargs)
        return Call("POST", "/rewards", body=body, idempotent="id" in body)

    @staticmethod
    def _list_rewards(**filters: Any) -> Call:
        return Call("GET", "/rewards", _query(**filters))

    @staticmethod
    def _rewards_summary(**filters: Any) -> Call:
        return Call("GET", "/rewards/summary", _query(**filters))

    # --- the prompt registry (DESIGN §7) --------------------------------------------------

    @staticmethod
    def _create_prompt(
        agent: str,
        content: str,
        *,
        parent_ids: Iterable[str] | None,
        status: str,
        labels: Iterable[str] | None,
        fitness: Mapping[str, Any] | None,
        created_by: str,
        note: str | None,
    ) -> Call:
        body: dict[str, Any] = {
            "agent": agent,
            "content": content,
            "parent_ids": list(parent_ids or []),
            "status": status,
            "labels": tag_list(labels),
            "created_by": created_by,
        }
        if fitness is not None:
            body["fitness"] = dict(fitness)
        if note is not None:
            body["note"] = note
        # The same agent, content and parents again answers the stored row: safe to retry.
        return Call("POST", "/prompts", body=body)

    @staticmethod
    def _list_prompts(**filters: Any) -> Call:
        return Call("GET", "/prompts", _query(**filters))

    @staticmethod
    def _prompt_diff(prompt_id: str, against: str) -> Call:
        return Call("GET", f"/prompts/{segment(prompt_id)}/diff", _query(against=against))

    @staticmethod
    def _set_prompt_status(
        prompt_id: str, status: str, note: str | None, fitness: dict[str, Any] | None
    ) -> Call:
        # Not retried: a second identical move is an illegal one (409), which would hide
        # that the first succeeded.
        body = _without_none(status=status, note=note, fitness=fitness)
        return Call("POST", f"/prompts/{segment(prompt_id)}/status", body=body, idempotent=False)

    @staticmethod
    def _approve_prompt(prompt_id: str, note: str | None) -> Call:
        body = _without_none(note=note)
        return Call("POST", f"/prompts/{segment(prompt_id)}/approve", body=body, idempotent=False)

    @staticmethod
    def _set_label(agent: str, label: str, prompt_id: str) -> Call:
        path = f"/agents/{segment(agent)}/labels/{segment(label)}"
        return Call("PUT", path, body={"prompt_id": prompt_id})

    @staticmethod
    def _resolve_prompt(agent: str, label: str, key: str | None) -> Call:
        return Call("GET", f"/agents/{segment(agent)}/prompt", _query(label=label, key=key))

    @staticmethod
    def _create_experiment(
        agent: str,
        *,
        variants: Variants | None,
        kind: str,
        metric: str | None,
        baseline: str | None,
        target: Iterable[str] | None,
        control: Iterable[str] | None,
    ) -> Call:
        body: dict[str, Any] = {"agent": agent, "kind": kind}
        if variants is not None:
            body["variants"] = variant_list(variants)
        body.update(
            _without_none(
                metric=metric,
                baseline=baseline,
                target=None if target is None else list(target),
                control=None if control is None else list(control),
            )
        )
        # Not retried: a second start of the same A/B answers 409 (one runs per agent).
        return Call("POST", "/experiments", body=body, idempotent=False)

    @staticmethod
    def _list_experiments(**filters: Any) -> Call:
        return Call("GET", "/experiments", _query(**filters))

    @staticmethod
    def _stop_experiment(
        experiment_id: str, winner: str | None, approve: bool, note: str | None
    ) -> Call:
        body = {"approve": approve, **_without_none(winner=winner, note=note)}
        path = f"/experiments/{segment(experiment_id)}/stop"
        return Call("POST", path, body=body, idempotent=False)

    @staticmethod
    def _add_experiment_results(experiment_id: str, results: Iterable[Mapping[str, Any]]) -> Call:
        body = {"results": [dict(result) for result in results]}
        path = f"/experiments/{segment(experiment_id)}/results"
        return Call("POST", path, body=body, idempotent=False)

    @staticmethod
    def _list_markers(**filters: Any) -> Call:
        return Call("GET", "/markers", _query(**filters))

    # --- patterns (DESIGN §7) ---------------------------------------------------------------

    @staticmethod
    def _list_patterns(**filters: Any) -> Call:
        return Call("GET", "/patterns", _query(**filters))

    @staticmethod
    def _apply_pattern(pattern_id: str) -> Call:
        # Not retried: a second apply answers 409 (already applied), hiding the first's success.
        return Call("POST", f"/patterns/{segment(pattern_id)}/apply", idempotent=False)


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header (seconds or an HTTP date) as seconds from now; None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None
