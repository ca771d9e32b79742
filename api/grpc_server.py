"""OTLP/gRPC trace receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

It hands each request to the same `OtlpReceiver` as `POST /v1/traces` (`api/otlp_receiver.py`)
and maps the outcome the way OTel exporters expect (OTLP_NOTES "Transport"):

    OK                 committed; `partial_success` names rejected spans (or carries warnings)
    INVALID_ARGUMENT   undecodable request (not retried by clients)
    UNAVAILABLE        intake budget or write queue full, or database unavailable, with
                       RetryInfo (retried)
    RESOURCE_EXHAUSTED message over the receiver's `max_body_bytes` (`EVOLUTION_MAX_BODY_BYTES`;
                       grpc itself refuses it, after decompression)

The app's lifespan starts and stops it (`create_app(..., standalone=True)`). Usage::

    server = await start_grpc_server(receiver, host="127.0.0.1", port=4317)
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

from .otlp_receiver import OtlpReceiver, Refused

logger = logging.getLogger("evolution_store.api.grpc")

SERVICE_NAME = "opentelemetry.proto.collector.trace.v1.TraceService"

#: a refusal's kind → the gRPC status code (and its google.rpc twin, for the rich status)
_REFUSALS = {
    "invalid": (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    "unavailable": (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
}


async def start_grpc_server(receiver: OtlpReceiver, *, host: str, port: int) -> grpc.aio.Server:
    """Start the TraceService on `host:port` and return the running server; the caller stops it
    with `await server.stop(grace)`. With `port=0` the OS picks one: read `server.bound_port`.
    Messages over `receiver.max_body_bytes` (after decompression) are refused by grpc itself.

    Raises `OSError` naming the address when it cannot be bound, so `serve` can report it in
    one line.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", receiver.max_body_bytes),
            ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ]
    )
    service = _TraceService(receiver)
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
        raise OSError(f"cannot listen for OTLP/gRPC on {address}: {exc}") from exc
    if not bound:
        raise OSError(f"cannot listen for OTLP/gRPC on {address}")
    server.bound_port = bound  # type: ignore[attr-defined]
    await server.start()
    logger.info("OTLP gRPC receiver listening on %s:%s", host, bound)
    return server


class _TraceService:
    """One method, `Export`: the receiver decodes and stores, this answers."""

    def __init__(self, receiver: OtlpReceiver) -> None:
        self.receiver = receiver

    async def export(
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> ExportTraceServiceResponse:
        # grpc has read the whole message by now: it is held in the intake budget until answered.
        with self.receiver.intake.hold() as hold:
            outcome = await self.receiver.receive(request, json=False, hold=hold)
        if isinstance(outcome, Refused):
            await _abort(context, outcome)  # raises
        return outcome.response


async def _abort(context: grpc.aio.ServicerContext, refused: Refused) -> None:
    code, rpc_code = _REFUSALS[refused.kind]
    metadata: tuple[tuple[str, bytes], ...] = ()
    if refused.retry_after is not None:
        retry = error_details_pb2.RetryInfo(
            retry_delay=Duration(seconds=max(1, math.ceil(refused.retry_after)))
        )
        status = status_pb2.Status(code=rpc_code, message=refused.message)
        status.details.add().Pack(retry)
        metadata = (
            # The standard rich-status trailer (grpc-status / Go / Java exporters) ...
            ("grpc-status-details-bin", status.SerializeToString()),
            # ... and the bare RetryInfo the Python OTLP exporter reads.
            ("google.rpc.retryinfo-bin", retry.SerializeToString()),
        )
    await context.abort(code, refused.message, trailing_metadata=metadata)
