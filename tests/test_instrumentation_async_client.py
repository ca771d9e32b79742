"""AsyncEvolutionClient against httpx.MockTransport; mirrors test_instrumentation_client.py."""

from __future__ import annotations

import json

import httpx
import pytest

from instrumentation import AsyncEvolutionClient, EvolutionClientError


class EchoApi:
    """Answers every request with what it received; a few paths misbehave on purpose."""

    def __init__(self):
        self.requests: list[httpx.Request] = []
        self.script: list[httpx.Response | Exception] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.script:
            answer = self.script.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer
        path = request.url.raw_path.decode().split("?")[0]
        if "missing" in path:
            return httpx.Response(404, json={"detail": "task not found"})
        return httpx.Response(
            201 if request.method == "POST" else 200,
            json={
                "method": request.method,
                "path": path,
                "params": [list(pair) for pair in request.url.params.multi_items()],
                "body": json.loads(request.content) if request.content else None,
            },
        )


@pytest.fixture
def api():
    return EchoApi()


@pytest.fixture
async def client(api):
    async with AsyncEvolutionClient(
        "http://evo.test", api_key="k1", transport=httpx.MockTransport(api)
    ) as c:
        yield c


SPAN = {"trace_id": "a" * 32, "span_id": "b" * 16, "name": "chat", "start_time": 1}

CALLS = [
    (
        "create_task",
        lambda c: c.create_task(
            "demo", task_id="t1", input={"q": 1}, metadata={"m": 1}, tags=["a"]
        ),
        ("POST", "/api/v1/tasks", []),
        {"name": "demo", "tags": ["a"], "id": "t1", "input": {"q": 1}, "metadata": {"m": 1}},
    ),
    ("get_task", lambda c: c.get_task("t 1/x"), ("GET", "/api/v1/tasks/t%201%2Fx", []), None),
    (
        "list_tasks",
        lambda c: c.list_tasks(status="running", tag="x", cursor="c1", limit=5),
        (
            "GET",
            "/api/v1/tasks",
            [["status", "running"], ["tag", "x"], ["cursor", "c1"], ["limit", "5"]],
        ),
        None,
    ),
    (
        "set_task_status",
        lambda c: c.set_task_status("t1", "cancelled"),
        ("PATCH", "/api/v1/tasks/t1", []),
        {"status": "cancelled"},
    ),
    (
        "start_execution",
        lambda c: c.start_execution("t1", execution_id="e1", config={"prompt": "v1"}),
        ("POST", "/api/v1/tasks/t1/executions", []),
        {"config": {"prompt": "v1"}, "id": "e1"},
    ),
    ("get_execution", lambda c: c.get_execution("e1"), ("GET", "/api/v1/executions/e1", []), None),
    (
        "list_executions",
        lambda c: c.list_executions("t1"),
        ("GET", "/api/v1/tasks/t1/executions", []),
        None,
    ),
    (
        "set_execution_status",
        lambda c: c.set_execution_status("e1", "succeeded"),
        ("PATCH", "/api/v1/executions/e1", []),
        {"status": "succeeded"},
    ),
    (
        "post_spans",
        lambda c: c.post_spans([SPAN, SPAN]),
        ("POST", "/api/v1/spans/batch", []),
        {"spans": [SPAN, SPAN]},
    ),
    (
        "post_spans_one",
        lambda c: c.post_spans(SPAN),
        ("POST", "/api/v1/spans/batch", []),
        {"spans": [SPAN]},
    ),
    (
        "list_spans",
        lambda c: c.list_spans(
            task_id="t1",
            execution_id="e1",
            trace_id="a" * 32,
            name="chat",
            status="error",
            tag="x",
            attribute={"gen_ai.request.model": "gpt", "user.id": 7},
            start_after=10,
            start_before=20,
            cursor="c",
            limit=3,
        ),
        (
            "GET",
            "/api/v1/spans",
            [
                ["task_id", "t1"],
                ["execution_id", "e1"],
                ["trace_id", "a" * 32],
                ["name", "chat"],
                ["status", "error"],
                ["tag", "x"],
                ["attribute", "gen_ai.request.model:gpt"],
                ["attribute", "user.id:7"],
                ["start_after", "10"],
                ["start_before", "20"],
                ["cursor", "c"],
                ["limit", "3"],
            ],
        ),
        None,
    ),
    ("get_span", lambda c: c.get_span("s1"), ("GET", "/api/v1/spans/s1", []), None),
    (
        "add_span_tags",
        lambda c: c.add_span_tags("s1", ["good", "fast"]),
        ("POST", "/api/v1/spans/s1/tags", []),
        {"tags": ["good", "fast"]},
    ),
    (
        "list_span_rewards",
        lambda c: c.list_span_rewards("s1"),
        ("GET", "/api/v1/spans/s1/rewards", []),
        None,
    ),
    (
        "add_reward",
        lambda c: c.add_reward(
            {"correct": 1.0, "brevity": 0.5},
            name="quality",
            span_id="b" * 16,
            trace_id="a" * 32,
            tags=["judge"],
            feedback="ok",
            source="llm",
            metadata={"m": 1},
            reward_id="r1",
        ),
        ("POST", "/api/v1/rewards", []),
        {
            "name": "quality",
            "source": "llm",
            "tags": ["judge"],
            "id": "r1",
            "dimensions": {"correct": 1.0, "brevity": 0.5},
            "feedback": "ok",
            "metadata": {"m": 1},
            "span_id": "b" * 16,
            "trace_id": "a" * 32,
        },
    ),
    (
        "add_reward_links",
        lambda c: c.add_reward(0.5, links={"gen_ai.response.id": "r-9"}),
        ("POST", "/api/v1/rewards", []),
        {
            "name": "reward",
            "source": "code",
            "tags": [],
            "value": 0.5,
            "links": {"gen_ai.response.id": "r-9"},
        },
    ),
    ("get_reward", lambda c: c.get_reward("r1"), ("GET", "/api/v1/rewards/r1", []), None),
    (
        "list_rewards",
        lambda c: c.list_rewards(tag="x", tag_scope="span", name="q", resolved=True, limit=10),
        (
            "GET",
            "/api/v1/rewards",
            [
                ["tag", "x"],
                ["tag_scope", "span"],
                ["name", "q"],
                ["resolved", "true"],
                ["limit", "10"],
            ],
        ),
        None,
    ),
    (
        "rewards_summary",
        lambda c: c.rewards_summary(group_by="config:prompt", tag="x", execution_id="e1"),
        (
            "GET",
            "/api/v1/rewards/summary",
            [["group_by", "config:prompt"], ["tag", "x"], ["execution_id", "e1"]],
        ),
        None,
    ),
    ("stats", lambda c: c.stats("triage bot"), ("GET", "/api/v1/stats/triage%20bot", []), None),
]


