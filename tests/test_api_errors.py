"""Bad input gets a clear 4xx, never a 500 (DESIGN §5), on SQLite and Postgres.

A battery of garbage — wrong types, huge numbers, invalid hex ids, unknown statuses, forged
cursors, bad group_by, bodies that are not JSON, empty bodies — against every route. Each
case names the status it must get; after each, the server still answers.
"""

from __future__ import annotations

import base64
import json

import pytest
from factories import span_dict, trace_id

API = "/api/v1"
JSON = {"content-type": "application/json"}
HUGE = 10**30
DEEP = json.loads("[" * 300 + "]" * 300)  # deeper than orjson serialises (254)
HUGE_TEXT = "9" * 5000  # more digits than Python's int parsing allows by default


def _cursor(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def raw(body: str | bytes) -> dict:
    return {"content": body.encode() if isinstance(body, str) else body, "headers": JSON}


# (method, path, request kwargs, expected status)
CASES = [
    # -- bodies that are not JSON, or not an object -------------------------------------------
    ("POST", "/tasks", raw("{not json"), 400),
    ("POST", "/tasks", raw(b"\xff\xfe\x00"), 400),
    ("POST", "/tasks", raw("[" * 50_000), 400),
    ("POST", "/tasks", raw(""), 422),
    ("POST", "/tasks", raw("null"), 422),
    ("POST", "/tasks", raw("[]"), 422),
    ("POST", "/tasks", raw('"text"'), 422),
    ("POST", "/spans", raw("{not json"), 400),
    ("POST", "/spans", raw(b"\xff\xfe\x00"), 400),
    ("POST", "/spans", raw("[" * 50_000), 400),
    ("POST", "/spans", raw(""), 422),
    ("POST", "/spans", raw("   "), 422),
    ("POST", "/spans", raw("null"), 422),
    ("POST", "/spans", raw("12"), 422),
    ("POST", "/spans", raw('{"spans": 5}'), 422),
    ("POST", "/spans", raw('{"spans": [1, 2]}'), 422),
    ("POST", "/spans/batch", raw("{}"), 422),
    ("POST", "/spans/batch", raw('{"name": "one"}'), 422),
    ("POST", "/spans/batch", raw("nope"), 400),
    ("POST", "/rewards", raw("{"), 400),
    ("POST", "/rewards", raw(""), 422),
    ("PATCH", "/tasks/known", raw(""), 422),
    ("PATCH", "/tasks/known", raw("{]"), 400),
    ("PATCH", "/executions/x", raw("5"), 422),
    ("POST", f"/spans/{'a' * 16}/tags", raw("{"), 400),
    ("POST", "/spans", {"content": b"name=x", "headers": {"content-type": "text/plain"}}, 415),
    # -- tasks: wrong types, unknown fields, limits --------------------------------------------
    ("POST", "/tasks", {"json": {"id": 5}}, 422),
    ("POST", "/tasks", {"json": {"id": ""}}, 422),
    ("POST", "/tasks", {"json": {"id": "x" * 201}}, 422),
    ("POST", "/tasks", {"json": {"name": "x" * 501}}, 422),
    ("POST", "/tasks", {"json": {"tags": [1, 2]}}, 422),
    ("POST", "/tasks", {"json": {"tags": [""]}}, 422),
    ("POST", "/tasks", {"json": {"metadata": []}}, 422),
    ("POST", "/tasks", {"json": {"surprise": True}}, 422),
    ("POST", "/tasks/known/executions", {"json": {"config": "v1"}}, 422),
    ("POST", "/tasks/known/executions", {"json": {"id": ""}}, 422),
    ("PATCH", "/tasks/known", {"json": {"status": "exploded"}}, 422),
    ("PATCH", "/tasks/known", {"json": {"status": 3}}, 422),
    ("PATCH", "/tasks/known", {"json": {}}, 422),
    ("PATCH", "/executions/x", {"json": {"status": "done"}}, 422),
    ("GET", "/tasks?status=exploded", {}, 422),
    ("GET", "/tasks?limit=0", {}, 422),
    ("GET", "/tasks?limit=1001", {}, 422),
    ("GET", "/tasks?limit=-1", {}, 422),
    ("GET", "/tasks?limit=abc", {}, 422),
    ("GET", f"/tasks?limit={HUGE}", {}, 422),
    ("GET", "/tasks?tag=", {}, 422),
    # -- cursors -------------------------------------------------------------------------------
    ("GET", "/tasks?cursor=garbage", {}, 422),
    ("GET", "/tasks?cursor=!!!", {}, 422),
    ("GET", "/tasks?cursor=%F0%9F%92%A9", {}, 422),
    ("GET", f"/tasks?cursor={_cursor({'a': 1})}", {}, 422),
    ("GET", f"/tasks?cursor={_cursor([1])}", {}, 422),
    ("GET", f"/tasks?cursor={_cursor(['x', {'a': 1}])}", {}, 422),
    ("GET", f"/tasks?cursor={_cursor([[1], None])}", {}, 422),
    ("GET", f"/spans?cursor={_cursor(['x'])}", {}, 422),
    ("GET", f"/spans?cursor={_cursor([HUGE])}", {}, 422),
    ("GET", f"/spans?cursor={_cursor([2**64 - 1])}", {}, 422),
    ("GET", f"/spans?trace_id={'a' * 32}&cursor={_cursor([2**64 - 1, 1])}", {}, 422),
    ("GET", f"/rewards?cursor={_cursor([True, 1])}", {}, 422),
    ("GET", f"/rewards?cursor={_cursor(['abc'])}", {}, 422),
    ("GET", "/rewards?cursor=" + "A" * 1001, {}, 422),
    # -- spans ---------------------------------------------------------------------------------
    ("POST", "/spans", {"json": {"name": "s", "trace_id": "zz"}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "trace_id": "0" * 32}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "span_id": "a" * 15}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "span_id": "0" * 16}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "span_id": 1234}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "parent_span_id": "xyz"}}, 422),
    ("POST", "/spans", {"json": {"name": ""}}, 422),
    ("POST", "/spans", {"json": {"name": "x" * 1001}}, 422),
    ("POST", "/spans", {"json": {}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "kind": "weird"}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "status_code": "meh"}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "start_time": -1}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "start_time": "soon"}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "start_time": HUGE}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "end_time": HUGE}}, 422),
    ("POST", "/spans", raw('{"name": "s", "start_time": ' + HUGE_TEXT + "}"), (400, 422)),
    ("POST", "/spans", {"json": {"name": "s", "attributes": []}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "events": {}}}, 422),
    ("POST", "/spans", {"json": {"name": "s", "tags": "x" * 201}}, 422),
    ("POST", "/spans", {"json": {"spans": [{"name": "ok"}, {"name": "bad", "kind": 7}]}}, 422),
    ("GET", "/spans?status=broken", {}, 422),
    ("GET", "/spans?attribute=novalue", {}, 422),
    ("GET", "/spans?attribute=:x", {}, 422),
    ("GET", "/spans?start_after=-5", {}, 422),
    ("GET", f"/spans?start_after={HUGE}", {}, 422),
    ("GET", "/spans?start_before=yesterday", {}, 422),
    ("GET", "/spans?limit=100000", {}, 422),
    ("GET", "/spans/not-hex", {}, (404, 422)),
    ("GET", f"/spans/{'a' * 16}?trace_id=", {}, 422),
    ("GET", f"/spans/{'a' * 5000}", {}, (404, 422)),
    ("GET", "/spans/%00", {}, (404, 422)),
    ("POST", f"/spans/{'a' * 16}/tags", {"json": {"tags": "x"}}, 404),
    ("POST", f"/spans/{'a' * 16}/tags", {"json": {"tags": [5]}}, 422),
    ("POST", f"/spans/{'a' * 16}/tags", {"json": {}}, 422),
    ("GET", f"/spans/{'a' * 16}/rewards", {}, 404),
    # -- rewards -------------------------------------------------------------------------------
    ("POST", "/rewards", {"json": {"value": 1}}, 422),
    ("POST", "/rewards", {"json": {"trace_id": "a" * 32}}, 422),
    ("POST", "/rewards", {"json": {"value": "high", "trace_id": "a" * 32}}, 422),
    ("POST", "/rewards", {"json": {"value": True, "trace_id": "a" * 32, "source": "god"}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "trace_id": "zz"}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "span_id": "0" * 16}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "task_id": "t", "execution_id": "e"}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "links": {"k": [1, 2]}}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "links": {"": "v"}}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "links": {"span_id": "nothex"}}}, 422),
    ("POST", "/rewards", {"json": {"dimensions": {"a": "x"}, "task_id": "t"}}, 422),
    ("POST", "/rewards", {"json": {"value": 1, "task_id": "t", "extra": 1}}, 422),
    ("POST", "/rewards", raw('{"value": NaN, "task_id": "t"}'), 422),
    ("POST", "/rewards", raw('{"value": Infinity, "task_id": "t"}'), 422),
    ("POST", "/rewards", raw('{"value": 1e999, "task_id": "t"}'), 422),
    ("POST", "/rewards", raw('{"value": 1' + "0" * 400 + ', "task_id": "t"}'), 422),
    ("GET", "/rewards?tag_scope=everywhere", {}, 422),
    ("GET", "/rewards?resolved=maybe", {}, 422),
    ("GET", "/rewards?limit=0", {}, 422),
    ("GET", "/rewards/summary", {}, 422),
    ("GET", "/rewards/summary?group_by=nope", {}, 422),
    ("GET", "/rewards/summary?group_by=config:", {}, 422),
    ("GET", "/rewards/summary?group_by=", {}, 422),
    ("GET", "/rewards/summary?group_by=name&tag_scope=x", {}, 422),
    ("GET", "/rewards/nope", {}, 404),
    # -- stats ---------------------------------------------------------------------------------
    ("GET", "/stats/a?start_after=x", {}, 422),
    ("GET", f"/stats/a?start_before={HUGE}", {}, 422),
    # -- wrong methods and paths ---------------------------------------------------------------
    ("DELETE", "/tasks/known", {}, 405),
    ("PUT", "/spans", {"json": {}}, 405),
    ("GET", "/nowhere", {}, 404),
]


