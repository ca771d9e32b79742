"""Sinks: where `task()` and `emit_reward()` write tasks, executions and rewards, and where
`get_prompt()` reads the prompt an agent should use.

`configure()` picks one: `RemoteSink` (the server's REST API) or `EmbeddedSink` (an in-process
store; it lives in `_embedded` because it imports `evolution_store`). Both offer the `Sink`
surface, sync and async. Spans take another road (OTLP, or the embedded exporter). The remote
sink runs the sync client in a worker thread for `async with task(...)`, so no event loop is
bound to a client.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from ._client import EvolutionClient


class Sink(Protocol):
    """What `task()` and `emit_reward()` call; failures raise (the callers decide to log)."""

    def open_task(
        self,
        *,
        task_id: str,
        execution_id: str,
        name: str,
        input: Any,
        tags: list[str],
        metadata: dict[str, Any],
        config: dict[str, Any],
    ) -> None: ...

    async def aopen_task(self, **kwargs: Any) -> None: ...

    def finish_execution(self, execution_id: str, status: str) -> None: ...

    async def afinish_execution(self, execution_id: str, status: str) -> None: ...

    def add_reward(self, payload: dict[str, Any]) -> dict[str, Any]: ...

    def resolve_prompt(
        self, agent: str, *, label: str = "production", key: str | None = None
    ) -> dict[str, Any]: ...

    def shutdown(self, timeout: float | None = None) -> None: ...


class RemoteSink:
    """Tasks, executions and rewards over REST with an `EvolutionClient`."""

    def __init__(self, client: EvolutionClient) -> None:
        self.client = client

    def open_task(
        self,
        *,
        task_id: str,
        execution_id: str,
        name: str,
        input: Any,
        tags: list[str],
        metadata: dict[str, Any],
        config: dict[str, Any],
    ) -> None:
        self.client.create_task(name, task_id=task_id, input=input, tags=tags, metadata=metadata)
        self.client.start_execution(task_id, execution_id=execution_id, config=config)

    async def aopen_task(self, **kwargs: Any) -> None:
        await asyncio.to_thread(lambda: self.open_task(**kwargs))

    def finish_execution(self, execution_id: str, status: str) -> None:
        self.client.set_execution_status(execution_id, status)

    async def afinish_execution(self, execution_id: str, status: str) -> None:
        await asyncio.to_thread(self.finish_execution, execution_id, status)

    def add_reward(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.client.add_reward(**payload)

    def resolve_prompt(
        self, agent: str, *, label: str = "production", key: str | None = None
    ) -> dict[str, Any]:
        return self.client.resolve_prompt(agent, label=label, key=key)

    def shutdown(self, timeout: float | None = None) -> None:
        self.client.close()
