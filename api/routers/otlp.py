"""OTLP/HTTP trace receiver: `POST /v1/traces` (protobuf or JSON; gzip, deflate or neither).

This module reads the body (decompressing it under the cap, each byte held in the intake
budget) and turns the `ExportOutcome` of `OtlpReceiver.receive` (`api/otlp_receiver.py`, shared
with gRPC) into an HTTP answer, as the OTLP spec asks (OTLP_NOTES "Transport") so that every
OTel exporter's retry logic does the right thing:

    200  stored and committed; `partial_success` names rejected spans (or carries warnings)
    400  undecodable body, bad gzip or deflate   (google.rpc.Status; clients do not retry)
    413  body over `max_body_bytes` *after* decompression
    415  unknown Content-Type or Content-Encoding
    503  intake budget or write queue full, or database unavailable (Retry-After; clients retry)

Error bodies are a `google.rpc.Status` in the request's encoding. A 200 is sent only after the
transaction holding the spans committed; no background tasks. Nothing a client sends produces
a 500.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2

from evolution_store.errors import Overloaded
from evolution_store.intake import Hold

from ..otlp_receiver import ExportOutcome, OtlpReceiver, Refused, Stored

router = APIRouter(tags=["otlp"])

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_MEDIA_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
#: Content-Encoding → how the body is decompressed (`_Inflater`); others are answered 415.
_ENCODINGS: dict[str, str | None] = {
    "": None,
    "identity": None,
    "gzip": "gzip",
    "x-gzip": "gzip",
    "deflate": "deflate",
}
#: a refusal's kind → (HTTP status, google.rpc code of the Status body)
_REFUSALS = {
    "invalid": (400, code_pb2.INVALID_ARGUMENT),
    "unavailable": (503, code_pb2.UNAVAILABLE),
}


class _BodyError(Exception):
    """Reading the body failed; carries the HTTP answer."""

    def __init__(self, status_code: int, grpc_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.grpc_code = grpc_code


_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "An OTLP `ExportTraceServiceRequest`, binary protobuf or OTLP/JSON "
        "(hex ids); `Content-Encoding: gzip` or `deflate` accepted.",
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": {"type": "object"}},
        },
    }
}


#: OTLP/JSON shapes of the answers (the protobuf ones are their binary encoding)
_RESPONSE = {
    "title": "ExportTraceServiceResponse",
    "type": "object",
    "properties": {
        "partialSuccess": {
            "type": "object",
            "properties": {
                "rejectedSpans": {"type": ["string", "integer"]},
                "errorMessage": {"type": "string"},
            },
        }
    },
}
_STATUS = {
    "title": "google.rpc.Status",
    "type": "object",
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}},
    },
}


def _otlp_answer(description: str, json_schema: dict[str, Any]) -> dict[str, Any]:
    """An answer in the request's encoding, protobuf or OTLP/JSON."""
    return {
        "description": description,
        "content": {
            PROTOBUF: {"schema": {"type": "string", "format": "binary"}},
            JSON: {"schema": json_schema},
        },
    }


def _error_body(description: str) -> dict[str, Any]:
    """Auth answers come from the API's own dependency, in its error body (`api.errors`)."""
    schema = {"$ref": "#/components/schemas/ErrorBody"}
    return {"description": description, "content": {JSON: {"schema": schema}}}


@router.post(
    "/v1/traces",
    response_class=Response,
    summary="OTLP/HTTP trace export",
    openapi_extra=_OPENAPI_BODY,
    responses={
        200: _otlp_answer("Committed. `partial_success` counts rejected spans.", _RESPONSE),
        400: _otlp_answer("Undecodable body.", _STATUS),
        401: _error_body("No API key, or an unknown one (only when EVOLUTION_API_KEYS is set)."),
        403: _error_body("A read-only API key."),
        413: _otlp_answer("Body larger than the cap after decompression.", _STATUS),
        415: _otlp_answer("Unsupported Content-Type or Content-Encoding.", _STATUS),
        503: _otlp_answer("Overloaded (Retry-After) or database unavailable.", _STATUS),
    },
)
async def export_traces(request: Request) -> Response:
    """Receive an OTLP trace export and answer only after its spans are committed."""
    media = _media_type(request.headers.get("content-type", ""))
    if media is None:
        return _status_response(
            415,
            code_pb2.INVALID_ARGUMENT,
            f"unsupported Content-Type; send {PROTOBUF} or {JSON}",
            JSON,
        )
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in _ENCODINGS:
        return _status_response(
            415,
            code_pb2.INVALID_ARGUMENT,
            "unsupported Content-Encoding; use gzip, deflate or none",
            media,
        )
    receiver: OtlpReceiver = request.app.state.otlp
    # The request's bytes count against the intake budget until it is answered.
    with receiver.intake.hold() as hold:
        try:
            body = await _read_body(
                request, _ENCODINGS[encoding], cap=receiver.max_body_bytes, hold=hold
            )
        except _BodyError as exc:
            return _status_response(exc.status_code, exc.grpc_code, str(exc), media)
        except Overloaded as exc:  # past the intake budget
            return _answer(Refused.overloaded(exc), media)
        # Only the receiver keeps the body from here: it lets it go once decoded, before the
        # wait for the commit.
        receiving = receiver.receive(body, json=media == JSON, hold=hold)
        del body
        return _answer(await receiving, media)


