"""Bounded concurrency and a bounded queue for model work.

Model calls block (onnxruntime, torch), so they run in worker threads, never on the event loop.
Without a bound, a burst of clients would queue unboundedly: each waiting request holds its
upload and decoded image, and memory grows until the process dies. :class:`Admission` admits at
most ``max_concurrency + max_queue`` requests at once (counted from before the body is read) and
answers the rest at once with 503 and a ``Retry-After`` estimated from recent service times.

Bodies are read *before* admission (so a stalled upload never holds a worker or queue place),
which leaves their memory to a second bound: :class:`BodyBudget`, the bytes of request bodies
held at once across all connections.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import anyio.to_thread

from refseg.errors import InputError

T = TypeVar("T")


class Overloaded(Exception):
    """Every running and queued slot is taken: answer 503 with ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: retry in {retry_after} s")
        self.retry_after = retry_after


class BodyBudget:
    """Bytes of request bodies held in memory at once, summed over every connection.

    Bytes are counted as they arrive and given back when their request has been answered, so a
    client that announces a large body but sends little holds little. All counting happens on
    the event loop thread, so it needs no lock.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise InputError("the request body budget must be at least 1 byte")
        self.max_bytes = max_bytes
        self.held = 0
        self.refused = 0

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes would fit now (an early answer for a declared length)."""
        return self.held + size <= self.max_bytes

    def take(self, size: int) -> bool:
        """Count ``size`` received bytes; False (nothing counted) when they would not fit."""
        if not self.fits(size):
            self.refuse()
            return False
        self.held += size
        return True

    def refuse(self) -> None:
        """Count a request turned away for want of room (``/healthz`` reports it)."""
        self.refused += 1

    def give(self, size: int) -> None:
        """Give back ``size`` bytes whose request is done."""
        self.held -= size

    def stats(self) -> dict[str, int]:
        return {"max_bytes": self.max_bytes, "held": self.held, "refused": self.refused}


class Admission:
    """Admit requests into ``max_concurrency`` worker slots plus ``max_queue`` waiting places.

    Use :meth:`slot` around the whole handling of a request (body read included), and
    :meth:`run` for each blocking call inside it. All counters live on the event loop thread,
    so they need no lock.
    """

    def __init__(self, max_concurrency: int = 2, max_queue: int = 16) -> None:
        if max_concurrency < 1:
            raise InputError("--max-concurrency must be at least 1")
        if max_queue < 0:
            raise InputError("--max-queue must be 0 or more")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self.admitted = 0
        self.rejected = 0
        self.completed = 0
        self._service_s = 0.5  # running mean of one request's worker time (seconds)

    @property
    def capacity(self) -> int:
        return self.max_concurrency + self.max_queue

    @property
    def running(self) -> int:
        return int(self._limiter.borrowed_tokens)

    def retry_after(self) -> int:
        """Seconds until a place is likely free: the queue drained at the observed rate."""
        waves = (self.admitted + 1) / self.max_concurrency
        return max(1, min(60, math.ceil(waves * self._service_s)))

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``capacity`` places, or raise :class:`Overloaded` at once."""
        if self.admitted >= self.capacity:
            self.rejected += 1
            raise Overloaded(self.retry_after())
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def run(self, func: Callable[[], T]) -> tuple[T, float]:
        """Run ``func`` in a worker thread once one of the ``max_concurrency`` slots is free.

        Returns its result and the seconds spent waiting for the slot.
        """
        queued = time.perf_counter()
        async with self._limiter:
            waited = time.perf_counter() - queued
            start = time.perf_counter()
            try:
                return await anyio.to_thread.run_sync(func), waited
            finally:
                elapsed = time.perf_counter() - start
                self._service_s = 0.8 * self._service_s + 0.2 * elapsed
                self.completed += 1

    def stats(self) -> dict[str, int]:
        return {
            "max_concurrency": self.max_concurrency,
            "max_queue": self.max_queue,
            "running": self.running,
            "admitted": self.admitted,
            "rejected": self.rejected,
            "completed": self.completed,
        }
