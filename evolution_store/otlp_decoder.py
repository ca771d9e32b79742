"""Turning OTLP export bodies into prepared spans, in worker processes when there are any.

Decoding a protobuf export and preparing its rows (`span_rows`) is pure Python: ~17 µs a span,
more than the writer spends storing it. On the event loop it takes turns with everything else
the server does; in a worker process it runs beside the loop and the writer, on another core.
What comes back is only what the writer needs, as plain tuples (`PreparedSpan.state`): each
span's prepared column values (its attributes already JSON), tags, owner ids and index entries.
The server unpickles and rebuilds them in ~2.6 µs a span.

Usage::

    decoder = OtlpDecoder(store, workers=1)    # workers=0: decode on the event loop
    prepared = await decoder.decode(body, json=False)   # raises InvalidInput
    await store.ingest_prepared(prepared.spans, prepared.decoded.rewards, size_bytes=len(body))
    await decoder.close()

A body that comes alone (no other request in flight, the writer idle) is decoded on the event
loop (`_alone`): with nothing to overlap, the round trip to a worker would only add latency.

A worker that dies (killed, out of memory) costs nothing but time: the request it was decoding
is decoded again on the event loop, and the next request starts a fresh pool.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .heap import settle_heap
from .intake import DEFAULT_INTAKE_MAX_BYTES, IntakeBudget
from .otlp import DecodedRequest, decode_json, decode_protobuf
from .promote import PriceTable
from .span_rows import PreparedSpan, prepare_spans

if TYPE_CHECKING:
    from .store import EvolutionStore

logger = logging.getLogger("evolution_store.otlp")

#: requests handed to the pool at once, per worker; more wait (bodies already read) so the
#: pool's own queue stays short and a worker's death fails few requests over to the loop
IN_FLIGHT_PER_WORKER = 2

#: how often a worker checks that the server that started it is still alive
PARENT_CHECK_SECONDS = 1.0

#: the largest body decoded on the loop when it comes alone (`OtlpDecoder._alone`): ~40 ms of
#: decoding, so a request of many thousand spans cannot stall the loop (health checks, reads)
ALONE_MAX_BYTES = 2 * 1024 * 1024


@dataclass
class PreparedRequest:
    """A decoded export: its spans ready for the writer, and the rest of what was decoded
    (`decoded.rewards`, `decoded.rejected`, `decoded.error_message`; `decoded.spans` is empty)."""

    decoded: DecodedRequest
    spans: list[PreparedSpan]

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled as plain tuples (`PreparedSpan.state`): ~2 µs a span less to pickle in the
        # worker and ~2 µs less to unpickle in the server than the dataclass objects, and
        # without the records' attribute dicts, which the prepared values hold as JSON.
        return _restore, (self.decoded, [span.state() for span in self.spans])


def _restore(decoded: DecodedRequest, states: list[tuple[Any, ...]]) -> PreparedRequest:
    return PreparedRequest(decoded, [PreparedSpan.from_state(state) for state in states])


def default_workers() -> int:
    """One worker on a machine with two or more CPUs (the loop and the writer keep the rest
    busy), none on one CPU, where a second process would only take turns with the first."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