def _media_type(content_type: str) -> str | None:
    return _MEDIA_TYPES.get(content_type.split(";", 1)[0].strip().lower())


def _answer(outcome: ExportOutcome, media: str) -> Response:
    if isinstance(outcome, Stored):
        return _message_response(200, outcome.response, media)
    status_code, grpc_code = _REFUSALS[outcome.kind]
    return _status_response(
        status_code, grpc_code, outcome.message, media, retry_after=outcome.retry_after
    )


async def _read_body(request: Request, compression: str | None, *, cap: int, hold: Hold) -> bytes:
    """The body, decompressed (`compression`: "gzip", "deflate" or None), never larger than
    `cap` bytes in memory, each byte held in the intake budget (`hold`: raises `Overloaded`)
    before it is kept.

    The cap applies after decompression, and decompression is bounded chunk by chunk
    (`max_length`), so a gzip bomb stops at cap + 1 bytes instead of filling memory.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit():
        if int(declared) > cap:
            raise _BodyError(413, code_pb2.RESOURCE_EXHAUSTED, f"body is larger than {cap} bytes")
        if compression is None:  # held whole, up front: refused before a byte is read
            hold.grow_to(int(declared))
    inflater = _Inflater(cap, compression) if compression else None
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        if not chunk:
            continue
        if inflater is not None:
            inflater.feed(chunk)
            hold.grow_to(inflater.size)  # a compressed body holds what it inflates to
            continue
        size += len(chunk)
        if size > cap:
            raise _BodyError(413, code_pb2.RESOURCE_EXHAUSTED, f"body is larger than {cap} bytes")
        hold.grow_to(size)
        parts.append(chunk)
    if inflater is not None:
        return inflater.finish()
    return parts[0] if len(parts) == 1 else b"".join(parts)


class _Inflater:
    """Incremental decompression with a hard cap: gzip (several members, like
    `gzip.decompress`) or deflate. HTTP's "deflate" is the zlib format (RFC 9110), which is
    what the Python SDK's exporter sends (`OTEL_EXPORTER_OTLP_COMPRESSION=deflate`); bare
    deflate data without the zlib header, which some clients send under that name, is read
    too, as browsers and the Collector do."""

    def __init__(self, cap: int, compression: str) -> None:
        self.cap = cap
        self.gzip = compression == "gzip"
        self.parts: list[bytes] = []
        self.size = 0
        self.inflater: Any = None
        self.head = b""  # deflate: the first bytes, until two tell whether a zlib header leads

    def _new(self, head: bytes) -> None:
        if self.gzip:
            wbits = 16 + zlib.MAX_WBITS
        elif _is_zlib_header(head):
            wbits = zlib.MAX_WBITS
        else:
            wbits = -zlib.MAX_WBITS
        self.inflater = zlib.decompressobj(wbits)

    def feed(self, data: bytes) -> None:
        try:
            if self.inflater is None:
                data = self.head + data
                if len(data) < 2:  # a body may arrive a byte at a time
                    self.head = data
                    return
                self._new(data)
            while data:
                # At most cap + 1 bytes more: enough to know the cap was passed.
                out = self.inflater.decompress(data, self.cap - self.size + 1)
                self._add(out)
                if self.inflater.unconsumed_tail:
                    raise self._too_large()  # max_length stopped it, so the cap is passed
                if not self.inflater.eof:
                    return
                data = self.inflater.unused_data
                if data and not self.gzip:
                    raise zlib.error("data after the end of the deflate stream")
                if data:
                    self._new(data)
        except zlib.error as exc:
            raise _BodyError(
                400, code_pb2.INVALID_ARGUMENT, f"invalid {self._name} body: {exc}"
            ) from exc

    def finish(self) -> bytes:
        if self.head and self.inflater is None:
            self._new(self.head)
        if self.inflater is not None and not self.inflater.eof:
            raise _BodyError(400, code_pb2.INVALID_ARGUMENT, f"truncated {self._name} body")
        return b"".join(self.parts)

    @property
    def _name(self) -> str:
        return "gzip" if self.gzip else "deflate"

    def _add(self, out: bytes) -> None:
        if out:
            self.size += len(out)
            if self.size > self.cap:
                raise self._too_large()
            self.parts.append(out)

    def _too_large(self) -> _BodyError:
        return _BodyError(
            413, code_pb2.RESOURCE_EXHAUSTED, f"body is larger than {self.cap} bytes decompressed"
        )


def _is_zlib_header(head: bytes) -> bool:
    # RFC 1950: compression method 8 (deflate) and a header whose two bytes are a multiple of 31
    return len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0


def _status_response(
    status_code: int,
    grpc_code: int,
    message: str,
    media: str,
    *,
    retry_after: float | None = None,
) -> Response:
    status = status_pb2.Status(code=grpc_code, message=message)
    headers: dict[str, str] = {}
    if retry_after is not None:
        seconds = max(1, math.ceil(retry_after))
        headers["Retry-After"] = str(seconds)
        status.details.add().Pack(
            error_details_pb2.RetryInfo(retry_delay=Duration(seconds=seconds))
        )
    return _message_response(status_code, status, media, headers)


def _message_response(
    status_code: int, message: Any, media: str, headers: dict[str, str] | None = None
) -> Response:
    if media == PROTOBUF:
        content = message.SerializeToString()
    else:
        content = json_format.MessageToJson(message, indent=None).encode()
    return Response(content=content, status_code=status_code, media_type=media, headers=headers)
