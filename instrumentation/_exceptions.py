"""The one exception the instrumentation package raises on its own behalf.

    EvolutionClientError        an HTTP call to the server failed
        .status is None         - it never got an answer (connection refused, timeout, bad URL)
        .status == 4xx/5xx      - the server answered with an error; .detail holds its body

Tracing itself (the decorator, the proxy, `task()`) never raises it: those log and carry on,
and only re-raise the user's own exceptions. It comes from explicit calls: the clients and
`emit_reward` in remote mode.
"""

from __future__ import annotations

from typing import Any


class EvolutionClientError(Exception):
    """An HTTP call to the evolution-store server failed; `status` is None without a response.

    ```python
    try:
        client.get_task("nope")
    except EvolutionClientError as exc:
        if exc.status == 404: ...
    ```
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: Any = None,
        method: str | None = None,
        url: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.method = method
        self.url = url
        self.retry_after = retry_after
