"""The OpenAPI document, made true about errors.

FastAPI publishes a 422 body of its own (`HTTPValidationError`, `{detail: [{loc, msg, type}]}`)
that this server never sends, and none of the other error answers, so clients generated from
the spec could not parse our errors. `install_openapi(app)` documents instead, on every REST
operation, the errors it can answer, each with the one body `api.errors` sends (`ErrorBody`).
Which errors follows from what the operation is, read from the generated document itself:

    every operation                  503 + Retry-After   store overloaded or unreachable
    needs an API key (`security`)    401, 403            only when EVOLUTION_API_KEYS is set
    has parameters or a body         422                 an input is invalid
    a path naming an id (`{…_id}`)   404                 no such task, execution, span, reward
    reads a body                     400, 413, 415       not JSON, too large, not JSON's type

A route declares any other error it gives with `responses=` (POST /rewards: 409); this fills in
the body. OTLP's `/v1/traces` answers `google.rpc.Status` and keeps the responses it declares.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .errors import ErrorBody

#: Paths whose errors are not `ErrorBody` and that document their own.
OWN_ERROR_BODIES = frozenset({"/v1/traces"})

_SCHEMAS = "#/components/schemas/"

_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "No API key, or an unknown one (only when EVOLUTION_API_KEYS is set)",
    403: "A read-only API key on a write",
    404: "Not found",
    409: "Conflicts with what is stored",
    413: "The body is larger than EVOLUTION_MAX_BODY_BYTES",
    415: "The body is not application/json",
    422: "An invalid input: `field` names it; `errors` lists every one when the request "
    "did not validate",
    503: "Overloaded, or the database is unavailable: retry after `Retry-After` seconds",
}

_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    503: {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "required": True,
            "schema": {"type": "integer", "minimum": 1},
        }
    },
}

_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def install_openapi(app: FastAPI) -> None:
    """Make `app.openapi()` (and so `/openapi.json` and `/docs`) document the error answers."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """`spec` with every REST operation's error answers and the `ErrorBody` schema (in place)."""
    for path, item in spec.get("paths", {}).items():
        if path in OWN_ERROR_BODIES:
            continue
        for method, operation in item.items():
            if method in _METHODS:
                _document_operation(operation)
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    body = ErrorBody.model_json_schema(ref_template=_SCHEMAS + "{model}")
    schemas.update(body.pop("$defs", {}))
    schemas["ErrorBody"] = body
    return spec


def _document_operation(operation: dict[str, Any]) -> None:
    parameters = operation.get("parameters", [])
    ids = [p["name"] for p in parameters if p["in"] == "path" and p["name"].endswith("_id")]
    codes = {503}
    if operation.get("security"):
        codes |= {401, 403}
    if parameters or "requestBody" in operation:
        codes.add(422)
    if ids:
        codes.add(404)
    if "requestBody" in operation:
        codes |= {400, 413, 415}
    responses = operation.setdefault("responses", {})
    for code in sorted(codes):
        responses.setdefault(str(code), {})
    for code, response in responses.items():
        if not code.isdigit() or int(code) < 400:
            continue
        status = int(code)
        if not response.get("description") or response["description"] == "Validation Error":
            response["description"] = _describe(status, ids)
        response["content"] = {"application/json": {"schema": {"$ref": _SCHEMAS + "ErrorBody"}}}
        if status in _HEADERS:
            response.setdefault("headers", {}).update(_HEADERS[status])
    operation["responses"] = dict(sorted(responses.items()))


def _describe(status: int, ids: list[str]) -> str:
    if status == 404 and ids:
        return "Nothing stored has this " + " or ".join(f"`{name}`" for name in ids)
    return _DESCRIPTIONS.get(status, "Error")
