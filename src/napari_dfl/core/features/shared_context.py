"""Context parts computed once per cell of their own grid, for compositions that share them.

With ``Composition(context="shared")`` the x5 part of a sample is the x5 patch of the cell
(of a grid of x5 fields) that holds the sample's centre: the 16 x20 tiles of one cell share
it; with ``context="nearest"`` (the tissue default) it is the x5 patch centred on the middle
tile of the sample's 3 x 3 block of x20 tiles, shared by those 9
(:meth:`~napari_dfl.core.slides.sampling.Composition.part_centres`). The engine then cuts and
embeds each such patch once: the readers cut a batch's own (first-zoom) parts and only the
context patches not embedded yet, the model embeds them with the batch's own parts, and
:class:`ContextCache` keeps the context embeddings for the next samples of the same cells
(the spatial order of extraction visits them close together). A context a batch needs but
does not find (evicted, or claimed by the reader of a later batch running at the same time)
is cut and embedded on the spot, and a later batch does not embed it again, so each context
is embedded once and the result never depends on the cache or the threads' timing: every
sample's vector equals the one :func:`~napari_dfl.core.slides.sampling.sample_patches`
would give.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from napari_dfl.core.slides.sampling import Composition, cut_zoom, sample_centres
from napari_dfl.core.slides.tiff import Slide

__all__ = ["ContextCache", "SharedCut", "cut_shared", "embed_shared"]

#: Context embeddings kept (4,096 x 2 variants x 1,280 floats: 40 MB for EfficientNet-Lite0).
CACHE_CELLS = 4096

Key = tuple[int, float, float]


class ContextCache:
    """Context embeddings by ``(zoom index, cell centre)``; bounded (oldest out), thread-safe."""

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity or CACHE_CELLS
        self._items: OrderedDict[Key, np.ndarray] = OrderedDict()
        self._claimed: set[Key] = set()  # cut by a batch in flight, not embedded yet
        self._lock = threading.Lock()
        self.computed = 0  # context embeddings computed (each cell's once, unless evicted)

    def __contains__(self, key: Key) -> bool:
        with self._lock:
            return key in self._items

    def claim(self, key: Key) -> bool:
        """True (and the key is now this caller's to cut) when nobody has it or is cutting it."""
        with self._lock:
            if key in self._items or key in self._claimed:
                return False
            self._claimed.add(key)
            return True

    def get(self, key: Key) -> np.ndarray | None:
        """The embedding of ``key``, or None."""
        with self._lock:
            return self._items.get(key)

    def put(self, key: Key, value: np.ndarray) -> None:
        """Keep ``value``; the oldest entry leaves when the cache is full."""
        with self._lock:
            self._claimed.discard(key)
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


@dataclass
class SharedCut:
    """A batch as the readers cut it: own parts, each sample's context keys, new contexts."""

    own: np.ndarray                       # (B, V, S, S, 3): the first zoom's parts
    keys: list[list[Key]]                 # per later zoom, per sample: its context's key
    new: dict[Key, np.ndarray] = field(default_factory=dict)  # key -> (V, S, S, 3)


def _keys(slide: Slide, centres: np.ndarray, composition: Composition,
          zoom_index: int) -> tuple[list[Key], np.ndarray]:
    snapped = composition.part_centres(centres, zoom_index, slide.require_mpp())
    keys = [(zoom_index, round(float(x), 3), round(float(y), 3)) for x, y in snapped]
    return keys, snapped


def cut_shared(slide: Slide, coords: np.ndarray, composition: Composition,
               cache: ContextCache) -> SharedCut:
    """Cut a batch (on a reader thread): its own parts and the contexts not embedded yet."""
    centres = sample_centres(slide, coords, composition)
    cut = SharedCut(cut_zoom(slide, centres, composition, 0), [])
    for k in range(1, len(composition.zooms)):
        keys, snapped = _keys(slide, centres, composition, k)
        cut.keys.append(keys)
        wanted: dict[Key, np.ndarray] = {}
        for key, centre in zip(keys, snapped, strict=True):
            if key not in wanted and cache.claim(key):
                wanted[key] = centre
        if wanted:
            patches = cut_zoom(slide, np.array(list(wanted.values())), composition, k)
            cut.new.update(zip(wanted, patches, strict=True))
    return cut


def embed_shared(cut: SharedCut, slide: Slide, composition: Composition, cache: ContextCache,
                 embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``(B, n_parts * D)`` embeddings of a cut batch, contexts from the cache.

    ``embed`` turns ``(N, V, S, S, 3)`` patches into ``(N, V * D)``.
    """
    # A context cut here may already be embedded: two readers cut batches at once, and the
    # later batch's reader can claim a cell the earlier batch also needs; the earlier batch,
    # embedded first, then embedded it on the spot (below).
    keys = [key for key in cut.new if cache.get(key) is None]
    # the batch's own parts and its new contexts in one call (``embed`` may pass them in one
    # forward pass: a few context patches alone would make a small, slow batch)
    vectors = embed(np.concatenate([cut.own, *(cut.new[k][None] for k in keys)]))
    rows = [vectors[:len(cut.own)]]
    for key, vector in zip(keys, vectors[len(cut.own):].copy(), strict=True):
        cache.put(key, vector)  # rows of their own copy: the batch's array is not kept
    cache.computed += len(keys)
    for keys in cut.keys:
        found = {key: cache.get(key) for key in dict.fromkeys(keys)}
        missing = [key for key, vector in found.items() if vector is None]
        if missing:  # evicted, or claimed by a later batch's reader: cut and embed them now
            centres = np.array([[x, y] for _, x, y in missing])
            patches = cut_zoom(slide, centres, composition, missing[0][0])
            for key, vector in zip(missing, embed(patches), strict=True):
                found[key] = vector
                cache.put(key, vector)
            cache.computed += len(missing)
        rows.append(np.stack([found[key] for key in keys]))
    return np.concatenate(rows, axis=1).astype(np.float32)
