"""Garbage-collector settings for long-running processes that ingest spans (the server and
its OTLP decode workers)."""

from __future__ import annotations

import gc

#: youngest-generation threshold while ingesting (CPython's default is 700)
YOUNG_THRESHOLD = 50_000


def settle_heap() -> None:
    """Freeze what start-up allocated (modules, app, store) out of the cyclic collector's
    sight, and let its youngest generation grow: a span batch allocates tens of thousands of
    containers that reference counting frees anyway, and default thresholds would run the
    collector many times per batch for nothing (bench/README.md, "Garbage collector")."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)
