"""Context parts computed once per cell of their own grid, for compositions that share them.

With ``Composition(context="shared")`` the x5 part of a sample is the x5 patch of the cell
(of a grid of x5 fields) that holds the sample's centre: the 16 x20 tiles of one cell share
it; with ``context="nearest"`` (the tissue default) it is the x5 patch centred on the middle
tile of the sample's 3 x 3 block of x20 tiles, shared by those 9
(:meth:`~napari_dfl.core.slides.sampling.Composition.part_centres`). The engine then cuts and
embeds each such patch once: batch after batch, in order, :func:`plan_shared` gives each
context to the first batch that needs it; the readers cut a batch's own (first-zoom) parts
and the contexts it was given (:func:`cut_shared`), the model embeds them with the batch's
own parts (:func:`embed_shared`), and :class:`ContextCache` keeps the context embeddings for
the next samples of the same cells (the spatial order of extraction visits them close
together). A context evicted before a later batch needs it is cut and embedded again on the
spot. So each context is embedded in the same forward pass whatever the readers' timing,
and every sample's vector equals the one
:func:`~napari_dfl.core.slides.sampling.sample_patches` would give (to the precision's
rounding).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from napari_dfl.core.slides.sampling import Composition, cut_zoom, sample_centres
from napari_dfl.core.slides.tiff import Slide

__all__ = ["ContextCache", "SharedCut", "SharedPlan", "cut_shared", "embed_shared",
           "plan_shared"]

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


@dataclass
class SharedPlan:
    """What a batch will cut, decided in batch order: its centres, keys and claimed contexts."""

    centres: np.ndarray
    keys: list[list[Key]]                 # per later zoom, per sample: its context's key
    claimed: list[dict[Key, np.ndarray]]  # per later zoom: contexts this batch cuts (centres)


def plan_shared(slide: Slide, coords: np.ndarray, composition: Composition,
                cache: ContextCache) -> SharedPlan:
    """Claim a batch's contexts (in the caller's thread, batch after batch, in order).

    A context goes to the first batch that needs it and is neither embedded nor claimed:
    claims made in batch order, not in the readers' order, so which forward pass embeds a
    context never depends on the threads' timing (bf16 rounds a vector a little differently
    in another batch).
    """
    centres = sample_centres(slide, coords, composition)
    plan = SharedPlan(centres, [], [])
    for k in range(1, len(composition.zooms)):
        keys, snapped = _keys(slide, centres, composition, k)
        plan.keys.append(keys)
        claimed: dict[Key, np.ndarray] = {}
        for key, centre in zip(keys, snapped, strict=True):
            if key not in claimed and cache.claim(key):
                claimed[key] = centre
        plan.claimed.append(claimed)
    return plan


def cut_shared(slide: Slide, plan: SharedPlan, composition: Composition) -> SharedCut:
    """Cut a planned batch (on a reader thread): its own parts and the contexts it claimed."""
    cut = SharedCut(cut_zoom(slide, plan.centres, composition, 0), plan.keys)
    for k, claimed in enumerate(plan.claimed, start=1):
        if claimed:
            patches = cut_zoom(slide, np.array(list(claimed.values())), composition, k)
            cut.new.update(zip(claimed, patches, strict=True))
    return cut


def embed_shared(cut: SharedCut, slide: Slide, composition: Composition, cache: ContextCache,
                 embed: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``(B, n_parts * D)`` embeddings of a cut batch, contexts from the cache.

    ``embed`` turns ``(N, V, S, S, 3)`` patches into ``(N, V * D)``.
    """
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
        if missing:  # evicted before this batch (a full cache): cut and embed them now
            centres = np.array([[x, y] for _, x, y in missing])
            patches = cut_zoom(slide, centres, composition, missing[0][0])
            for key, vector in zip(missing, embed(patches), strict=True):
                found[key] = vector
                cache.put(key, vector)
            cache.computed += len(missing)
        rows.append(np.stack([found[key] for key in keys]))
    return np.concatenate(rows, axis=1).astype(np.float32)
