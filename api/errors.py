"""Every error the HTTP API answers with, mapped in one table.

The store raises `evolution_store.errors` classes; FastAPI raises validation and HTTP errors;
the body-size guard raises `BodyTooLarge`. Each becomes one JSON shape:

    {"detail": "task 'x' not found", "type": "not_found", "field": null}

Validation answers add `errors: [{field, in, message, type}]`. Input problems are always 4xx;
overload and storage failures are 503 with `Retry-After`. A 500 only ever means a bug in this
server, never something the client sent.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

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

#: seconds a client should wait after a StorageError (the database may be restarting).
STORAGE_RETRY_AFTER = 5


class BodyTooLarge(Exception):
    """The request body passed `Settings.max_body_bytes` (raised while it is being read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes")
        self.limit = limit


def error_body(detail: str, kind: str, *, field: str | None = None, **extra: Any) -> dict:
    return {"detail": detail, "type": kind, "field": field, **extra}


def _retry_after(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))


async def _store_error(_request: Request, exc: Exception) -> JSONResponse:
    status, kind = next((code, name) for cls, code, name in STATUS_BY_ERROR if isinstance(exc, cls))
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = _retry_after(exc.retry_after)
    elif isinstance(exc, StorageError):
        headers["Retry-After"] = str(STORAGE_RETRY_AFTER)
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
                "message": str(err.get("msg", "invalid value")),
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


async def _request_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _validation_response(list(exc.errors()))


async def _pydantic_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return _validation_response(list(exc.errors(include_url=False, include_input=False)))


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    kind = _TYPE_BY_STATUS.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else kind
    return JSONResponse(error_body(detail, kind), status_code=exc.status_code, headers=exc.headers)


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
