"""The panel's jobs as plain generators (no Qt): extract, train, predict.

Each job runs inside a napari ``thread_worker`` and yields ``(kind, payload)`` events that
the panel applies on the GUI thread. Embeddings are computed in a child process
(:mod:`napari_dfl.workflows.extraction_service`, which explains why) and read back from the store;
training and prediction of the small head run here, in the worker thread.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_dfl.core.annotations.annotation import Annotation, SampleSet, samples_from_annotations
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.core.slides.tissue import TileGrid, tile_grid
from napari_dfl.workflows.extraction_service import (
    ExtractionJob,
    ExtractionRequest,
    ExtractionService,
)

Event = tuple[str, object]


class JobCancelled(DFLError):
    """The user cancelled the job; what was computed is kept."""


@dataclass
class Settings:
    """What a job needs to know about the slide and the extractor.

    Attributes:
        slide: the open slide, with its mpp (the user's when the file has none).
        composition: the sample composition.
        store_dir: folder of the slide's embedding stores.
        backbone: backbone preset name.
        weights: its weights source (None: the preset's).
        min_tissue: minimum tissue share of a predicted tile (0 predicts every tile).
        batch_size: samples per extraction batch.

    """

    slide: Slide
    composition: Composition
    store_dir: str
    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    min_tissue: float = 0.5
    batch_size: int = 8

    def key(self) -> tuple:
        """What identifies the embedding store (the child reports its path once)."""
        return (str(self.slide.path), self.slide.mpp, repr(self.composition.to_dict()),
                self.backbone, self.weights, os.path.abspath(self.store_dir))


def default_store_dir(slide_path: Path) -> str:
    """``<slide folder>/<stem>.dfl``, or a user cache folder when that is not writable."""
    folder = slide_path.parent
    if os.access(folder, os.W_OK):
        return str(folder / f"{slide_path.stem}.dfl")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.gettempdir())
    return str(cache / "napari-dfl" / f"{slide_path.stem}.dfl")


def extractor_summary(settings: Settings) -> dict:
    """The backbone name and composition of ``settings`` (what a head depends on)."""
    return {"backbone": settings.backbone, "composition": settings.composition.to_dict()}


@dataclass
class CancelToken:
    """Cancel flag shared by the GUI and a job; forwards the cancel to a running child."""

    event: threading.Event = field(default_factory=threading.Event)
    process: ExtractionJob | None = None

    def cancel(self) -> None:
        """Request the job to stop."""
        self.event.set()
        if self.process is not None:
            self.process.cancel()

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was requested."""
        return self.event.is_set()


#: Store path per :meth:`Settings.key`, learnt from the child's ``started`` message.
_STORE_PATHS: dict[tuple, str] = {}
_SERVICE: ExtractionService | None = None


def extraction_service() -> ExtractionService:
    """The GUI process's extraction child (one for all panels; it keeps its backbone)."""
    global _SERVICE
    if _SERVICE is None:
        import atexit

        _SERVICE = ExtractionService()
        atexit.register(_SERVICE.close)
    return _SERVICE


def known_store(settings: Settings) -> EmbeddingStore | None:
    """The slide's store for these settings when a child already reported it, else None."""
    path = _STORE_PATHS.get(settings.key())
    if path is None or not Path(path).exists():
        return None
    return EmbeddingStore.open(path)


def training_grid(settings: Settings) -> TileGrid:
    """Every tile of the working grid (glass too: background regions need it)."""
    comp = settings.composition
    return tile_grid(settings.slide, comp.patch_size, comp.zooms[0], min_tissue=0)


def samples_for(annotations: Sequence[Annotation], settings: Settings) -> SampleSet:
    """Training samples of the annotations on the working grid."""
    return samples_from_annotations(list(annotations), training_grid(settings),
                                    settings.composition, settings.slide.require_mpp(),
                                    source=str(settings.slide.path))


def extract(settings: Settings, coords: np.ndarray, token: CancelToken,
            order: str = "spatial") -> Generator[Event, None, str]:
    """Embed ``coords`` in a child process; yield its messages; return the store path.

    Raises:
        JobCancelled: the user cancelled (committed batches stay in the store).
        DFLError: the child failed; its one-line message.

    """
    request = ExtractionRequest(
        slide_path=str(settings.slide.path), mpp=settings.slide.mpp, coords=coords,
        composition=settings.composition.to_dict(), store_dir=settings.store_dir,
        backbone=settings.backbone, weights=settings.weights,
        batch_size=settings.batch_size, order=order)
    process = extraction_service().job(request)
    token.process = process
    if token.cancelled:
        raise JobCancelled("cancelled before extraction started.")
    process.start()
    try:
        while not process.finished:
            for kind, payload in process.poll(0.1):
                if kind == "started":
                    _STORE_PATHS[settings.key()] = payload["store"]
                elif kind == "cancelled":
                    raise JobCancelled(payload["message"])
                elif kind == "failed":
                    raise DFLError(payload["message"])
                yield kind, payload
    finally:
        token.process = None
        process.shutdown()
    return _STORE_PATHS[settings.key()]


def ensure_embedded(settings: Settings, coords: np.ndarray,
                    token: CancelToken) -> Generator[Event, None, EmbeddingStore]:
    """Embed what the store lacks of ``coords`` (nothing at all when it has everything)."""
    store = known_store(settings)
    if store is not None and not store.missing(coords).any():
        return store
    path = yield from extract(settings, coords, token)
    return EmbeddingStore.open(path)


def extract_job(settings: Settings, annotations: Sequence[Annotation],
                token: CancelToken) -> Generator[Event, None, SampleSet]:
    """Extract the samples of the annotations; yields ``("samples", SampleSet)`` first."""
    samples = samples_for(annotations, settings)
    yield "samples", samples
    if len(samples):
        yield from ensure_embedded(settings, samples.coords, token)
    return samples


def train_job(settings: Settings, annotations: Sequence[Annotation], classes: list[str],
              config, token: CancelToken) -> Generator[Event, None, object]:
    """Extract what is missing, then train a head; yields ``("epoch", TrainProgress)``.

    Raises:
        TrainingError: fewer than two annotated classes and the like (the core's text).

    """
    from napari_dfl.core.heads.training import TrainingError, train_head

    samples = samples_for(annotations, settings)
    yield "samples", samples
    present = sorted(set(samples.labels.tolist()))
    if len(present) < 2:
        raise TrainingError(
            f"training needs samples of at least two classes; the annotations give "
            f"{len(present)} ({', '.join(present) or 'none'}). Annotate another class.")
    store = yield from ensure_embedded(settings, samples.coords, token)
    used = [c for c in classes if c in present]
    generator = train_head(store.get(samples.coords), samples.labels, samples.groups, config,
                           classes=used, cancel=lambda: token.cancelled)
    while True:
        try:
            step = next(generator)
        except StopIteration as stop:
            return stop.value
        yield "epoch", step


def _predict_rows(store_path: str, coords: np.ndarray, head) -> np.ndarray:
    store = EmbeddingStore.open(store_path)
    return head.predict_proba(store.get(coords))


def view_first(coords: np.ndarray, tile_size: float, centre_xy: tuple[float, float] | None,
               ) -> np.ndarray:
    """Tile anchors sorted by distance from ``centre_xy``: the field of view fills in first."""
    if centre_xy is None or not len(coords):
        return coords
    centres = coords + tile_size / 2.0
    distance = np.hypot(centres[:, 0] - centre_xy[0], centres[:, 1] - centre_xy[1])
    return coords[np.argsort(distance, kind="stable")]


def predict_job(settings: Settings, head, token: CancelToken,
                centre_xy: tuple[float, float] | None = None,
                ) -> Generator[Event, None, None]:
    """Predict the slide's tiles; yields ``("grid", TileGrid)`` then ``("proba", (c, p))``.

    Tiles already in the store are predicted at once; the rest are extracted in the child,
    nearest to ``centre_xy`` (the view's centre) first, and predicted batch by batch.
    """
    comp = settings.composition
    grid = tile_grid(settings.slide, comp.patch_size, comp.zooms[0],
                     min_tissue=settings.min_tissue)
    yield "grid", grid
    store = known_store(settings)
    missing = grid.coords
    if store is not None:
        if store.dim != head.input_dim:
            raise DFLError(
                f"the head expects {head.input_dim}-dimensional embeddings but the store "
                f"holds {store.dim}: train again with this backbone and composition.")
        absent = store.missing(grid.coords)
        done = grid.coords[~absent]
        if len(done):
            yield "proba", (done, head.predict_proba(store.get(done)))
        missing = grid.coords[absent]
    if not len(missing):
        return
    ordered = view_first(missing, grid.tile_size, centre_xy)
    store_path = None
    for kind, payload in extract(settings, ordered, token, order="given"):
        if kind == "started":
            store_path = payload["store"]
        elif kind == "progress" and len(payload["committed"]) and store_path:
            committed = payload["committed"]
            yield "proba", (committed, _predict_rows(store_path, committed, head))
        yield kind, payload


def auto_job(settings: Settings, annotations: Sequence[Annotation], classes: list[str],
             config, token: CancelToken, centre_xy: tuple[float, float] | None = None,
             ) -> Generator[Event, None, object]:
    """Auto mode's one step: extract what is missing, retrain, predict the slide again.

    Yields the events of :func:`train_job`, then ``("trained", head)``, then those of
    :func:`predict_job`; returns the head.
    """
    head = yield from train_job(settings, annotations, classes, config, token)
    yield "trained", head
    if token.cancelled:
        raise JobCancelled("cancelled after training; the new head is kept.")
    yield from predict_job(settings, head, token, centre_xy)
    return head


def _projection_child(paths: list[str], method: str, results) -> None:
    """Child process: project stores together (cached with them); put the parts or an error."""
    try:
        from napari_dfl.core.explorer.projection import project_store_paths

        results.put(("ok", project_store_paths(paths, method)))
    except BaseException as exc:  # report everything: the parent must learn why
        from napari_dfl.workflows.extraction_service import one_line

        results.put(("error", one_line(exc)))


def projection_job(store_paths: list[str], method: str, token: CancelToken,
                   ) -> Generator[Event, None, list[np.ndarray]]:
    """Project stores in a spawned child (UMAP's numba must stay out of the GUI process).

    Yields ``("waiting", seconds)`` while it runs; returns the ``(N_i, 2)`` coordinates of
    each store.
    Cancel stops the child at once (nothing partial is cached).
    """
    import multiprocessing as mp
    import queue
    import time

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_projection_child, args=(list(store_paths), method, results),
                        name="napari-dfl-projection", daemon=True)
    child.start()
    start = time.monotonic()
    try:
        while True:
            if token.cancelled:
                raise JobCancelled(f"{method.upper()} projection cancelled.")
            try:
                status, value = results.get(timeout=0.2)
            except queue.Empty:
                if not child.is_alive():
                    raise DFLError(f"the {method.upper()} process ended unexpectedly "
                                   f"(exit code {child.exitcode}).") from None
                yield "waiting", time.monotonic() - start
                continue
            if status == "error":
                raise DFLError(value)
            return value
    finally:
        if child.is_alive():
            child.terminate()
        child.join(2.0)
