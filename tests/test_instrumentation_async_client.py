"""AsyncEvolutionClient against httpx.MockTransport; mirrors test_instrumentation_client.py."""

from __future__ import annotations

import json

import httpx
import pytest
from factories import pattern

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


TOOL_FEATURE = {"type": "tool", "key": None, "op": "used", "value": "search"}


def pattern_of(prompt_id, **overrides):
    """A success pattern `prompt = prompt_id` of agent triage."""
    feature = {"type": "prompt", "key": None, "op": "=", "value": prompt_id}
    return pattern(f"prompt = {prompt_id}", agent="triage", feature=feature, **overrides)


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

# The prompt registry (DESIGN §7): prompts, labels, experiments, markers.
CALLS += [
    (
        "create_prompt",
        lambda c: c.create_prompt(
            "triage",
            "Hi {{ name }}",
            parent_ids=["p1"],
            status="candidate",
            labels=["staging"],
            fitness={"success": 0.9},
            created_by="apo",
            note="shorter",
        ),
        ("POST", "/api/v1/prompts", []),
        {
            "agent": "triage",
            "content": "Hi {{ name }}",
            "parent_ids": ["p1"],
            "status": "candidate",
            "labels": ["staging"],
            "created_by": "apo",
            "fitness": {"success": 0.9},
            "note": "shorter",
        },
    ),
    (
        "create_prompt_defaults",
        lambda c: c.create_prompt("triage", "Hi"),
        ("POST", "/api/v1/prompts", []),
        {
            "agent": "triage",
            "content": "Hi",
            "parent_ids": [],
            "status": "draft",
            "labels": [],
            "created_by": "human",
        },
    ),
    ("get_prompt", lambda c: c.get_prompt("p 1"), ("GET", "/api/v1/prompts/p%201", []), None),
    (
        "list_prompts",
        lambda c: c.list_prompts(
            agent="triage", status="draft", label="latest", created_by="apo", cursor="c", limit=5
        ),
        (
            "GET",
            "/api/v1/prompts",
            [
                ["agent", "triage"],
                ["status", "draft"],
                ["label", "latest"],
                ["created_by", "apo"],
                ["cursor", "c"],
                ["limit", "5"],
            ],
        ),
        None,
    ),
    (
        "prompt_lineage",
        lambda c: c.prompt_lineage("p1"),
        ("GET", "/api/v1/prompts/p1/lineage", []),
        None,
    ),
    (
        "prompt_diff",
        lambda c: c.prompt_diff("p2", "p1"),
        ("GET", "/api/v1/prompts/p2/diff", [["against", "p1"]]),
        None,
    ),
    (
        "set_prompt_status",
        lambda c: c.set_prompt_status("p1", "experimental", note="try it"),
        ("POST", "/api/v1/prompts/p1/status", []),
        {"status": "experimental", "note": "try it"},
    ),
    (
        "approve_prompt",
        lambda c: c.approve_prompt("p1", note="ship"),
        ("POST", "/api/v1/prompts/p1/approve", []),
        {"note": "ship"},
    ),
    (
        "approve_prompt_bare",
        lambda c: c.approve_prompt("p1"),
        ("POST", "/api/v1/prompts/p1/approve", []),
        {},
    ),
    (
        "set_label",
        lambda c: c.set_label("triage bot", "staging", "p1"),
        ("PUT", "/api/v1/agents/triage%20bot/labels/staging", []),
        {"prompt_id": "p1"},
    ),
    (
        "list_labels",
        lambda c: c.list_labels("triage"),
        ("GET", "/api/v1/agents/triage/labels", []),
        None,
    ),
    (
        "resolve_prompt",
        lambda c: c.resolve_prompt("triage", label="staging", key="user-7"),
        ("GET", "/api/v1/agents/triage/prompt", [["label", "staging"], ["key", "user-7"]]),
        None,
    ),
    (
        "resolve_prompt_defaults",
        lambda c: c.resolve_prompt("triage"),
        ("GET", "/api/v1/agents/triage/prompt", [["label", "production"]]),
        None,
    ),
    (
        "create_experiment",
        lambda c: c.create_experiment(
            "triage", variants=[("p1", 0.5), {"prompt_id": "p2", "weight": 0.5}], metric="acc"
        ),
        ("POST", "/api/v1/experiments", []),
        {
            "agent": "triage",
            "kind": "ab",
            "variants": [{"prompt_id": "p1", "weight": 0.5}, {"prompt_id": "p2", "weight": 0.5}],
            "metric": "acc",
        },
    ),
    (
        "create_experiment_regression",
        lambda c: c.create_experiment(
            "triage", kind="regression", baseline="p1", target=("e1",), control=["e2"]
        ),
        ("POST", "/api/v1/experiments", []),
        {
            "agent": "triage",
            "kind": "regression",
            "baseline": "p1",
            "target": ["e1"],
            "control": ["e2"],
        },
    ),
    (
        "get_experiment",
        lambda c: c.get_experiment("x1"),
        ("GET", "/api/v1/experiments/x1", []),
        None,
    ),
    (
        "list_experiments",
        lambda c: c.list_experiments(agent="triage", status="running", cursor="c", limit=2),
        (
            "GET",
            "/api/v1/experiments",
            [["agent", "triage"], ["status", "running"], ["cursor", "c"], ["limit", "2"]],
        ),
        None,
    ),
    (
        "stop_experiment",
        lambda c: c.stop_experiment("x1", winner="p2", approve=True, note="p2 wins"),
        ("POST", "/api/v1/experiments/x1/stop", []),
        {"approve": True, "winner": "p2", "note": "p2 wins"},
    ),
    (
        "add_experiment_results",
        lambda c: c.add_experiment_results(
            "x1", [{"prompt_id": "p1", "example_id": "e1", "score": 1.0}]
        ),
        ("POST", "/api/v1/experiments/x1/results", []),
        {"results": [{"prompt_id": "p1", "example_id": "e1", "score": 1.0}]},
    ),
    (
        "list_markers",
        lambda c: c.list_markers(
            agent="triage", kind="prompt.promoted", start_after=1, start_before=2, limit=10
        ),
        (
            "GET",
            "/api/v1/markers",
            [
                ["agent", "triage"],
                ["kind", "prompt.promoted"],
                ["start_after", "1"],
                ["start_before", "2"],
                ["limit", "10"],
            ],
        ),
        None,
    ),
    # The pattern learner's results (DESIGN §7).
    (
        "list_patterns",
        lambda c: c.list_patterns(
            agent="triage", kind="failure", status="active", context="task:refund", max_q=0.01
        ),
        (
            "GET",
            "/api/v1/patterns",
            [
                ["agent", "triage"],
                ["kind", "failure"],
                ["status", "active"],
                ["context", "task:refund"],
                ["max_q", "0.01"],
                ["limit", "100"],
            ],
        ),
        None,
    ),
    ("get_pattern", lambda c: c.get_pattern("3f2a"), ("GET", "/api/v1/patterns/3f2a", []), None),
    (
        "apply_pattern",
        lambda c: c.apply_pattern("3f 2a"),
        ("POST", "/api/v1/patterns/3f%202a/apply", []),
        None,
    ),
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


async def test_registry_writes_a_repeat_would_refuse_are_not_retried(client, api):
    for call in (
        lambda: client.set_prompt_status("p1", "candidate"),
        lambda: client.approve_prompt("p1"),
        lambda: client.create_experiment("a", variants={"p1": 0.5, "p2": 0.5}),
        lambda: client.stop_experiment("x1"),
        lambda: client.add_experiment_results("x1", []),
        lambda: client.apply_pattern("3f2a"),  # a second apply answers 409
    ):
        api.requests.clear()
        api.script = [httpx.Response(503, headers={"Retry-After": "0"})]
        with pytest.raises(EvolutionClientError):
            await call()
        assert len(api.requests) == 1
    for call in (
        lambda: client.create_prompt("a", "same content"),  # answers the stored row again
        lambda: client.set_label("a", "staging", "p1"),
        lambda: client.resolve_prompt("a"),
        lambda: client.list_patterns(),
        lambda: client.get_pattern("3f2a"),
    ):
        api.requests.clear()
        api.script = [httpx.Response(503, headers={"Retry-After": "0"})]
        await call()
        assert len(api.requests) == 2


# --- the prompt registry against the real app -------------------------------------------------


@pytest.fixture
async def app_client(store, store_url):
    """An AsyncEvolutionClient over ASGITransport to the real app on the test's store."""
    from api.app import create_app
    from evolution_store.config import Settings

    app = create_app(Settings(store_url=store_url, api_keys=""), store=store)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with AsyncEvolutionClient("http://test", transport=transport) as c:
            yield c


async def test_registry_round_trip_against_the_app(app_client):
    c = app_client
    v1 = await c.create_prompt("triage", "v1 {{ x }}", status="candidate", note="first")
    assert (v1["version"], v1["status"], v1["labels"]) == (1, "candidate", ["latest"])
    assert (await c.create_prompt("triage", "v1 {{ x }}", status="candidate"))["id"] == v1["id"]
    approved = await c.approve_prompt(v1["id"], note="ship it")
    assert approved["status"] == "production" and approved["approved_by"] == "anonymous"
    v2 = await c.create_prompt("triage", "v2 {{ x }}", parent_ids=[v1["id"]], created_by="apo")
    assert v2["version"] == 2 and v2["parent_ids"] == [v1["id"]]
    await c.set_prompt_status(v2["id"], "experimental")
    assert (await c.set_prompt_status(v2["id"], "candidate", note="ok"))["status"] == "candidate"
    with pytest.raises(EvolutionClientError) as caught:
        await c.set_prompt_status(v2["id"], "draft")
    assert caught.value.status == 409
    assert (await c.get_prompt(v2["id"]))["note"] == "ok"
    page = await c.list_prompts(agent="triage", limit=1)
    assert [p["version"] for p in page["items"]] == [2] and page["next_cursor"]
    assert [p["id"] for p in (await c.list_prompts(created_by="apo"))["items"]] == [v2["id"]]
    lineage = await c.prompt_lineage(v1["id"])
    assert [p["id"] for p in lineage["descendants"]] == [v2["id"]]
    diff = (await c.prompt_diff(v2["id"], v1["id"]))["diff"]
    assert "-v1 {{ x }}" in diff and "+v2 {{ x }}" in diff

    assert (await c.set_label("triage", "staging", v2["id"]))["version"] == 2
    labels = {item["label"]: item["version"] for item in (await c.list_labels("triage"))["items"]}
    assert labels == {"latest": 2, "production": 1, "staging": 2}
    assert (await c.resolve_prompt("triage"))["id"] == v1["id"]
    assert (await c.resolve_prompt("triage", label="staging"))["id"] == v2["id"]

    ab = await c.create_experiment("triage", variants=[(v1["id"], 0.5), (v2["id"], 0.5)])
    assert ab["status"] == "running" and len(ab["results"]) == 2
    first = await c.resolve_prompt("triage", key="user-7")
    assert first["experiment_id"] == ab["id"] and first["variant"] in (0, 1)
    assert (await c.resolve_prompt("triage", key="user-7"))["id"] == first["id"]
    assert (await c.get_experiment(ab["id"]))["variants"][1]["prompt_id"] == v2["id"]
    running = await c.list_experiments(agent="triage", status="running")
    assert [x["id"] for x in running["items"]] == [ab["id"]]
    stopped = await c.stop_experiment(ab["id"], winner=v2["id"], approve=True, note="v2 wins")
    assert stopped["winner"] == v2["id"] and stopped["status"] != "running"
    assert (await c.resolve_prompt("triage"))["id"] == v2["id"]

    regression = await c.create_experiment(
        "triage", kind="regression", baseline=v1["id"], target=["e1"], control=["e2"]
    )
    scored = await c.add_experiment_results(
        regression["id"],
        [
            {"prompt_id": v1["id"], "example_id": "e1", "score": 1.0},
            {"prompt_id": v2["id"], "example_id": "e2", "score": 0.0, "tokens": 5},
        ],
    )
    by_prompt = {r["prompt_id"]: r for r in scored["results"]}
    assert by_prompt[v1["id"]]["target"]["n"] == 1
    assert by_prompt[v2["id"]]["control"]["success"] == 0.0

    kinds = [m["kind"] for m in (await c.list_markers(agent="triage"))["items"]]
    assert {"prompt.promoted", "prompt.label_moved", "experiment.started"} <= set(kinds)
    promoted = (await c.list_markers(agent="triage", kind="prompt.promoted", limit=1))["items"]
    assert promoted[0]["after"]["prompt_id"] == v2["id"]


async def test_patterns_round_trip_against_the_app(app_client, store):
    c = app_client
    v1 = await c.create_prompt("triage", "v1 {{ x }}", status="candidate")
    await c.approve_prompt(v1["id"])
    v2 = await c.create_prompt("triage", "v2 {{ x }}", status="candidate")
    better = pattern_of(v2["id"], q=0.001)
    tool = pattern("tool search used", agent="triage", q=0.01, feature=TOOL_FEATURE)
    await store.save_patterns([better, tool], scope={"agent": "triage"})

    page = await c.list_patterns(agent="triage", limit=1)
    assert [p["id"] for p in page["items"]] == [better["id"]] and page["next_cursor"]
    assert [p["id"] for p in (await c.list_patterns(max_q=0.005))["items"]] == [better["id"]]
    assert (await c.list_patterns(context="agent:triage", kind="failure"))["items"] == []
    assert (await c.get_pattern(tool["id"]))["evidence"]["q_value"] == 0.01

    applied = await c.apply_pattern(better["id"])
    assert applied["status"] == "applied"
    experiment = await c.get_experiment(applied["applied"]["experiment_id"])
    assert [v["prompt_id"] for v in experiment["variants"]] == [v1["id"], v2["id"]]
    for refused in (better["id"], tool["id"]):
        with pytest.raises(EvolutionClientError) as caught:
            await c.apply_pattern(refused)
        assert caught.value.status == 409
    assert "not a setting the store can change" in caught.value.detail
    marker = (await c.list_markers(agent="triage", kind="pattern.applied"))["items"][0]
    assert marker["after"]["pattern_id"] == better["id"]
