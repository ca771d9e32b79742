"""A bound on the bytes of OTLP requests the server holds at once.

A request holds its share from the first byte read until it is answered: its body while it is
read and decoded, then its prepared rows (larger than the body) while they wait for the writer.
The writer's queue bounds only the second half, and loosely (its byte count is the bodies'
size), so without this the server's memory would grow with the number of clients sending at
once (bench/README.md has the measurements).

The OTLP receiver (`api/otlp_receiver.py`) admits requests, so it owns the budget, shared by
OTLP/HTTP and gRPC. A request that would pass it is refused with `Overloaded` (OTLP/HTTP 503 +
Retry-After, gRPC UNAVAILABLE + RetryInfo) before more of its body is read. As with the
writer's queue, one request larger than the whole budget still goes in while nothing else is
held, or it could never be stored.

Usage::

    budget = IntakeBudget(32 * 1024 * 1024)
    with budget.hold() as hold:
        hold.add(len(chunk))        # for each chunk read; raises Overloaded
        ...                         # decode, ingest, answer
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .errors import Overloaded

#: default budget: room for a few dozen exports of a typical SDK batch (512 spans) in flight
DEFAULT_INTAKE_MAX_BYTES = 32 * 1024 * 1024

#: seconds a refused client should wait: about the time the server takes to answer a budget's
#: worth of requests
RETRY_AFTER_SECONDS = 1.0


class IntakeBudget:
    """Bytes held by the requests in flight, against `max_bytes`. Event-loop only (no lock)."""

    def __init__(self, max_bytes: int = DEFAULT_INTAKE_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.held = 0
        #: requests in flight (inside `hold`), whatever they hold yet
        self.requests = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[Hold]:
        """One request's share, given back when the block ends, however it ends."""
        hold = Hold(self)
        self.requests += 1
        try:
            yield hold
        finally:
            self.requests -= 1
            self.held -= hold.size
            hold.size = 0


class Hold:
    """The bytes one request holds (`IntakeBudget.hold`)."""

    def __init__(self, budget: IntakeBudget) -> None:
        self._budget = budget
        self.size = 0

    def add(self, size: int) -> None:
        """Hold `size` more bytes, or raise `Overloaded` if that passes the budget while other
        requests hold some of it."""
        budget = self._budget
        others = budget.held - self.size
        if others and budget.held + size > budget.max_bytes:
            raise Overloaded(
                f"too much OTLP data in flight ({budget.held} of {budget.max_bytes} bytes)",
                retry_after=RETRY_AFTER_SECONDS,
            )
        budget.held += size
        self.size += size

    def grow_to(self, total: int) -> None:
        """Hold `total` bytes in all (`add` the difference; never less than held already)."""
        if total > self.size:
            self.add(total - self.size)
