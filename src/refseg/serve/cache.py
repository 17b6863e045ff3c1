"""A bounded, thread-safe LRU of image embeddings shared by the server's requests.

Encoding an image is the expensive step of promptable segmentation (about a second on CPU for
SAM), while each further box, point or phrase on the same image costs tens of milliseconds. A
person working in the web page sends many prompts on one image, so the server keeps recent
embeddings keyed by :func:`refseg.image.image_digest` (a hash of the decoded pixels, so the same
photo re-encoded or re-uploaded still hits). The cache is bounded by entry count *and* by bytes
(:attr:`Embedding.nbytes`): embeddings differ in size between backends, and a count alone would
let a large backend grow memory without limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import Future
from typing import Any

from refseg.errors import InputError
from refseg.segmentation.base import Embedding


class EmbeddingCache:
    """Least-recently-used embeddings, at most ``max_entries`` and ``max_bytes``.

    An embedding larger than ``max_bytes`` on its own is simply not kept (the request that made
    it still uses it). :meth:`get_or_compute` also coalesces concurrent misses on one key, so a
    burst of requests on a new image costs one encoder pass rather than one per request.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int = 256 * 2**20) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise InputError("embedding cache limits must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, Embedding] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self._pending: dict[str, Future[Embedding]] = {}
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached embeddings (as reported by :attr:`Embedding.nbytes`)."""
        return self._nbytes

    def get(self, key: str) -> Embedding | None:
        """The embedding for ``key`` (marked most recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: Embedding) -> None:
        """Store ``value`` and evict least recently used entries until both bounds hold."""
        size = value.nbytes
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._nbytes -= old.nbytes
            if self.max_entries == 0 or size > self.max_bytes:
                return
            self._items[key] = value
            self._nbytes += size
            while len(self._items) > self.max_entries or self._nbytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._nbytes -= evicted.nbytes
                self.evictions += 1

    def get_or_compute(self, key: str, compute: Callable[[], Embedding]) -> tuple[Embedding, bool]:
        """The cached embedding for ``key``, or ``compute()``'s, stored; and whether it was cached.

        When several threads miss on the same key at once, one computes and the others wait
        for its result. If that computation fails, each waiter tries once on its own.
        """
        for _ in range(2):
            with self._lock:
                value = self._items.get(key)
                if value is not None:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return value, True
                future = self._pending.get(key)
                owner = future is None
                if owner:
                    future = Future()
                    self._pending[key] = future
                    self.misses += 1
            assert future is not None
            if not owner:
                try:
                    return future.result(), True
                except Exception:
                    continue
            try:
                value = compute()
            except BaseException as exc:
                with self._lock:
                    self._pending.pop(key, None)
                future.set_exception(exc)
                raise
            # Store before dropping the pending marker, so no thread sees neither.
            self.put(key, value)
            with self._lock:
                self._pending.pop(key, None)
            future.set_result(value)
            return value, False
        value = compute()
        self.put(key, value)
        return value, False

    def stats(self) -> dict[str, Any]:
        """Counts for ``/healthz``: entries, bytes, limits, hits, misses, evictions."""
        with self._lock:
            return {
                "entries": len(self._items),
                "bytes": self._nbytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
            }


class RequestEmbeddings(MutableMapping[str, Embedding]):
    """The ``embeddings`` mapping handed to :meth:`refseg.pipeline.Pipeline.run` for one request.

    The pipeline checks ``key in cache``, stores a new embedding and then reads it back. With a
    bare LRU, another request could evict the entry between the store and the read; this view
    keeps whatever the request has touched in a request-local dict, backed by the shared cache.
    """

    def __init__(self, shared: EmbeddingCache) -> None:
        self.shared = shared
        self.local: dict[str, Embedding] = {}
        self.computed = 0

    def __contains__(self, key: object) -> bool:
        if key in self.local:
            return True
        if not isinstance(key, str):
            return False
        value = self.shared.get(key)
        if value is None:
            return False
        self.local[key] = value
        return True

    def __getitem__(self, key: str) -> Embedding:
        if key in self:
            return self.local[key]
        raise KeyError(key)

    def __setitem__(self, key: str, value: Embedding) -> None:
        self.local[key] = value
        self.computed += 1
        self.shared.put(key, value)

    def __delitem__(self, key: str) -> None:
        del self.local[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.local)

    def __len__(self) -> int:
        return len(self.local)