def _case_id(case) -> str:
    method, path, kwargs, _ = case
    body = kwargs.get("json", kwargs.get("content", b""))
    text = json.dumps(body) if not isinstance(body, bytes) else body.decode(errors="replace")
    return f"{method} {path[:60]} {text[:40]}"


@pytest.fixture
async def seeded(api_client):
    assert (await api_client.post(f"{API}/tasks", json={"id": "known"})).status_code == 201
    return api_client


@pytest.mark.parametrize("case", CASES, ids=[_case_id(case) for case in CASES])
async def test_garbage_gets_a_clear_4xx(seeded, case):
    method, path, kwargs, expected = case
    response = await seeded.request(method, API + path, **kwargs)
    allowed = expected if isinstance(expected, tuple) else (expected,)
    assert response.status_code in allowed, f"{response.status_code} {response.text[:300]}"
    body = response.json()
    assert body["detail"]
    if response.status_code == 422:
        assert body["type"] == "invalid_input"
        assert "errors" in body or body.get("field")
    assert (await seeded.get("/healthz")).status_code == 200


async def test_validation_errors_name_the_field(api_client):
    response = await api_client.post(
        f"{API}/spans", json={"spans": [span_dict(), {"name": "x", "trace_id": "nothex"}]}
    )
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "spans.1.trace_id"
    assert body["errors"][0]["in"] == "body"

    query = await api_client.get(f"{API}/tasks", params={"limit": 0})
    assert query.json()["field"] == "limit"
    assert query.json()["errors"][0]["in"] == "query"

    cursor = await api_client.get(f"{API}/tasks", params={"cursor": "garbage"})
    assert cursor.json()["field"] == "cursor"


