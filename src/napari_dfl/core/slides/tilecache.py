"""A decoded-tile cache in front of tifffile's zarr store.

tifffile's store decodes a JPEG/JPEG2000 tile on every request. Neighbouring patches share
tiles (a 224 px x20 patch touches up to four 512 px tiles, each shared by about ten
patches), so without a cache extraction decodes every tile many times. The cache keeps
decoded tiles in a byte-bounded LRU shared by all levels of a slide; napari's dask reads go
through it too.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import WrapperStore

#: Default capacity of a slide's tile cache, in bytes.
DEFAULT_CACHE_BYTES = 96 * 2**20
_METADATA_SUFFIXES = ("zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata")


class TileLRU:
    """A thread-safe LRU of decoded chunks, bounded in bytes."""

    def __init__(self, capacity: int = DEFAULT_CACHE_BYTES) -> None:
        self.capacity = int(capacity)
        self._items: OrderedDict[str, np.ndarray] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: str) -> np.ndarray | None:
        """The cached (read-only) array of ``key``, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: str, value: np.ndarray) -> None:
        """Cache ``value`` (kept, not copied), evicting least recently used entries."""
        if value.nbytes > self.capacity:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= old.nbytes
            self._items[key] = value
            self._size += value.nbytes
            while self._size > self.capacity:
                _, evicted = self._items.popitem(last=False)
                self._size -= evicted.nbytes

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        return self._size


class CachingStore(WrapperStore):
    """A read-only zarr store that caches the decoded chunks of another store.

    Args:
        store: the wrapped store (tifffile's ``ZarrTiffStore``).
        cache: the LRU, shareable between the stores of a slide's levels.
        namespace: prefix that keeps keys of different levels apart in a shared cache.
    """

    def __init__(self, store: Store, cache: TileLRU, namespace: str = "") -> None:
        super().__init__(store)
        self._cache = cache
        self._namespace = namespace

    def _with_store(self, store: Store) -> CachingStore:
        return type(self)(store, self._cache, self._namespace)

    async def get(self, key: str, prototype: BufferPrototype,
                  byte_range: ByteRequest | None = None) -> Buffer | None:
        """Serve whole chunks from the cache; anything else from the wrapped store."""
        if byte_range is not None or key.endswith(_METADATA_SUFFIXES):
            return await self._store.get(key, prototype, byte_range)
        cache_key = f"{self._namespace}/{key}"
        cached = self._cache.get(cache_key)
        if cached is not None:
            return prototype.buffer.from_array_like(cached)
        value = await self._store.get(key, prototype, byte_range)
        if value is not None:
            # Keep the decoded array itself (no copy); zarr only reads chunk buffers.
            array = value.as_numpy_array()
            array.flags.writeable = False
            self._cache.put(cache_key, array)
        return value
