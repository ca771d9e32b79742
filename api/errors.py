"""Every error the HTTP API answers with, mapped in one table.

The store raises `evolution_store.errors` classes; FastAPI raises validation and HTTP errors;
the body-size guard raises `BodyTooLarge`. Each becomes one JSON shape:

    {"detail": "task 'x' not found", "type": "not_found", "field": null}

Validation answers add `errors: [{field, in, message, type}]`; a body that is not declared as
JSON is a 415, and a 405 names in `Allow` every method of the path. Input problems are always
4xx; overload and storage failures are 503 with `Retry-After`. A 500 only ever means a bug in
this server, never something the client sent. `ErrorBody` is the shape, for the OpenAPI
(`api/openapi.py` publishes it in place of FastAPI's own).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from evolution_store.errors import (
    Conflict,
    EvolutionStoreError,
    InvalidInput,
    NotFound,
    Overloaded,
    StorageError,
)

logger = logging.getLogger("evolution_store.api")

#: store error class -> (status code, `type` in the body). Most specific class first.
STATUS_BY_ERROR: tuple[tuple[type[EvolutionStoreError], int, str], ...] = (
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (InvalidInput, 422, "invalid_input"),
    (Overloaded, 503, "overloaded"),
    (StorageError, 503, "storage_unavailable"),
    (EvolutionStoreError, 400, "bad_request"),
)

_TYPE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    503: "unavailable",
}


class BodyTooLarge(Exception):
    """The request body passed `Settings.max_body_bytes` (raised while it is being read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


class ErrorItem(BaseModel):
    """One invalid input of a 422: where it was (`in`: body, query, path or header) and why."""

    model_config = ConfigDict(populate_by_name=True)

    field: str | None = Field(description="Dotted path of the input, e.g. `spans.1.trace_id`")
    in_: str = Field(alias="in", description="`body`, `query`, `path` or `header`")
    message: str
    type: str = Field(description="pydantic's error type, e.g. `missing`, `string_too_long`")


class ErrorBody(BaseModel):
    """Every error answer of the REST API (OTLP's `/v1/traces` answers `google.rpc.Status`)."""

    detail: str = Field(description="What went wrong, for a person")
    type: str = Field(description="Stable kind, e.g. `not_found`, `invalid_input`, `overloaded`")
    field: str | None = Field(default=None, description="The input at fault, when there is one")
    errors: list[ErrorItem] | None = Field(
        default=None, description="422 only: every invalid input, the first one first"
    )


def error_body(detail: str, kind: str, *, field: str | None = None, **extra: Any) -> dict:
    return {"detail": detail, "type": kind, "field": field, **extra}


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


async def _store_error(_request: Request, exc: Exception) -> JSONResponse:
    status, kind = next((code, name) for cls, code, name in STATUS_BY_ERROR if isinstance(exc, cls))
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded | StorageError):
        headers["Retry-After"] = _retry_after(exc.retry_after)
    if isinstance(exc, StorageError):
        # The message may carry driver detail; log it whole, answer briefly.
        logger.warning("storage error: %s", exc, exc_info=exc.__cause__ is not None)
    field = getattr(exc, "field", None)
    return JSONResponse(
        error_body(str(exc) or kind, kind, field=field), status_code=status, headers=headers
    )


def _field_of(loc: tuple | list) -> tuple[str, str | None]:
    """Split a pydantic `loc` into (where, dotted field): ("body", "spans.0.trace_id")."""
    parts = [str(part) for part in loc]
    where = parts[0] if parts and parts[0] in ("body", "query", "path", "header") else "body"
    if parts and parts[0] == where:
        parts = parts[1:]
    return where, ".".join(parts) or None


def _summarise(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        where, field = _field_of(err.get("loc", ()))
        out.append(
            {
                "field": field,
                "in": where,
                # pydantic prefixes our validators' own sentences with "Value error, ".
                "message": str(err.get("msg", "invalid value")).removeprefix("Value error, "),
                "type": str(err.get("type", "value_error")),
            }
        )
    return out


def _validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    if any(err.get("type") == "json_invalid" for err in errors):
        return JSONResponse(error_body("request body is not valid JSON", "bad_request"), 400)
    summary = _summarise(errors)
    first = summary[0] if summary else {"field": None, "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    return JSONResponse(
        error_body(detail, "invalid_input", field=first["field"], errors=summary),
        status_code=422,
    )


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    if isinstance(exc.body, bytes | bytearray) and exc.body:
        # FastAPI decodes a body as JSON only when it is declared as JSON, and otherwise hands
        # the model the raw bytes: the fault is the content type, not a field.
        media = request.headers.get("content-type", "").split(";")[0].strip()
        detail = (
            f"send the body as application/json, not {media}"
            if media
            else "send the body with Content-Type: application/json"
        )
        return JSONResponse(error_body(detail, "unsupported_media_type"), status_code=415)
    return _validation_response(list(exc.errors()))


async def _pydantic_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return _validation_response(list(exc.errors(include_url=False, include_input=False)))


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path takes. Starlette's 405 names only the methods of
    the first route whose path matched, and a path such as `/api/v1/tasks` has one route per
    method. Each method is asked of the routes themselves, so routers nested by
    `include_router` answer too."""
    routes = request.app.router.routes
    return ", ".join(
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _TYPE_BY_STATUS.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else kind
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and (allowed := _allowed_methods(request)):
        headers["Allow"] = allowed
    return JSONResponse(error_body(detail, kind), status_code=exc.status_code, headers=headers)


async def _body_too_large(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(error_body(str(exc), "payload_too_large"), status_code=413)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Reaching this is a server bug: input problems are all mapped above.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal server error", "internal_error"), status_code=500)


#: The one handler table `create_app` installs.
HANDLERS: dict[type[Exception], Any] = {
    EvolutionStoreError: _store_error,
    RequestValidationError: _request_validation_error,
    ValidationError: _pydantic_validation_error,
    StarletteHTTPException: _http_error,
    BodyTooLarge: _body_too_large,
    Exception: _unexpected,
}


def install_error_handlers(app: FastAPI) -> None:
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)
