"""The published OpenAPI is the contract: schemathesis fuzzes every operation of
`/openapi.json`, on SQLite and on Postgres, and fails on any 5xx and on any answer the document
does not describe (an undocumented status code or content type, a header or body of another
shape).

Bounded to run with the unit tests: a fixed seed, `MAX_EXAMPLES` cases per operation for each
generation mode (inputs the schema allows, and inputs it forbids), no shrinking. One app (one
store) serves every operation of a backend; a failing operation is reported with the others.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings

from api.app import create_app
from evolution_store.config import Settings

MAX_EXAMPLES = 25
SEED = 17

#: Any 5xx, and any answer the document does not describe, fails.
CONFIG = {
    "seed": SEED,
    "checks": {
        "enabled": False,
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
    },
}


def _fuzz(operation: Any, mode: schemathesis.GenerationMode) -> None:
    @seed(SEED)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate()

    run()


def test_every_operation_matches_the_schema(store_url: str) -> None:
    # The app opens its own store: schemathesis runs it on an event loop of its own, and its
    # pytest plugin ends the app's lifespan (draining the store) when this test ends.
    app = create_app(Settings(store_url=store_url, api_keys=""))
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG)
    )
    failures = []
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in schemathesis.GenerationMode:
            if mode is schemathesis.GenerationMode.NEGATIVE and not (
                any(operation.iter_parameters()) or operation.body
            ):
                continue  # no input to get wrong (GET /healthz)
            tested += 1
            try:
                _fuzz(operation, mode)
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {type(exc).__name__}: {exc}")
    assert tested >= 30, f"only {tested} operation × mode runs: did the schema lose routes?"
    assert not failures, "\n\n".join(failures)


# -- what the document says about errors (no store needed) -------------------------------------

ERROR_BODY = {"$ref": "#/components/schemas/ErrorBody"}


def _spec() -> dict[str, Any]:
    return create_app(Settings(store_url="sqlite://", api_keys="")).openapi()


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, item in spec["paths"].items() for m, op in item.items()]


def test_the_error_body_replaces_fastapis():
    spec = _spec()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert set(schemas["ErrorBody"]["properties"]) == {"detail", "type", "field", "errors"}
    assert set(schemas["ErrorItem"]["required"]) == {"field", "in", "message", "type"}


#: operations that answer 404 for something named other than by an `{…_id}` in the path
LOOKS_UP_BY_NAME = {
    "PUT /api/v1/agents/{agent}/labels/{label}",
    "GET /api/v1/agents/{agent}/prompt",
    "POST /api/v1/experiments",
    "POST /api/v1/jobs/{name}/run",
}


def test_every_rest_error_answer_is_documented_with_our_body():
    spec = _spec()
    rest = [op for op in _operations(spec) if op[1] != "/v1/traces"]
    assert len(rest) >= 19
    for method, path, operation in rest:
        responses = operation["responses"]
        expected = {"503"}
        if path.startswith("/api/v1/"):
            expected |= {"401", "403", "422"}
        if "_id}" in path or f"{method} {path}" in LOOKS_UP_BY_NAME:
            expected.add("404")
        if "requestBody" in operation:
            expected |= {"400", "413", "415"}
        errors = {code for code in responses if int(code) >= 400} - {"409"}
        assert errors == expected, f"{method} {path}: {sorted(errors)}"
        for code in errors | ({"409"} & set(responses)):
            assert responses[code]["content"]["application/json"]["schema"] == ERROR_BODY
        assert responses["503"]["headers"]["Retry-After"]["required"] is True


def test_conflicts_are_documented_where_they_happen():
    spec = _spec()
    conflict = {f"{m} {p}" for m, p, op in _operations(spec) if "409" in op["responses"]}
    assert conflict == {
        "POST /api/v1/rewards",
        "POST /api/v1/experiments",
        "POST /api/v1/prompts/{prompt_id}/status",
        "POST /api/v1/prompts/{prompt_id}/approve",
        "PUT /api/v1/agents/{agent}/labels/{label}",
        "POST /api/v1/experiments/{experiment_id}/stop",
        "POST /api/v1/experiments/{experiment_id}/results",
        "POST /api/v1/patterns/{pattern_id}/apply",
    }


def test_otlp_keeps_its_own_error_answers():
    # /v1/traces answers google.rpc.Status in the request's encoding; only the API-key checks,
    # which run before the route, answer the API's ErrorBody.
    responses = _spec()["paths"]["/v1/traces"]["post"]["responses"]
    for status in ("400", "413", "415", "503"):
        content = responses[status]["content"]
        assert set(content) == {"application/x-protobuf", "application/json"}
        assert content["application/json"]["schema"]["title"] == "google.rpc.Status"
    for status in ("401", "403"):
        assert "ErrorBody" in str(responses[status])
