"""OTLP/gRPC trace receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

It shares the decoder and the writer with `POST /v1/traces`, and answers the way OTel exporters
expect (OTLP_NOTES "Transport"):

    OK                 committed; `partial_success` names rejected spans (or carries warnings)
    INVALID_ARGUMENT   undecodable request (not retried by clients)
    UNAVAILABLE        write queue full or database unavailable, with RetryInfo (retried)
    RESOURCE_EXHAUSTED message over `max_receive_message_length` (grpc itself, after gzip)

Usage::

    server = await start_grpc_server(store, host="127.0.0.1", port=4317)
    ...
    await server.stop(grace=30)
"""

from __future__ import annotations

import logging
import math

import grpc
from google.protobuf.duration_pb2 import Duration
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from evolution_store import EvolutionStore
from evolution_store.errors import EvolutionStoreError, InvalidInput, Overloaded, StorageError
from evolution_store.otlp import DecodedRequest
from evolution_store.otlp_decoder import OtlpDecoder, PreparedRequest

logger = logging.getLogger("evolution_store.api.grpc")

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: seconds a client should wait after a StorageError (the database may be restarting)
STORAGE_RETRY_AFTER = 5

_Abort = tuple[grpc.StatusCode, str, float | None]


async def start_grpc_server(
    store: EvolutionStore,
    *,
    host: str,
    port: int,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    decoder: OtlpDecoder | None = None,
) -> grpc.aio.Server:
    """Start the TraceService on `host:port` and return the running server; the caller stops it
    with `await server.stop(grace)`. With `port=0` the OS picks one: read `server.bound_port`.

    Raises `OSError` when the address cannot be bound, so `serve` can report it in one line.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    service = _TraceService(store, decoder or OtlpDecoder(store))
    # Raw bytes in (no request_deserializer): an undecodable body then becomes our
    # INVALID_ARGUMENT, not grpc's generic "Exception deserializing request".
    handler = grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                service.export,
                request_deserializer=None,
                response_serializer=ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    bind_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    address = f"{bind_host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen for OTLP gRPC on {address}: {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen for OTLP gRPC on {address}")
    server.bound_port = bound  # type: ignore[attr-defined]
    await server.start()
    logger.info("OTLP gRPC receiver listening on %s:%s", host, bound)
    return server


class _TraceService:
    """One method, `Export`: decode, hand to the writer, answer after COMMIT."""

    def __init__(self, store: EvolutionStore, decoder: OtlpDecoder) -> None:
        self.store = store
        self.decoder = decoder

    async def export(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        # grpc has read the whole message by now: held in the intake budget until answered.
        with self.decoder.intake.hold() as hold:
            try:
                hold.add(len(request))
            except Overloaded as exc:
                await _abort(context, (grpc.StatusCode.UNAVAILABLE, str(exc), exc.retry_after))
            return await self._export(request, context)

    async def _export(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        prepared = await self._decode(request)
        if not isinstance(prepared, PreparedRequest):
            await _abort(context, prepared)
            return ExportTraceServiceResponse()  # not reached: abort raises
        if prepared.spans or prepared.decoded.rewards:
            failure = await self._ingest(prepared, len(request))
            if failure is not None:
                await _abort(context, failure)
        return _response(prepared.decoded)

    async def _decode(self, request: bytes) -> PreparedRequest | _Abort:
        try:
            return await self.decoder.decode(request, json=False)
        except InvalidInput as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
        except Exception:
            # A decoder bug must not turn into UNKNOWN (or retries): the request is what failed.
            logger.exception("OTLP gRPC decode failed unexpectedly")
            return grpc.StatusCode.INVALID_ARGUMENT, "request could not be decoded", None

    async def _ingest(self, prepared: PreparedRequest, size: int) -> _Abort | None:
        # Returns the failure instead of aborting here: `context.abort` raises, and that
        # exception must not pass through the `except Exception` below.
        try:
            await self.store.ingest_prepared(
                prepared.spans, prepared.decoded.rewards, size_bytes=size
            )
        except Overloaded as exc:
            return grpc.StatusCode.UNAVAILABLE, str(exc) or "overloaded", exc.retry_after
        except StorageError as exc:
            logger.warning("OTLP gRPC ingest: storage error: %s", exc)
            return grpc.StatusCode.UNAVAILABLE, "storage unavailable", STORAGE_RETRY_AFTER
        except EvolutionStoreError as exc:
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
        except Exception:
            logger.exception("OTLP gRPC ingest failed unexpectedly")
            return grpc.StatusCode.UNAVAILABLE, "ingest failed; retry later", None
        return None


def _response(decoded: DecodedRequest) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    if decoded.rejected or decoded.errors:
        response.partial_success.rejected_spans = decoded.rejected
        response.partial_success.error_message = decoded.error_message
    return response


async def _abort(context: grpc.aio.ServicerContext, failure: _Abort) -> None:
    code, message, retry_after = failure
    metadata: tuple[tuple[str, bytes], ...] = ()
    if retry_after is not None:
        retry = error_details_pb2.RetryInfo(
            retry_delay=Duration(seconds=max(1, math.ceil(retry_after)))
        )
        status = status_pb2.Status(code=_RPC_CODES[code], message=message)
        status.details.add().Pack(retry)
        metadata = (
            # The standard rich-status trailer (grpc-status / Go / Java exporters) ...
            ("grpc-status-details-bin", status.SerializeToString()),
            # ... and the bare RetryInfo the Python OTLP exporter reads.
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
        )
    await context.abort(code, message, trailing_metadata=metadata)


_RPC_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
}
