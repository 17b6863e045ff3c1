"""The embedding LRU: bounded by entries and bytes, coalescing concurrent misses."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from refseg.pipeline import Pipeline
from refseg.segmentation.base import Embedding
from refseg.serve.cache import EmbeddingCache, RequestEmbeddings


def _embedding(nbytes: int) -> Embedding:
    return Embedding(height=4, width=4, data=np.zeros(nbytes, dtype=np.uint8), backend="t")


def test_entry_bound_evicts_least_recently_used():
    cache = EmbeddingCache(max_entries=2, max_bytes=10_000)
    cache.put("a", _embedding(10))
    cache.put("b", _embedding(10))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _embedding(10))
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.stats()["evictions"] == 1 and cache.nbytes == 20


def test_byte_bound_holds_whatever_the_count():
    cache = EmbeddingCache(max_entries=100, max_bytes=1000)
    for i in range(10):
        cache.put(str(i), _embedding(300))
        assert cache.nbytes <= 1000
    assert len(cache) == 3 and {"7", "8", "9"} == {k for k in map(str, range(10)) if k in cache}
    cache.put("huge", _embedding(5000))  # larger than the whole budget: not kept
    assert "huge" not in cache and len(cache) == 3
    cache.put("9", _embedding(100))  # replacing an entry re-counts its bytes
    assert cache.nbytes == 700


def test_zero_entries_disables_the_cache():
    cache = EmbeddingCache(max_entries=0)
    value, cached = cache.get_or_compute("k", lambda: _embedding(8))
    assert not cached and value.nbytes == 8 and len(cache) == 0


def test_concurrent_misses_compute_once():
    cache = EmbeddingCache()
    calls = []
    barrier = threading.Barrier(8)

    def compute() -> Embedding:
        calls.append(1)
        time.sleep(0.2)
        return _embedding(16)

    results = []

    def worker() -> None:
        barrier.wait()
        results.append(cache.get_or_compute("same", compute))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sum(not cached for _, cached in results) == 1
    assert len({id(value) for value, _ in results}) == 1


def test_a_failed_computation_is_not_cached_and_waiters_retry():
    cache = EmbeddingCache()
    started = threading.Event()
    release = threading.Event()

    def failing() -> Embedding:
        started.set()
        release.wait(5)
        raise RuntimeError("encoder crashed")

    outcome: dict = {}

    def owner() -> None:
        try:
            cache.get_or_compute("k", failing)
        except RuntimeError as exc:
            outcome["owner"] = str(exc)

    thread = threading.Thread(target=owner)
    thread.start()
    assert started.wait(5)
    waiter = threading.Thread(
        target=lambda: outcome.setdefault(
            "waiter", cache.get_or_compute("k", lambda: _embedding(4))
        )
    )
    waiter.start()
    time.sleep(0.05)
    release.set()
    thread.join(5)
    waiter.join(5)
    assert outcome["owner"] == "encoder crashed"
    value, cached = outcome["waiter"]
    assert value.nbytes == 4 and cached is False and "k" in cache


def test_request_view_survives_eviction_between_store_and_read():
    shared = EmbeddingCache(max_entries=1)
    view = RequestEmbeddings(shared)
    assert "a" not in view
    view["a"] = _embedding(8)
    shared.put("b", _embedding(8))  # another request evicts "a" from the shared cache
    assert "a" not in shared
    assert "a" in view and view["a"].nbytes == 8 and view.computed == 1
    other = RequestEmbeddings(shared)
    assert "b" in other and other.computed == 0
    with pytest.raises(KeyError):
        other["missing"]


def test_pipeline_runs_on_the_view(sam, astronaut):
    """Pipeline.run with the server's mapping: a second run on the image encodes nothing."""
    from refseg.grounding.base import GroundedInstance, Grounding

    class OneBox:
        name = "one-box"

        def ground(self, images, phrases, *, think=False):
            return [Grounding(instances=[GroundedInstance(box=(150, 40, 370, 260))])]

    shared = EmbeddingCache()
    first = RequestEmbeddings(shared)
    result = Pipeline(OneBox(), sam).run([(astronaut, "face")], embeddings=first)[0]
    assert first.computed == 1 and len(shared) == 1 and "embed_s" in result.timings
    second = RequestEmbeddings(shared)
    again = Pipeline(OneBox(), sam).run([(astronaut, "face")], embeddings=second)[0]
    assert second.computed == 0 and "embed_s" not in again.timings
    assert again.instances[0].rle == result.instances[0].rle
