"""A bounded load generator for the server, loopback only (the load test and the benchmark).

``N`` concurrent clients each send a fixed number of requests, one after another, and record
every answer's status and latency; a sampler thread records the server process's resident
memory meanwhile. Everything is bounded: the request count, a wall-clock deadline after which
unfinished requests are cancelled (and counted as unanswered), and the target, which must be a
loopback address, so it can never be pointed at another machine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

from refseg.errors import InputError
from refseg.serve.server import is_loopback

#: ``make_request(client_index, request_index) -> keyword arguments for httpx.post``.
RequestFactory = Callable[[int, int], dict[str, Any]]


@dataclass
class LoadReport:
    """What one load run saw (latencies in seconds, memory in bytes)."""

    clients: int
    sent: int
    statuses: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)  # transport errors, by type
    latencies: dict[int, list[float]] = field(default_factory=dict)
    wall_s: float = 0.0
    baseline_rss: int = 0
    peak_rss: int = 0
    rss_samples: int = 0

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def unanswered(self) -> int:
        return self.sent - self.answered

    def percentile(self, status: int, q: float) -> float:
        values = self.latencies.get(status) or []
        return float(np.percentile(values, q)) if values else float("nan")

    def summary(self) -> dict[str, Any]:
        """The figures as a flat dict (for printing, JSON, and the report)."""
        wall = max(self.wall_s, 1e-9)
        served = self.statuses.get(200, 0)
        return {
            "clients": self.clients,
            "requests": self.sent,
            "statuses": dict(sorted(self.statuses.items())),
            "transport_errors": dict(self.failures),
            "unanswered": self.unanswered,
            "wall_s": round(self.wall_s, 3),
            "answered_per_s": round(self.answered / wall, 2),
            "served_per_s": round(served / wall, 2),
            "p50_ms_200": round(1000 * self.percentile(200, 50), 1),
            "p95_ms_200": round(1000 * self.percentile(200, 95), 1),
            "p50_ms_503": round(1000 * self.percentile(503, 50), 1),
            "p95_ms_503": round(1000 * self.percentile(503, 95), 1),
            "p50_ms_all": round(1000 * _all_percentile(self.latencies, 50), 1),
            "p95_ms_all": round(1000 * _all_percentile(self.latencies, 95), 1),
            "baseline_rss_mb": round(self.baseline_rss / 2**20, 1),
            "peak_rss_mb": round(self.peak_rss / 2**20, 1),
            "rss_growth_mb": round((self.peak_rss - self.baseline_rss) / 2**20, 1),
        }


def _all_percentile(latencies: dict[int, list[float]], q: float) -> float:
    values = [v for vs in latencies.values() for v in vs]
    return float(np.percentile(values, q)) if values else float("nan")


class RssSampler:
    """Polls a process's resident set size in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        import psutil

        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.rss())
                self.samples += 1
            except Exception:  # the process ended
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)


def run_load(
    url: str,
    make_request: RequestFactory,
    *,
    clients: int = 64,
    requests_per_client: int = 4,
    deadline_s: float = 120.0,
    request_timeout_s: float = 60.0,
    server_pid: int | None = None,
    honour_retry_after: float = 0.0,
) -> LoadReport:
    """Send ``clients * requests_per_client`` POSTs to ``url`` from ``clients`` concurrent
    connections and report statuses, latencies and (with ``server_pid``) peak server RSS.

    With ``honour_retry_after`` > 0, a client answered 503 waits ``min(Retry-After, value)``
    seconds before its next request (each 503 still counts as one request answered).
    """
    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise InputError(f"load generation targets loopback addresses only, not {host!r}")
    if clients < 1 or requests_per_client < 1:
        raise InputError("clients and requests_per_client must be at least 1")
    report = LoadReport(clients=clients, sent=0)
    sampler = RssSampler(server_pid) if server_pid is not None else None
    if sampler is not None:
        report.baseline_rss = sampler.rss()

    async def client(index: int, http: httpx.AsyncClient) -> None:
        for number in range(requests_per_client):
            kwargs = make_request(index, number)
            report.sent += 1
            start = time.perf_counter()
            try:
                response = await http.post(url, **kwargs)
            except httpx.HTTPError as exc:
                report.failures[type(exc).__name__] += 1
                continue
            elapsed = time.perf_counter() - start
            report.statuses[response.status_code] += 1
            report.latencies.setdefault(response.status_code, []).append(elapsed)
            if response.status_code == 503 and honour_retry_after > 0:
                wait = float(response.headers.get("Retry-After", "1"))
                await asyncio.sleep(min(wait, honour_retry_after))

    async def main() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        timeout = httpx.Timeout(request_timeout_s)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as http:
            tasks = [asyncio.create_task(client(i, http)) for i in range(clients)]
            done, pending = await asyncio.wait(tasks, timeout=deadline_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                task.result()

    start = time.perf_counter()
    if sampler is not None:
        with sampler:
            asyncio.run(main())
        report.peak_rss = max(sampler.peak, report.baseline_rss)
        report.rss_samples = sampler.samples
    else:
        asyncio.run(main())
    report.wall_s = time.perf_counter() - start
    return report