class OtlpDecoder:
    """Decodes OTLP/HTTP and OTLP/gRPC bodies for one store."""

    def __init__(
        self,
        store: EvolutionStore,
        *,
        workers: int = 0,
        intake_max_bytes: int = DEFAULT_INTAKE_MAX_BYTES,
    ) -> None:
        self._store = store
        #: bytes of OTLP requests in flight, shared by every receiver using this decoder
        self.intake = IntakeBudget(intake_max_bytes)
        self._workers = max(0, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._slots = asyncio.Semaphore(max(1, self._workers) * IN_FLIGHT_PER_WORKER)

    @property
    def workers(self) -> int:
        return self._workers

    def start(self) -> None:
        """Start the worker processes in the background: a spawned worker takes ~1 s to import
        the decoder, which the server's start need not wait for. Requests that come sooner
        wait in the pool's queue."""
        if self._workers:
            pool = self._ensure_pool()
            for _ in range(self._workers):
                pool.submit(os.getpid)

    async def decode(self, body: bytes, *, json: bool) -> PreparedRequest:
        """Decode and prepare one export body. Raises `InvalidInput` for an undecodable body.

        A body that comes alone is decoded right here (`_alone`); the others in a worker."""
        if not self._workers or self._closed or self._alone(len(body)):
            return self._decode_here(body, json)
        # The writer may hold a small group back for this request (`Writer.expect`); the caller
        # submits what this returns without awaiting anything else first.
        with self._store.writer.expect():
            return await self._decode_in_worker(body, json)

    def _alone(self, size: int) -> bool:
        """A body of at most `ALONE_MAX_BYTES`, no other OTLP request in flight and the writer
        idle (nothing being decoded, queued or committed). Then the loop has nothing else to
        do, and the round trip to a worker (the body there, the rows back: ~6 ms for 512 spans)
        would only lengthen the request: so it is for every request of a client that sends one
        at a time, like an SDK's batch exporter (+10% spans/s with one connection). With
        another request in flight, decoding in a worker overlaps with it."""
        return size <= ALONE_MAX_BYTES and self.intake.requests <= 1 and self._store.writer.idle

    async def _decode_in_worker(self, body: bytes, json: bool) -> PreparedRequest:
        async with self._slots:
            pool = self._ensure_pool()
            try:
                future = pool.submit(_decode_in_worker, body, json, self._store.indexed_keys)
            except RuntimeError:  # broken, or shut down by a request that found it broken
                self._discard_broken_pool(pool)
                return self._decode_here(body, json)
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                self._discard_broken_pool(pool)
                return self._decode_here(body, json)

    async def close(self) -> None:
        """Stop the workers (blocking work, done off the loop); later requests are decoded
        in-process. Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _decode_here(self, body: bytes, json: bool) -> PreparedRequest:
        return _decode_and_prepare(body, json, self._store.prices, self._store.indexed_keys)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server has threads (SQLite's, gRPC's) a fork would copy
            # mid-flight. The workers know the store's price table from the start.
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(dict(self._store.prices.prices), os.getpid()),
            )
        return self._pool

    def _discard_broken_pool(self, pool: ProcessPoolExecutor) -> None:
        # A dead worker shows either at submit (the pool already knows) or in a pending future;
        # whichever request finds it first reports it, once per pool.
        if self._pool is pool:
            logger.warning("OTLP decode worker died; decoding in-process until a new one starts")
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


# -- in the worker process --------------------------------------------------------------------

_prices = PriceTable()


def _start_worker(prices: Mapping[str, tuple[float, float]], server: int) -> None:
    global _prices
    _prices = PriceTable(prices)
    # Ctrl-C reaches the whole process group: the server decides when its workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A server killed with SIGKILL cannot stop its workers, and a worker waiting for work
    # never notices (it holds both ends of its own queue): it watches for that itself. The
    # server's pid comes from the server: it may have died while this worker was starting.
    threading.Thread(
        target=_exit_with_parent, args=(server,), name="parent-watch", daemon=True
    ).start()
    # What the worker allocates per request forms no cycles; what it imported never dies.
    settle_heap()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _decode_in_worker(body: bytes, json: bool, indexed_keys: frozenset[str]) -> PreparedRequest:
    return _decode_and_prepare(body, json, _prices, indexed_keys)


def _decode_and_prepare(
    body: bytes, json: bool, prices: PriceTable, indexed_keys: frozenset[str]
) -> PreparedRequest:
    decoded = decode_json(body) if json else decode_protobuf(body)
    spans = prepare_spans(decoded.spans, prices, indexed_keys)
    decoded.spans = []  # they travel as prepared spans only
    return PreparedRequest(decoded, spans)
