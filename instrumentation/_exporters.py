"""OTLP exporters for remote mode, picked by protocol: the SDK's http/protobuf (default) and
gRPC exporters, and a small OTLP/JSON one (the SDK ships none) built on the SDK's encoder.

The OTLP/JSON traps (OTLP_NOTES): ids must be hex strings, not the base64 `MessageToDict`
produces for bytes, and enums must be integers.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._client_base import RETRY_STATUSES, retry_after_seconds
from ._serialize import dumps
from ._state import logger

PROTOCOLS = ("http/protobuf", "http/json", "grpc")


def parse_headers(text: str | None) -> dict[str, str]:
    """`OTEL_EXPORTER_OTLP_HEADERS` syntax: `k1=v1,k2=v2`, values URL-encoded; bad pairs skipped."""
    headers: dict[str, str] = {}
    for pair in (text or "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip())] = unquote(value.strip())
        elif pair.strip():
            logger.warning("ignoring malformed OTLP header %r", pair.strip())
    return headers


def _hex_ids(obj: Any) -> None:
    """Rewrite base64 id fields (as MessageToDict renders bytes) to hex, in place."""
    if isinstance(obj, dict):
        for key in ("traceId", "spanId", "parentSpanId"):
            value = obj.get(key)
            if isinstance(value, str):
                obj[key] = base64.b64decode(value).hex()
        for value in obj.values():
            if isinstance(value, list | dict):
                _hex_ids(value)
    elif isinstance(obj, list):
        for item in obj:
            _hex_ids(item)


class OTLPJsonSpanExporter(SpanExporter):
    """OTLP/HTTP with JSON bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`).

    Retries 429/502/503/504 and connection errors with backoff (honouring `Retry-After`) until
    the timeout, like the SDK's protobuf exporter.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._timeout = timeout
        self._client = httpx.Client(
            headers={"Content-Type": "application/json", **dict(headers or {})},
            timeout=timeout,
            transport=transport,
        )
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        # Imported here so only http/json users load the protobuf encoder.
        from google.protobuf.json_format import MessageToDict
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        try:
            body = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
            _hex_ids(body)
            content = dumps(body).encode()
        except Exception as exc:
            logger.error("cannot encode %d spans as OTLP/JSON: %s", len(spans), exc)
            return SpanExportResult.FAILURE
        deadline = time.monotonic() + self._timeout
        delay = 0.5
        while True:
            try:
                response = self._client.post(self._endpoint, content=content)
            except httpx.HTTPError as exc:
                status, retry_after, reason = None, None, str(exc)
            else:
                if response.is_success:
                    return SpanExportResult.SUCCESS
                status, reason = response.status_code, response.text[:200]
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                if status not in RETRY_STATUSES:
                    logger.error("OTLP/JSON export refused (%s): %s", status, reason)
                    return SpanExportResult.FAILURE
            pause = retry_after if retry_after is not None else delay
            if self._shutdown or time.monotonic() + pause > deadline:
                logger.error("OTLP/JSON export failed (%s): %s", status, reason)
                return SpanExportResult.FAILURE
            time.sleep(pause)
            delay *= 2

    def shutdown(self) -> None:
        if not self._shutdown:
            self._shutdown = True
            self._client.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def build_otlp_exporter(
    protocol: str,
    endpoint: str,
    headers: Mapping[str, str],
    *,
    timeout: float | None = None,
) -> SpanExporter:
    """The OTLP exporter for `protocol`, sending to `endpoint` (used as given) with `headers`."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        # gRPC metadata keys must be lowercase.
        metadata = {key.lower(): value for key, value in headers.items()}
        return GrpcExporter(
            endpoint=endpoint,
            insecure=endpoint.startswith("http://") or None,
            headers=metadata,
            timeout=timeout,
        )
    if protocol == "http/json":
        return OTLPJsonSpanExporter(endpoint, headers=headers, timeout=timeout or 10.0)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, headers=dict(headers), timeout=timeout)
