"""The extraction engine: patches of a slide -> embeddings in a resumable store.

Reader threads cut and decode batches of samples ahead of the model (prefetch); the batched
forward runs in ``torch.inference_mode`` with the backbone's precision; each batch is
committed to the store as soon as it is computed. Extraction is a generator that yields
:class:`EmbedProgress` after every batch and stops cleanly between batches when closed or
cancelled, so a GUI worker, the CLI and a dask task drive the same code.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from napari_dfl.core.errors import Cancelled
from napari_dfl.core.features.shared_context import (
    ContextCache,
    cut_shared,
    embed_shared,
    plan_shared,
)
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import note_precision
from napari_dfl.core.slides.sampling import Composition, sample_patches
from napari_dfl.core.slides.tiff import Slide

#: Default number of samples per forward batch (each sample has ``n_parts`` patches).
DEFAULT_BATCH = 8
#: Smallest batch the out-of-memory fallback goes down to.
MIN_BATCH = 1
#: Height of the strips samples are visited in (see :func:`spatial_order`).
STRIP_PX = 1024


class ExtractionCancelled(Cancelled):
    """Extraction stopped on request; what was committed stays in the store."""


@dataclass(frozen=True)
class EmbedProgress:
    """Progress of one extraction.

    Attributes:
        done: samples of this request now in the store.
        total: samples requested.
        computed: samples computed by this run (the rest were already stored).
        rate: samples per second computed by this run.
        slide: the slide's file name.
        committed: ``(M, 2)`` anchors committed since the previous report, so that a
            consumer (a prediction overlay) can use them at once.

    """

    done: int
    total: int
    computed: int
    rate: float
    slide: str
    committed: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.int64))

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 for an empty request)."""
        return 1.0 if self.total == 0 else self.done / self.total