# Values that are valid JSON and pass the models, but that the database may not take as is.
STORABLE_CASES = [
    ("big int attribute", "/spans", {"name": "s", "attributes": {"n": HUGE}}),
    ("big int metadata", "/tasks", {"id": "big", "metadata": {"n": HUGE}}),
    ("big int input", "/tasks", {"id": "big-input", "input": HUGE}),
    ("NUL in name", "/tasks", {"id": "nul", "name": "a\u0000b"}),
    ("NUL in id", "/tasks", {"id": "nul\u0000id"}),
    ("NUL in tag", "/spans", {"name": "s", "tags": ["a\u0000"]}),
    ("NUL in attribute", "/spans", {"name": "s", "attributes": {"k\u0000": "v\u0000"}}),
    ("NUL in span name", "/spans", {"name": "a\u0000"}),
    ("deep attributes", "/spans", {"name": "s", "attributes": {"d": DEEP}}),
    ("reward huge metadata int", "/rewards", {"value": 1, "task_id": "t", "metadata": {"n": HUGE}}),
    ("NUL in reward link", "/rewards", {"value": 1, "links": {"user.id": "a\u0000"}}),
    ("NUL in reward task id", "/rewards", {"value": 1, "task_id": "\u0000"}),
    ("unicode everywhere", "/tasks", {"id": "ταυ-🚀", "name": "名前", "tags": ["🏷"]}),
]  # fmt: skip


@pytest.mark.parametrize(
    "path, body", [case[1:] for case in STORABLE_CASES], ids=[case[0] for case in STORABLE_CASES]
)
async def test_odd_but_valid_json_is_stored_or_refused_never_500(api_client, path, body):
    response = await api_client.post(API + path, json=body)
    assert response.status_code in (200, 201, 422), f"{response.status_code} {response.text[:300]}"
    assert (await api_client.get("/healthz")).status_code == 200


