"""Receiving one OTLP trace export, for both transports: decode, store, answer.

OTLP/HTTP (`api/routers/otlp.py`) and OTLP/gRPC (`api/grpc_server.py`) read a body their own
way, then hand it to `OtlpReceiver.receive`, which returns an `ExportOutcome`:

    Stored(response)                        committed; `partial_success` names what was not
    Refused("invalid", message)             the data is at fault: HTTP 400, INVALID_ARGUMENT
    Refused("unavailable", message, after)  overload or database trouble, retry (after
                                            `retry_after` seconds when given): HTTP 503,
                                            UNAVAILABLE

Each transport only maps the outcome to its own status codes (OTLP_NOTES "Transport"), so the
two cannot drift apart. Nothing a client sends makes `receive` raise.

The receiver admits requests, so it owns the intake budget (`evolution_store.intake`): a
request holds its bytes from the first one read until it is answered. It also decides where a
body is decoded: on the event loop when it comes alone, else in the decode pool's workers.

Usage::

    receiver = OtlpReceiver(store, pool=pool, max_body_bytes=settings.max_body_bytes)
    with receiver.intake.hold() as hold:
        outcome = await receiver.receive(body, json=False, hold=hold)
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from evolution_store.errors import EvolutionStoreError, InvalidInput, Overloaded, StorageError
from evolution_store.intake import DEFAULT_INTAKE_MAX_BYTES, Hold, IntakeBudget
from evolution_store.otlp_decode_pool import ALONE_MAX_BYTES, OtlpDecodePool, PreparedExport

if TYPE_CHECKING:
    from evolution_store import EvolutionStore

logger = logging.getLogger("evolution_store.api.otlp")

#: the cap on a body after decompression when none is configured (DESIGN §5)
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Stored:
    """The export's spans are committed; answer with `response`."""

    response: ExportTraceServiceResponse


@dataclass(frozen=True, slots=True)
class Refused:
    """Nothing of the export was stored. `kind` "invalid": the data is at fault and a client
    must not send it again; "unavailable": a retry may succeed, after `retry_after` seconds
    when that is known."""

    kind: Literal["invalid", "unavailable"]
    message: str
    retry_after: float | None = None

    @classmethod
    def overloaded(cls, exc: Overloaded) -> Refused:
        return cls("unavailable", str(exc) or "overloaded", exc.retry_after)


ExportOutcome = Stored | Refused


class OtlpReceiver:
    """Decodes and stores OTLP exports for one store, whichever transport they came by.

    `pool` decodes the bodies (the caller starts and closes it); without one, bodies are
    decoded on the event loop. `max_body_bytes` caps a body after decompression, on both
    transports.
    """

    def __init__(
        self,
        store: EvolutionStore,
        *,
        pool: OtlpDecodePool | None = None,
        intake_max_bytes: int = DEFAULT_INTAKE_MAX_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.store = store
        self.pool = pool if pool is not None else OtlpDecodePool(workers=0, prices=store.prices)
        #: bytes of the OTLP requests in flight, over both transports
        self.intake = IntakeBudget(intake_max_bytes)
        self.max_body_bytes = max_body_bytes

    async def receive(self, body: bytes, *, json: bool, hold: Hold) -> ExportOutcome:
        """Decode `body` (OTLP/JSON when `json`, else protobuf), store its spans and rewards,
        and say how to answer. Call it inside `self.intake.hold()`, passing that `hold`: the
        body's bytes are held there (if they are not yet) until the caller answers.

        The outcome is `Stored` only once the transaction holding the spans has committed.
        """
        size = len(body)
        try:
            hold.grow_to(size)
        except Overloaded as exc:
            return Refused.overloaded(exc)
        in_worker = self._decode_in_worker(size)
        # A body on its way from a worker is announced to the writer, which may then hold a
        # small group back for it; it is submitted right after the block, with no await
        # between, so the writer never sees it neither announced nor queued.
        announce = self.store.writer.expect() if in_worker else contextlib.nullcontext()
        try:
            with announce:
                export = await self.pool.decode(
                    body, json=json, indexed_keys=self.store.indexed_keys, in_worker=in_worker
                )
        except InvalidInput as exc:
            return Refused("invalid", str(exc))
        except Exception:
            # A decoder bug must not become a 500 or a retry loop: the body is what failed.
            logger.exception("OTLP decode failed unexpectedly")
            return Refused("invalid", "body could not be decoded")
        # Not needed past decoding: let it go before waiting for the commit, or every request
        # queued for the writer would hold its body beside its prepared rows.
        del body
        try:
            await self.store.ingest_prepared(export.batch, size_bytes=size)
        except Overloaded as exc:
            return Refused.overloaded(exc)
        except StorageError as exc:
            logger.warning("OTLP ingest: storage error: %s", exc)
            return Refused("unavailable", "storage unavailable", exc.retry_after)
        except EvolutionStoreError as exc:
            return Refused("invalid", str(exc))
        except Exception:
            logger.exception("OTLP ingest failed unexpectedly")
            return Refused("unavailable", "ingest failed; retry later")
        return Stored(_response(export))

    def _decode_in_worker(self, size: int) -> bool:
        """Whether to decode in a worker rather than on the loop. A body that comes alone (at
        most `ALONE_MAX_BYTES`, no other OTLP request in flight, the writer idle) is decoded on
        the loop: the loop has nothing else to do, and the round trip to a worker would only
        lengthen the request, as it would for every request of a client that sends one at a
        time (an SDK's batch exporter). With other work in flight, a worker overlaps with it.
        See bench/README.md for the measurements."""
        if not self.pool.workers:
            return False
        alone = size <= ALONE_MAX_BYTES and self.intake.requests <= 1 and self.store.writer.idle
        return not alone


def _response(export: PreparedExport) -> ExportTraceServiceResponse:
    response = ExportTraceServiceResponse()
    # Rejected spans, or warnings (e.g. a reward carrier that could not be read): the spec
    # allows `rejected_spans = 0` with a message for warnings.
    if export.rejected or export.error_message:
        response.partial_success.rejected_spans = export.rejected
        response.partial_success.error_message = export.error_message
    return response
