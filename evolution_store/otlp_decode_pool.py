"""A pool of worker processes that decode OTLP export bodies into prepared spans.

Decoding a protobuf export and preparing its rows (`span_rows`) is pure Python and costs more
per span than the writer spends storing it; in a worker process it runs beside the event loop
and the writer, on another core. What comes back is only what the writer needs, as plain
tuples (`PreparedSpan.state`).

The pool knows nothing of the store: the caller passes the indexed-key set to prepare for and
decides, per body, whether a worker is worth the round trip (`in_worker`; the OTLP receiver
decodes a body that comes alone on the loop).

Usage::

    pool = OtlpDecodePool(workers=1, prices=store.prices)
    pool.start()
    # raises InvalidInput for an undecodable body
    export = await pool.decode(body, json=False, indexed_keys=store.indexed_keys, in_worker=True)
    await store.ingest_prepared(export.batch, size_bytes=len(body))
    await pool.close()

A worker that dies (killed, out of memory) costs nothing but time: the body it was decoding is
decoded again in this process, and the next body starts a fresh pool.
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
from typing import Any

from .heap import settle_heap
from .otlp import decode_json, decode_protobuf
from .partial_success import PartialSuccess
from .promote import PriceTable
from .span_rows import PreparedBatch, PreparedSpan, prepare_spans

logger = logging.getLogger("evolution_store.otlp")

#: bodies handed to the pool at once, per worker; more wait (bodies already read) so the
#: pool's own queue stays short and a worker's death fails few bodies over to this process
IN_FLIGHT_PER_WORKER = 2

#: how often a worker checks that the server that started it is still alive
PARENT_CHECK_SECONDS = 1.0

#: the largest body worth decoding on the event loop when it comes alone: bigger ones would
#: stall the loop (health checks, reads) for too long
ALONE_MAX_BYTES = 2 * 1024 * 1024


@dataclass
class PreparedExport:
    """A decoded export: its spans and carried rewards ready for the writer (`batch`), and
    what was rejected or noted on the way (`batch.report`: OTLP's `partial_success`)."""

    batch: PreparedBatch
    #: set in the process that decoded the body (tests tell a worker's export by it)
    decoded_by: int = 0

    @property
    def rejected(self) -> int:
        return self.batch.report.rejected

    @property
    def error_message(self) -> str:
        return self.batch.report.error_message

    def __reduce__(self) -> tuple[Any, ...]:
        # Plain tuples pickle and unpickle faster than the dataclass objects.
        batch = self.batch
        states = [span.state() for span in batch.spans]
        return _restore, (states, batch.rewards, batch.report, self.decoded_by)


def _restore(
    states: list[tuple[Any, ...]], rewards: list[Any], report: PartialSuccess, decoded_by: int
) -> PreparedExport:
    spans = [PreparedSpan(*state) for state in states]
    return PreparedExport(PreparedBatch(spans, rewards, report), decoded_by)


def default_workers() -> int:
    """One worker on a machine with two or more CPUs (the loop and the writer keep the rest
    busy), none on one CPU, where a second process would only take turns with the first."""
    return 1 if (os.cpu_count() or 1) >= 2 else 0


class OtlpDecodePool:
    """Worker processes decoding OTLP/HTTP and OTLP/gRPC bodies (none: decode in-process)."""

    def __init__(self, *, workers: int = 0, prices: PriceTable | None = None) -> None:
        self._workers = max(0, workers)
        self._prices = prices or PriceTable()
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False
        self._slots = asyncio.Semaphore(max(1, self._workers) * IN_FLIGHT_PER_WORKER)

    @property
    def workers(self) -> int:
        return self._workers

    def start(self) -> None:
        """Start the worker processes in the background: a spawned worker takes about a second
        to import the decoder, which the server's start need not wait for. Bodies that come
        sooner wait in the pool's queue."""
        if self._workers:
            pool = self._ensure_pool()
            for _ in range(self._workers):
                pool.submit(os.getpid)

    async def decode(
        self, body: bytes, *, json: bool, indexed_keys: frozenset[str], in_worker: bool
    ) -> PreparedExport:
        """Decode and prepare one export body, in a worker when `in_worker` and the pool has
        any, else right here. Raises `InvalidInput` for an undecodable body."""
        if not (in_worker and self._workers) or self._closed:
            return decode_export(body, json, self._prices, indexed_keys)
        async with self._slots:
            pool = self._ensure_pool()
            try:
                future = pool.submit(_decode_in_worker, body, json, indexed_keys)
            except RuntimeError:  # broken, or shut down by a request that found it broken
                self._discard_broken_pool(pool)
                return decode_export(body, json, self._prices, indexed_keys)
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool:
                self._discard_broken_pool(pool)
                return decode_export(body, json, self._prices, indexed_keys)

    async def close(self) -> None:
        """Stop the workers (blocking work, done off the loop); later bodies are decoded
        in-process. Idempotent."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the server has threads (SQLite's, gRPC's) a fork would copy
            # mid-flight. The workers know the price table from the start.
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(dict(self._prices.prices), os.getpid()),
            )
        return self._pool

    def _discard_broken_pool(self, pool: ProcessPoolExecutor) -> None:
        # A dead worker shows either at submit (the pool already knows) or in a pending future;
        # whichever body finds it first reports it, once per pool.
        if self._pool is pool:
            logger.warning("OTLP decode worker died; decoding in-process until a new one starts")
            self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)


def decode_export(
    body: bytes, json: bool, prices: PriceTable, indexed_keys: frozenset[str]
) -> PreparedExport:
    """Decode one export body and prepare its spans, in this process."""
    decoded = decode_json(body) if json else decode_protobuf(body)
    batch = prepare_spans(decoded.spans, prices, indexed_keys)
    # Rejections of the decoder first, then the carriers' notes.
    report = PartialSuccess()
    report.absorb(decoded)
    report.absorb(batch.report)
    batch.report = report
    return PreparedExport(batch, os.getpid())


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


def _decode_in_worker(body: bytes, json: bool, indexed_keys: frozenset[str]) -> PreparedExport:
    return decode_export(body, json, _prices, indexed_keys)
