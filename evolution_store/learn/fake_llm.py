"""A fake OpenAI-compatible chat server for tests and benches.

It is a real HTTP server on 127.0.0.1 (a free port, a daemon thread), so the client under test
goes through its whole path — sockets, retries, timeouts, JSON — and never touches the
network or a real model. Replies come from a function of the request's messages, so a test or
a bench decides exactly what "the LLM" says.

    with FakeChatServer(lambda messages: "```\\nBe brief.\\n```") as server:
        llm = ChatLLM(server.base_url)
        llm.complete([{"role": "user", "content": "Improve this prompt"}])
        assert server.calls == 1
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: What `reply` may return: text becomes the assistant's message in an OpenAI-shaped body; a
#: dict is sent as the whole JSON body and bytes as the raw body, for malformed-answer tests.
Reply = Callable[[list[dict]], "str | dict | bytes"] | str


class FakeChatServer:
    """Answers `POST /v1/chat/completions` (with `usage`) and `GET /v1/models`.

    `status` other than 200 answers every chat request with that status and an OpenAI-style
    error body; `fail_first` answers the first N chat requests with `fail_status` (503) and,
    when `retry_after` is set, a `Retry-After` header — for retry tests. If `reply` raises, the
    request gets a 500 naming the exception. `delay` seconds pass before each answer (for
    timeout tests). `status` may be changed while the server runs.

    `.requests` (the JSON bodies received, in order), `.headers` (theirs, names lowercased)
    and `.calls` count every chat request, failed ones included.
    """

    def __init__(
        self,
        reply: Reply,
        *,
        status: int = 200,
        delay: float = 0,
        fail_first: int = 0,
        fail_status: int = 503,
        retry_after: float | None = None,
        model: str = "fake-model",
    ) -> None:
        self.reply = reply
        self.status = status
        self.delay = delay
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.model = model
        self._lock = threading.Lock()
        self._requests: list[dict] = []
        self._headers: list[dict[str, str]] = []
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread: threading.Thread | None = None
        self.port: int = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        with self._lock:
            return list(self._headers)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    def start(self) -> FakeChatServer:
        if self._thread is None:
            # `shutdown()` waits for the loop's next poll; the default 0.5 s would cost every
            # test that closes a server half a second.
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-chat-server",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port; idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _record(self, body: dict, headers: dict[str, str]) -> int:
        """Store a chat request; returns its 1-based number."""
        with self._lock:
            self._requests.append(body)
            self._headers.append(headers)
            return len(self._requests)

    def _answer(self, body: dict, headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        """(status, extra headers, JSON body or raw bytes) for one chat request."""
        number = self._record(body, headers)
        if number <= self.fail_first:
            extra = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
            return self.fail_status, extra, _error(f"failing request {number} on purpose")
        if self.status != 200:
            return self.status, {}, _error(f"configured to answer {self.status}")
        messages = body.get("messages") or []
        try:
            text = self.reply if isinstance(self.reply, str) else self.reply(messages)
        except Exception as exc:
            return 500, {}, _error(f"reply function raised {type(exc).__name__}: {exc}")
        if not isinstance(text, str):
            return 200, {}, text
        prompt_text = "".join(str(message.get("content") or "") for message in messages)
        prompt_tokens, completion_tokens = _estimate(prompt_text), _estimate(text)
        return (
            200,
            {},
            {
                "id": f"chatcmpl-fake-{number}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 makes a burst of concurrent clients wait out a SYN retry (1 s).
    request_queue_size = 128


def unreachable_base_url() -> str:
    """A loopback base URL nobody listens on (a port just bound and released), for tests of
    an unreachable LLM that must fail fast rather than wait on a firewall."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _estimate(text: str) -> int:
    return (len(text) + 3) // 4


def _error(message: str) -> dict:
    return {"error": {"message": message, "type": "fake_error"}}


def _handler_for(server: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                listing = {"object": "list", "data": [{"id": server.model, "object": "model"}]}
                self._send(200, {}, listing)
            else:
                self._send(404, {}, _error(f"no route {self.path}"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {}, _error(f"no route {self.path}"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, {}, _error("body is not JSON"))
                return
            if not isinstance(body, dict):
                self._send(400, {}, _error("body is not a JSON object"))
                return
            if server.delay:
                time.sleep(server.delay)
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._send(*server._answer(body, headers))

        def _send(self, status: int, headers: dict[str, str], payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests and benches read `.requests`, not stderr

    return Handler