@pytest.mark.parametrize(
    "body",
    ['{"name": "\\ud800"}', '{"name": "s", "attributes": {"k": "\\udfff"}}'],
    ids=["lone surrogate in name", "lone surrogate in attribute"],
)
@pytest.mark.parametrize("path", ["/spans", "/tasks"])
async def test_lone_surrogates_never_500(api_client, path, body):
    if path == "/tasks":
        body = body.replace('"attributes"', '"metadata"')
    response = await api_client.post(API + path, **raw(body))
    assert response.status_code in (200, 201, 400, 422), (
        f"{response.status_code} {response.text[:300]}"
    )


async def test_summary_of_extreme_values_is_json(api_client):
    # Values beyond ±1e15 are refused; the rest, subnormals included, must summarise as JSON.
    trace = trace_id()
    name = f"extreme-{trace[:8]}"
    expected = {1e15: 201, -1e15: 201, 5e-324: 201, 1.7e308: 422, -1.7e308: 422}
    for value, status in expected.items():
        body = {"value": value, "trace_id": trace, "name": name}
        posted = await api_client.post(f"{API}/rewards", json=body)
        assert posted.status_code == status, posted.text[:300]
    response = await api_client.get(
        f"{API}/rewards/summary", params={"group_by": "name", "name": name}
    )
    assert response.status_code == 200, f"{response.status_code} {response.text[:300]}"
    [group] = response.json()["groups"]
    assert group["count"] == 3


async def test_errors_on_unknown_routes_are_json(api_client):
    response = await api_client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["type"] == "not_found"


# -- tags: a list of strings, or one string; anything else is a 422 naming the field -----------

NOT_TAGS = [False, True, 0, 3.5, {"a": 1}, {}]
TAGGED_ROUTES = [
    ("/tasks", lambda tags: {"name": "t", "tags": tags}, "tags"),
    ("/spans", lambda tags: {"name": "s", "tags": tags}, "tags"),
    ("/spans/batch", lambda tags: {"spans": [{"name": "s", "tags": tags}]}, "spans.0.tags"),
    (f"/spans/{'a' * 16}/tags", lambda tags: {"tags": tags}, "tags"),
    ("/rewards", lambda tags: {"value": 1, "task_id": "t", "tags": tags}, "tags"),
]


@pytest.mark.parametrize("tags", NOT_TAGS, ids=[json.dumps(tags) for tags in NOT_TAGS])
@pytest.mark.parametrize(
    "path, body, field", TAGGED_ROUTES, ids=[route[0][:12] for route in TAGGED_ROUTES]
)
async def test_tags_that_are_not_a_list_of_strings_are_422(api_client, path, body, field, tags):
    response = await api_client.post(API + path, json=body(tags))
    assert response.status_code == 422, f"{response.status_code} {response.text[:300]}"
    assert response.json()["field"] == field


async def test_one_string_is_one_tag(api_client):
    response = await api_client.post(f"{API}/tasks", json={"name": "t", "tags": "solo"})
    assert response.status_code == 201, response.text[:300]
    assert response.json()["tags"] == ["solo"]


# -- 405 names every method of the path; 415 for a body not declared as JSON ------------------


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("DELETE", "/tasks", "GET, POST"),
        ("PUT", "/tasks/known", "GET, PATCH"),
        ("DELETE", "/tasks/known/executions", "GET, POST"),
        ("PUT", "/spans", "GET, POST"),
        ("PUT", "/spans/batch", "GET, POST"),  # /spans/{span_id} matches "batch" too
        ("DELETE", "/rewards/summary", "GET"),
        ("POST", "/stats/agent", "GET"),
    ],
)
async def test_405_allow_names_every_method_of_the_path(api_client, method, path, allowed):
    response = await api_client.request(method, API + path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["type"] == "method_not_allowed"


@pytest.mark.parametrize(
    "method, path, headers",
    [
        ("POST", "/tasks", {"content-type": "text/plain"}),
        ("POST", "/tasks", {}),
        ("POST", "/rewards", {"content-type": "application/x-www-form-urlencoded"}),
        ("PATCH", "/tasks/known", {"content-type": "text/plain"}),
        ("POST", "/tasks/known/executions", {"content-type": "application/xml"}),
        ("POST", f"/spans/{'a' * 16}/tags", {"content-type": "text/plain"}),
    ],
)
async def test_a_body_not_declared_as_json_is_415(seeded, method, path, headers):
    response = await seeded.request(
        method, API + path, content=b'{"status": "running"}', headers=headers
    )
    assert response.status_code == 415, f"{response.status_code} {response.text[:300]}"
    assert response.json()["type"] == "unsupported_media_type"


async def test_json_with_parameters_is_json(api_client):
    headers = {"content-type": "application/json; charset=utf-8"}
    response = await api_client.post(f"{API}/tasks", content=b'{"name": "t"}', headers=headers)
    assert response.status_code == 201, response.text[:300]
