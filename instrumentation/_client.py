"""HTTP clients for the evolution-store REST API (`/api/v1`): a sync and an async twin.

As in httpx, `BaseClient` (in `_client_base.py`) holds the configuration and turns every
method into a `Call` (method, path, query, body) without doing I/O; `EvolutionClient` sends
calls with an `httpx.Client`, `AsyncEvolutionClient` with an `httpx.AsyncClient`, under the
same method names (`close`/`aclose` aside). The sync twin never runs the async one in an event
loop. The prompt registry's methods (prompts, labels, experiments, markers) come from
`_client_registry.py`, one base class per twin.

Errors: any failure (no answer, or a 4xx/5xx answer) raises `EvolutionClientError`, never a
bare httpx exception. Idempotent calls (reads, status updates, span batches, creations with a
caller-chosen id) are retried on connection errors and 429/502/503/504, honouring
`Retry-After`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from ._client_base import (
    API_PREFIX,
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT,
    HTTPX_ERRORS,
    Call,
    ClientState,
    segment,
    tag_list,
)
from ._client_registry import AsyncRegistryMethods, RegistryMethods


class EvolutionClient(RegistryMethods):
    """Synchronous client for the evolution-store REST API, on `httpx.Client`.

    Use it from scripts, notebooks and learners to create tasks, post spans, attach rewards and
    read them back; `transport=` takes any httpx transport (tests use `httpx.MockTransport`).

    ```python
    with EvolutionClient("http://127.0.0.1:8000", api_key=key) as client:
        t = client.create_task("demo", input={"q": "2+2"}, tags=["smoke"])
        ex = client.start_execution(t["id"], config={"prompt": "v3"})
        client.add_reward(1.0, execution_id=ex["id"], tags=["exact"])
        print(client.rewards_summary(group_by="config:prompt"))
    ```
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key=api_key, timeout=timeout, headers=headers, max_retries=max_retries
        )
        self._http = httpx.Client(
            base_url=self.base_url + API_PREFIX,
            headers=self._headers,
            timeout=timeout,
            transport=transport,
        )

    def _send(self, call: Call) -> Any:
        self._check_open()
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, **self._request_kwargs(call))
            except HTTPX_ERRORS as exc:
                delay = self._retry_delay(call, attempt, None)
                if delay < 0:
                    raise self._transport_error(call, exc) from exc
            else:
                delay = self._retry_delay(call, attempt, response)
                if delay < 0:
                    return self._result(call, response)
                response.close()
            time.sleep(delay)
            attempt += 1

    # tasks and executions
    def create_task(
        self,
        name: str = "task",
        *,
        task_id: str | None = None,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Create a task (idempotent on `task_id`: an existing task is returned as it is)."""
        return self._send(self._create_task(name, task_id, input, metadata, tags))

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._send(Call("GET", f"/tasks/{segment(task_id)}"))

    def list_tasks(
        self,
        *,
        status: str | None = None,
        tag: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """One page `{items, next_cursor}`; pass `next_cursor` back as `cursor` for the next."""
        return self._send(self._list_tasks(status, tag, cursor, limit))

    def set_task_status(self, task_id: str, status: str) -> dict[str, Any]:
        return self._send(Call("PATCH", f"/tasks/{segment(task_id)}", body={"status": status}))

    def start_execution(
        self,
        task_id: str,
        *,
        execution_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new attempt of the task (the store numbers attempts); a retry is just another."""
        return self._send(self._start_execution(task_id, execution_id, config))

    def get_execution(self, execution_id: str) -> dict[str, Any]:
        return self._send(Call("GET", f"/executions/{segment(execution_id)}"))

    def list_executions(self, task_id: str) -> Any:
        return self._send(Call("GET", f"/tasks/{segment(task_id)}/executions"))

    def set_execution_status(self, execution_id: str, status: str) -> dict[str, Any]:
        """running, succeeded, failed or timeout; the task's status follows."""
        return self._send(
            Call("PATCH", f"/executions/{segment(execution_id)}", body={"status": status})
        )

    # spans
    def post_spans(self, spans: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Post span JSON (one or many); idempotent on (trace_id, span_id)."""
        return self._send(self._post_spans(spans))

    def list_spans(
        self,
        *,
        task_id: str | None = None,
        execution_id: str | None = None,
        trace_id: str | None = None,
        name: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        attribute: str | Mapping[str, Any] | Sequence[str] | None = None,
        start_after: int | None = None,
        start_before: int | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """One page of spans; `attribute` is `"key:value"`, a list of them, or a mapping."""
        return self._send(
            self._list_spans(
                task_id=task_id,
                execution_id=execution_id,
                trace_id=trace_id,
                name=name,
                status=status,
                tag=tag,
                attribute=attribute,
                start_after=start_after,
                start_before=start_before,
                cursor=cursor,
                limit=limit,
            )
        )

    def get_span(self, span_id: str) -> dict[str, Any]:
        return self._send(Call("GET", f"/spans/{segment(span_id)}"))

    def add_span_tags(self, span_id: str, tags: Iterable[str]) -> Any:
        return self._send(
            Call("POST", f"/spans/{segment(span_id)}/tags", body={"tags": tag_list(tags)})
        )

    def list_span_rewards(self, span_id: str) -> Any:
        return self._send(Call("GET", f"/spans/{segment(span_id)}/rewards"))

    # rewards
    def add_reward(
        self,
        value: float | Mapping[str, float] | None = None,
        *,
        name: str = "reward",
        dimensions: Mapping[str, float] | None = None,
        feedback: str | None = None,
        source: str = "code",
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        span_id: str | None = None,
        trace_id: str | None = None,
        execution_id: str | None = None,
        task_id: str | None = None,
        links: Mapping[str, Any] | None = None,
        reward_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a reward for one target; it is kept (pending) until its target arrives.

        `value` may be a `{dimension: value}` mapping (primary first). Give `reward_id` to make
        the call idempotent (and retryable).
        """
        return self._send(
            self._add_reward(
                value=value,
                name=name,
                dimensions=dimensions,
                feedback=feedback,
                source=source,
                tags=tags,
                metadata=metadata,
                span_id=span_id,
                trace_id=trace_id,
                execution_id=execution_id,
                task_id=task_id,
                links=links,
                reward_id=reward_id,
            )
        )

    def get_reward(self, reward_id: str) -> dict[str, Any]:
        return self._send(Call("GET", f"/rewards/{segment(reward_id)}"))

    def list_rewards(
        self,
        *,
        tag: str | None = None,
        tag_scope: str | None = None,
        name: str | None = None,
        span_id: str | None = None,
        trace_id: str | None = None,
        execution_id: str | None = None,
        task_id: str | None = None,
        resolved: bool | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """One page of rewards; `tag_scope` is any (default), reward or span."""
        return self._send(
            self._list_rewards(
                tag=tag,
                tag_scope=tag_scope,
                name=name,
                span_id=span_id,
                trace_id=trace_id,
                execution_id=execution_id,
                task_id=task_id,
                resolved=resolved,
                cursor=cursor,
                limit=limit,
            )
        )

    def rewards_summary(
        self,
        *,
        group_by: str = "name",
        tag: str | None = None,
        tag_scope: str | None = None,
        name: str | None = None,
        span_id: str | None = None,
        trace_id: str | None = None,
        execution_id: str | None = None,
        task_id: str | None = None,
        resolved: bool | None = None,
    ) -> dict[str, Any]:
        """`{groups: [{key, count, mean, stdev, ci95}]}`; group_by name|tag|agent|config:<key>."""
        return self._send(
            self._rewards_summary(
                group_by=group_by,
                tag=tag,
                tag_scope=tag_scope,
                name=name,
                span_id=span_id,
                trace_id=trace_id,
                execution_id=execution_id,
                task_id=task_id,
                resolved=resolved,
            )
        )

    def stats(self, agent: str) -> dict[str, Any]:
        """Success rate, latency percentiles, tokens, cost and mean reward of one agent."""
        return self._send(Call("GET", f"/stats/{segment(agent)}"))

    # lifecycle
    def close(self) -> None:
        """Release the connection pool; the client cannot be used afterwards."""
        if self._state is not ClientState.CLOSED:
            self._state = ClientState.CLOSED
            self._http.close()

    def __enter__(self) -> Self:
        self._check_open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncEvolutionClient(AsyncRegistryMethods):
    """Asynchronous twin of `EvolutionClient`, on `httpx.AsyncClient`; same methods, awaited.

    ```python
    async with AsyncEvolutionClient("http://127.0.0.1:8000") as client:
        page = await client.list_rewards(tag="prod", resolved=True)
        for reward in page["items"]:
            print(reward["value"], reward["span_ids"])
    ```
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        max_retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url, api_key=api_key, timeout=timeout, headers=headers, max_retries=max_retries
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url + API_PREFIX,
            headers=self._headers,
            timeout=timeout,
            transport=transport,
        )

    async def _send(self, call: Call) -> Any:
        self._check_open()
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, **self._request_kwargs(call)
                )
            except HTTPX_ERRORS as exc:
                delay = self._retry_delay(call, attempt, None)
                if delay < 0:
                    raise self._transport_error(call, exc) from exc
            else:
                delay = self._retry_delay(call, attempt, response)
                if delay < 0:
                    return self._result(call, response)
                await response.aclose()
            await asyncio.sleep(delay)
            attempt += 1

    # tasks and executions
    async def create_task(
        self,
        name: str = "task",
        *,
        task_id: str | None = None,
        input: Any = None,
        metadata: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Create a task (idempotent on `task_id`: an existing task is returned as it is)."""
        return await self._send(self._create_task(name, task_id, input, metadata, tags))

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return await self._send(Call("GET", f"/tasks/{segment(task_id)}"))

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        tag: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """One page `{items, next_cursor}`; pass `next_cursor` back as `cursor` for the next."""
        return await self._send(self._list_tasks(status, tag, cursor, limit))

    async def set_task_status(self, task_id: str, status: str) -> dict[str, Any]:
        return await self._send(
            Call("PATCH", f"/tasks/{segment(task_id)}", body={"status": status})
        )

    async def start_execution(
        self,
        task_id: str,
        *,
        execution_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new attempt of the task (the store numbers attempts); a retry is just another."""
        return await self._send(self._start_execution(task_id, execution_id, config))

    async def get_execution(self, execution_id: str) -> dict[str, Any]:
        return await self._send(Call("GET", f"/executions/{segment(execution_id)}"))

    async def list_executions(self, task_id: str) -> Any:
        return await self._send(Call("GET", f"/tasks/{segment(task_id)}/executions"))

    async def set_execution_status(self, execution_id: str, status: str) -> dict[str, Any]:
        """running, succeeded, failed or timeout; the task's status follows."""
        return await self._send(
            Call("PATCH", f"/executions/{segment(execution_id)}", body={"status": status})
        )

    # spans
    async def post_spans(
        self, spans: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """Post span JSON (one or many); idempotent on (trace_id, span_id)."""
        return await self._send(self._post_spans(spans))

    async def list_spans(
        self,
        *,
        task_id: str | None = None,
        execution_id: str | None = None,
        trace_id: str | None = None,
        name: str | None = None,
        status: str | None = None,
        tag: str | None = None,
        attribute: str | Mapping[str, Any] | Sequence[str] | None = None,
        start_after: int | None = None,
        start_before: int | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """One page of spans; `attribute` is `"key:value"`, a list of them, or a mapping."""
        return await self._send(
            self._list_spans(
                task_id=task_id,
                execution_id=execution_id,
                trace_id=trace_id,
                name=name,
                status=status,
                tag=tag,
                attribute=attribute,
                start_after=start_after,
                start_before=start_before,
                cursor=cursor,
                limit=limit,
            )
        )

    async def get_span(self, span_id: str) -> dict[str, Any]:
        return await self._send(Call("GET", f"/spans/{segment(span_id)}"))

    async def add_span_tags(self, span_id: str, tags: Iterable[str]) -> Any:
        return await self._send(
            Call("POST", f"/spans/{segment(span_id)}/tags", body={"tags": tag_list(tags)})
        )

    async def list_span_rewards(self, span_id: str) -> Any:
        return await self._send(Call("GET", f"/spans/{segment(span_id)}/rewards"))

    # rewards
    async def add_reward(
        self,
        value: float | Mapping[str, float] | None = None,
        *,
        name: str = "reward",
        dimensions: Mapping[str, float] | None = None,
        feedback: str | None = None,
        source: str = "code",
        tags: Iterable[str] = (),
        metadata: Mapping[str, Any] | None = None,
        span_id: str | None = None,
        trace_id: str | None = None,
        execution_id: str | None = None,
        task_id: str | None = None,
        links: Mapping[str, Any] | None = None,
        reward_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a reward for one target; it is kept (pending) until its target arrives.

        `value` may be a `{dimension: value}` mapping (primary first). Give `reward_id` to make
        the call idempotent (and retryable).
        """
        return await self._send(
            self._add_reward(
                value=value,
                name=name,
                dimensions=dimensions,
                feedback=feedback,
                source=source,
                tags=tags,
                metadata=metadata,
                span_id=span_id,
                trace_id=trace_id,
                execution_id=execution_id,
                task_id=task_id,
                links=links,
                reward_id=reward_id,
            )
        )

    async def get_reward(self, reward_id: str) -> dict[str, Any]:
        return await self._send(Call("GET", f"/rewards/{segment(reward_id)}"))

    async def list_rewards(
        self,
        *,
        tag: str | None = None,
        tag_scope: str | None = None,
        name: str | None = None,
        span_id: str | None = None,
        trace_id: str | None = None,
        execution_id: str | None = None,
        task_id: str | None = None,
        resolved: bool | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """One page of rewards; `tag_scope` is any (default), reward or span."""
        return await self._send(
            self._list_rewards(
                tag=tag,
                tag_scope=tag_scope,
                name=name,
                span_id=span_id,
                trace_id=trace_id,
                execution_id=execution_id,
                task_id=task_id,
                resolved=resolved,
                cursor=cursor,
                limit=limit,
            )
        )

    async def rewards_summary(
        self,
        *,
        group_by: str = "name",
        tag: str | None = None,
        tag_scope: str | None = None,
        name: str | None = None,
        span_id: str | None = None,
        trace_id: str | None = None,
        execution_id: str | None = None,
        task_id: str | None = None,
        resolved: bool | None = None,
    ) -> dict[str, Any]:
        """`{groups: [{key, count, mean, stdev, ci95}]}`; group_by name|tag|agent|config:<key>."""
        return await self._send(
            self._rewards_summary(
                group_by=group_by,
                tag=tag,
                tag_scope=tag_scope,
                name=name,
                span_id=span_id,
                trace_id=trace_id,
                execution_id=execution_id,
                task_id=task_id,
                resolved=resolved,
            )
        )

    async def stats(self, agent: str) -> dict[str, Any]:
        """Success rate, latency percentiles, tokens, cost and mean reward of one agent."""
        return await self._send(Call("GET", f"/stats/{segment(agent)}"))

    # lifecycle
    async def aclose(self) -> None:
        """Release the connection pool; the client cannot be used afterwards."""
        if self._state is not ClientState.CLOSED:
            self._state = ClientState.CLOSED
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