def spatial_order(coords: np.ndarray, strip: int = STRIP_PX) -> np.ndarray:
    """Sort anchors strip by strip (``strip`` level-0 px tall), each strip left to right.

    Consecutive samples then share decoded tiles, so the slide's small tile cache serves
    most reads (row-major order would need a cache of two full tile rows of the slide).
    """
    if len(coords) < 2:
        return coords
    order = np.lexsort((coords[:, 1], coords[:, 0], coords[:, 1] // strip))
    return coords[order]


def _batches(coords: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(coords), size):
        yield coords[start : start + size]


def _is_out_of_memory(exc: BaseException) -> bool:
    return "out of memory" in str(exc).lower() or type(exc).__name__ == "OutOfMemoryError"


def _embed_batch(backbone, patches: np.ndarray, batch_size: list[int],
                 span: int = 1) -> np.ndarray:
    """Embed ``(B, P, S, S, 3)`` patches into ``(B, P * D)``; halves the batch on OOM.

    Forward passes take ``span`` x ``batch_size[0]`` samples at most (a batch's own parts and
    its new context patches go through together with ``span`` 2).
    """
    n, parts = patches.shape[:2]
    flat = patches.reshape(n * parts, *patches.shape[2:])
    out, start = [], 0
    while start < n:
        step = min(batch_size[0] * span, n - start)
        try:
            out.append(backbone.embed(flat[start * parts : (start + step) * parts]))
            start += step
        except RuntimeError as exc:
            if not _is_out_of_memory(exc) or batch_size[0] <= MIN_BATCH:
                raise
            batch_size[0] = max(MIN_BATCH, batch_size[0] // 2)
            _empty_device_cache(backbone)
    return np.concatenate(out).reshape(n, parts * backbone.embed_dim).astype(np.float32)


def _empty_device_cache(backbone) -> None:
    import torch

    if backbone.device.type == "cuda":
        torch.cuda.empty_cache()


def default_readers(device: str, cpus: int | None = None) -> int:
    """Threads that read and cut patches for a backbone on ``device``, from the core count.

    On a GPU the network waits for the CPU: decoding JPEG tiles and resampling patches is
    the work, so every core but one (the one feeding the GPU) reads, up to 32. On the CPU
    the network needs the cores itself: a quarter of them read (at least 2, measured best on
    2 cores: ``docs/embedding.md``), up to 8.
    """
    cpus = cpus or os.cpu_count() or 2
    if device.startswith(("cuda", "mps")):
        return max(2, min(32, cpus - 1))
    return max(2, min(8, cpus // 4))


def embed_coords(
    slide: Slide,
    coords: np.ndarray,
    backbone,
    composition: Composition,
    store: EmbeddingStore,
    *,
    batch_size: int = DEFAULT_BATCH,
    readers: int | None = None,
    prefetch: int | None = None,
    cancel: threading.Event | Callable[[], bool] | None = None,
    order: str = "spatial",
) -> Generator[EmbedProgress, None, EmbeddingStore]:
    """Embed the samples anchored at ``coords`` that the store does not hold yet.

    Args:
        slide: the slide (with mpp).
        coords: ``(N, 2)`` level-0 anchors (see :mod:`napari_dfl.core.slides.sampling`).
        backbone: a loaded :class:`~napari_dfl.core.backbones.backbone.Backbone`.
        composition: the sample composition (an unresolved input size becomes the
            backbone's).
        store: where embeddings go; must have been opened for this slide, backbone and
            composition (see
            :func:`~napari_dfl.core.features.store_folder.open_store_for`).
        batch_size: samples per forward batch.
        readers: threads cutting patches ahead of the model (None:
            :func:`default_readers` for the backbone's device).
        prefetch: batches cut ahead of the model (None: one more than the readers, so every
            reader has a batch to cut).
        cancel: an event (or a callable) checked between batches.
        order: ``"spatial"`` visits samples strip by strip (fastest: neighbours share
            decoded tiles); ``"given"`` keeps the order of ``coords`` (e.g. the field of
            view first).

    Yields:
        Progress after every committed batch (and once at the start).

    Returns:
        The store (via ``StopIteration.value``).

    Raises:
        ExtractionCancelled: ``cancel`` was set; committed batches stay in the store.

    """
    composition = composition.for_input(int(backbone.input_size))
    readers = readers or default_readers(str(getattr(backbone, "device", "cpu")))
    prefetch = prefetch or readers + 1
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    unique = np.unique(coords, axis=0) if len(coords) else coords
    todo = unique[store.missing(unique)] if len(unique) else unique
    if order == "spatial":
        todo = spatial_order(todo)
    elif order == "given":
        todo = _in_given_order(coords, todo)
    else:
        raise ValueError(f"order must be 'spatial' or 'given', got {order!r}")
    total, done = len(unique), len(unique) - len(todo)
    is_cancelled = _cancel_check(cancel)
    yield EmbedProgress(done, total, 0, 0.0, slide.path.name)
    if not len(todo):
        return store
    note_precision(store, getattr(backbone, "precision", None))  # a mix is said, and kept
    forward_batch = [max(MIN_BATCH, int(batch_size))]
    plan, cut, embed_cut = _batch_steps(slide, composition, backbone, forward_batch)
    pending: deque[tuple[np.ndarray, Future]] = deque()
    # Readers cut batches ahead of the model; one writer commits each batch while the model
    # computes the next. Progress reports committed samples only.
    with ThreadPoolExecutor(max_workers=max(1, readers), thread_name_prefix="dfl-read") as pool, \
            _Committer(store) as committer:
        try:
            for batch in _batches(todo, max(1, int(batch_size))):
                pending.append((batch, pool.submit(cut, plan(batch))))
                while len(pending) >= prefetch:
                    batch_coords, future = pending.popleft()
                    committer.submit(batch_coords,
                                     embed_cut(future.result()))
                    if is_cancelled():
                        raise ExtractionCancelled(
                            _cancel_message(store, done + committer.drain(), total))
                    if committer.fresh:
                        yield committer.progress(done, total, slide)
            while pending:
                batch_coords, future = pending.popleft()
                committer.submit(batch_coords,
                                 embed_cut(future.result()))
                if is_cancelled() and pending:
                    raise ExtractionCancelled(
                        _cancel_message(store, done + committer.drain(), total))
                if committer.fresh:
                    yield committer.progress(done, total, slide)
            committer.drain()
            yield committer.progress(done, total, slide)
        finally:
            for _, future in pending:
                future.cancel()
    return store


def _batch_steps(slide: Slide, composition: Composition, backbone,
                 forward_batch: list[int]) -> tuple[Callable, Callable, Callable]:
    """How a batch is planned (here, in order), cut (on a reader) and embedded (here).

    A composition that shares its context cuts and embeds each context patch once
    (:mod:`napari_dfl.core.features.shared_context`); others cut every part of every sample.
    """
    def embed(patches: np.ndarray) -> np.ndarray:
        return _embed_batch(backbone, patches, forward_batch)

    if not composition.shares_context:
        return ((lambda batch: batch), (lambda batch: sample_patches(slide, batch, composition)),
                embed)
    cache = ContextCache()

    def embed_with_contexts(patches: np.ndarray) -> np.ndarray:
        # a batch's own samples and its new contexts (at most one per sample) in one pass
        return _embed_batch(backbone, patches, forward_batch, span=2)

    return ((lambda batch: plan_shared(slide, batch, composition, cache)),
            (lambda plan: cut_shared(slide, plan, composition)),
            (lambda cut: embed_shared(cut, slide, composition, cache, embed_with_contexts)))


def _in_given_order(coords: np.ndarray, todo: np.ndarray) -> np.ndarray:
    """The anchors of ``todo`` in their first order of appearance in ``coords``."""
    wanted = {(int(x), int(y)) for x, y in todo}
    seen: set[tuple[int, int]] = set()
    ordered = []
    for x, y in coords:
        key = (int(x), int(y))
        if key in wanted and key not in seen:
            seen.add(key)
            ordered.append(key)
    return np.asarray(ordered, dtype=np.int64).reshape(-1, 2)


class _Committer:
    """Commits batches to the store on one writer thread, one batch in flight at most.

    ``fresh`` collects the anchors committed since the last progress report; ``computed``
    counts all samples committed by this run. Leaving the context waits for the write in
    flight, so no computed batch is ever lost.
    """

    def __init__(self, store: EmbeddingStore) -> None:
        self._store = store
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dfl-write")
        self._in_flight: Future | None = None
        self.fresh: list[np.ndarray] = []
        self.computed = 0
        self._started = time.perf_counter()

    def __enter__(self) -> _Committer:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.drain()
        finally:
            self._writer.shutdown(wait=True)

    def submit(self, coords: np.ndarray, embeddings: np.ndarray) -> None:
        """Wait for the previous write, then queue this batch's."""
        self.drain()
        self._in_flight = self._writer.submit(self._store.append, coords, embeddings)
        self._in_flight.coords = coords  # type: ignore[attr-defined]

    def drain(self) -> int:
        """Wait for the write in flight; return the samples committed so far."""
        if self._in_flight is not None:
            future, self._in_flight = self._in_flight, None
            future.result()
            self.fresh.append(future.coords)  # type: ignore[attr-defined]
            self.computed += len(future.coords)  # type: ignore[attr-defined]
        return self.computed

    def progress(self, done: int, total: int, slide: Slide) -> EmbedProgress:
        """A progress report carrying (and clearing) the freshly committed anchors."""
        fresh = np.concatenate(self.fresh) if self.fresh else np.empty((0, 2), np.int64)
        self.fresh = []
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        return EmbedProgress(done + self.computed, total, self.computed,
                             self.computed / elapsed, slide.path.name, fresh)


def _cancel_check(cancel: threading.Event | Callable[[], bool] | None) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


def _cancel_message(store: EmbeddingStore, done: int, total: int) -> str:
    return (f"extraction cancelled after {done} of {total} samples; they are kept in "
            f"{store.path} and a rerun computes only the rest.")


def configure_torch_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads (None leaves torch's default: all cores)."""
    if threads is None:
        return
    import torch

    torch.set_num_threads(max(1, int(threads)))