@pytest.mark.parametrize(
    ("call", "expected", "body"), [c[1:] for c in CALLS], ids=[c[0] for c in CALLS]
)
async def test_methods_send_the_documented_requests(client, api, call, expected, body):
    echoed = await call(client)
    method, path, params = expected
    assert (echoed["method"], echoed["path"], echoed["params"]) == (method, path, params)
    assert echoed["body"] == body
    (request,) = api.requests
    assert request.headers["Authorization"] == "Bearer k1"
    if body is not None:
        assert request.headers["Content-Type"] == "application/json"


async def test_http_errors_become_evolution_client_errors(client):
    with pytest.raises(EvolutionClientError) as caught:
        await client.get_task("missing")
    error = caught.value
    assert error.status == 404 and error.detail == "task not found"
    assert error.method == "GET" and error.url.endswith("/api/v1/tasks/missing")


async def test_transport_errors_become_evolution_client_errors(client, api):
    client.max_retries = 0
    api.script = [httpx.ConnectError("refused")]
    with pytest.raises(EvolutionClientError) as caught:
        await client.get_task("t1")
    assert caught.value.status is None
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_idempotent_calls_are_retried(client, api):
    api.script = [
        httpx.Response(503, headers={"Retry-After": "0"}),
        httpx.ReadTimeout("slow"),
    ]
    assert (await client.get_task("t1"))["path"] == "/api/v1/tasks/t1"
    assert len(api.requests) == 3


async def test_creations_without_an_id_are_not_retried(client, api):
    api.script = [httpx.Response(503, headers={"Retry-After": "0"})]
    with pytest.raises(EvolutionClientError) as caught:
        await client.create_task("demo")
    assert caught.value.status == 503 and caught.value.retry_after == 0
    assert len(api.requests) == 1
    api.script = [httpx.Response(503, headers={"Retry-After": "0"})]
    await client.create_task("demo", task_id="t1")
    assert len(api.requests) == 3


async def test_retries_give_up_after_max_retries(client, api):
    api.script = [httpx.Response(502, headers={"Retry-After": "0"})] * 3
    with pytest.raises(EvolutionClientError) as caught:
        await client.get_task("t1")
    assert caught.value.status == 502 and len(api.requests) == 3


async def test_empty_and_non_json_answers(client, api):
    api.script = [httpx.Response(204)]
    assert await client.set_task_status("t1", "queued") is None
    api.script = [httpx.Response(200, text="<html>")]
    with pytest.raises(EvolutionClientError, match="non-JSON"):
        await client.get_task("t1")


async def test_base_url_and_headers():
    api = EchoApi()
    client = AsyncEvolutionClient(
        "http://evo.test/api/v1/", headers={"X-Team": "a"}, transport=httpx.MockTransport(api)
    )
    assert client.base_url == "http://evo.test"
    assert (await client.get_task("t1"))["path"] == "/api/v1/tasks/t1"
    assert api.requests[0].headers["X-Team"] == "a"
    assert "Authorization" not in api.requests[0].headers
    await client.aclose()


async def test_closed_client_refuses_requests(api):
    client = AsyncEvolutionClient("http://evo.test", transport=httpx.MockTransport(api))
    async with client:
        await client.get_task("t1")
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_task("t1")
    await client.aclose()  # idempotent
    with pytest.raises(RuntimeError):
        await client.__aenter__()
