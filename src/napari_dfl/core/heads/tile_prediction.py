"""Whole-slide prediction: tissue tiles -> class probabilities, filled in as they compute.

Tiles whose embeddings are already stored are predicted at once; the rest are extracted
(:func:`napari_dfl.core.features.engine.embed_coords`) and predicted batch by batch, so a viewer can
refresh its overlay after every report. Results are one value per tile on the tile grid;
:meth:`SlidePrediction.placement` says where that small array sits on the slide.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.engine import embed_coords
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.slides.tissue import TileGrid


@dataclass
class SlidePrediction:
    """Per-tile predictions of one slide, complete or partial.

    Attributes:
        grid: the tiles (level-0 anchors, grid positions, tile size).
        classes: class names, in the head's order.
        proba: ``(N, C)`` float32 probabilities; NaN rows are not predicted yet.
    """

    grid: TileGrid
    classes: list[str]
    proba: np.ndarray

    @classmethod
    def empty(cls, grid: TileGrid, classes: list[str]) -> SlidePrediction:
        """A prediction with no tile predicted yet."""
        proba = np.full((len(grid), len(classes)), np.nan, dtype=np.float32)
        return cls(grid, list(classes), proba)

    def __post_init__(self) -> None:
        self._index = {(int(x), int(y)): i for i, (x, y) in enumerate(self.grid.coords)}

    @property
    def predicted(self) -> np.ndarray:
        """``(N,)`` bool: tiles predicted so far."""
        return ~np.isnan(self.proba[:, 0])

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int class index per tile, -1 where not predicted."""
        labels = np.full(len(self.grid), -1, dtype=np.int16)
        done = self.predicted
        labels[done] = self.proba[done].argmax(axis=1)
        return labels

    def update(self, coords: np.ndarray, proba: np.ndarray) -> None:
        """Record the probabilities of tiles given by their anchors."""
        rows = [self._index[(int(x), int(y))] for x, y in coords]
        self.proba[rows] = proba

    def class_map(self) -> np.ndarray:
        """``(rows, cols)`` int16 class index per grid cell; -1 off tissue or not yet done."""
        return self.grid.to_grid(self.labels, fill=-1).astype(np.int16)

    def probability_map(self, class_index: int) -> np.ndarray:
        """``(rows, cols)`` float32 probability of one class; NaN where there is none."""
        return self.grid.to_grid(self.proba[:, class_index]).astype(np.float32)

    def confidence(self) -> np.ndarray:
        """``(N,)`` highest class probability per tile (NaN where not predicted)."""
        return np.nanmax(self.proba, axis=1) if self.predicted.any() else self.proba[:, 0]

    def placement(self) -> dict:
        """The napari ``scale`` and ``translate`` (row, col order) of the per-tile arrays.

        napari centres pixel ``i`` of a layer at ``translate + i * scale``; the slide's
        level-0 pixel ``j`` spans ``[j - 0.5, j + 0.5]``. Grid cell ``i`` spans level-0
        pixels ``[i * t, (i + 1) * t)``, so its centre sits at ``i * t + t / 2 - 0.5``.
        """
        size = self.grid.tile_size
        offset = size / 2.0 - 0.5
        return {"scale": (size, size), "translate": (offset, offset)}

    def counts(self) -> dict[str, int]:
        """Number of predicted tiles per class."""
        labels = self.labels
        return {name: int((labels == i).sum()) for i, name in enumerate(self.classes)}


@dataclass(frozen=True)
class PredictProgress:
    """Progress of a prediction; ``prediction`` is the live (partial) result."""

    done: int
    total: int
    prediction: SlidePrediction

    @property
    def fraction(self) -> float:
        """``done / total``."""
        return 1.0 if self.total == 0 else self.done / self.total


def predict_slide(
    slide,
    head,
    backbone,
    composition: Composition,
    store: EmbeddingStore,
    grid: TileGrid,
    *,
    batch_size: int = 8,
    cancel: threading.Event | Callable[[], bool] | None = None,
    order: str = "spatial",
) -> Generator[PredictProgress, None, SlidePrediction]:
    """Predict every tile of ``grid``, extracting missing embeddings on the way.

    Args:
        slide: the slide.
        head: a trained head (``predict_proba``, ``classes``, ``input_dim``).
        backbone: the backbone the head was trained on (checked by the caller with
            :func:`napari_dfl.core.heads.head_files.check_compatible`).
        composition: the head's composition.
        store: the slide's store for this backbone and composition.
        grid: the tiles to predict (usually the tissue grid; a subset for a field of view).
        batch_size: samples per extraction batch.
        cancel: checked between batches; what was predicted stays in the result.
        order: extraction order, ``"spatial"`` or ``"given"`` (see ``embed_coords``).

    Yields:
        Progress after the stored tiles are predicted and after every extracted batch.

    Returns:
        The complete prediction (via ``StopIteration.value``).
    """
    if store.dim != head.input_dim:
        raise DFLError(
            f"the head expects {head.input_dim}-dimensional embeddings but the store holds "
            f"{store.dim}; extract with the head's backbone and composition."
        )
    prediction = SlidePrediction.empty(grid, head.classes)
    rows = store.lookup(grid.coords)
    stored = rows >= 0
    if stored.any():
        prediction.proba[stored] = head.predict_proba(store.embeddings(rows[stored]))
    yield PredictProgress(int(stored.sum()), len(grid), prediction)
    missing = grid.coords[~stored]
    if len(missing):
        for progress in embed_coords(slide, missing, backbone, composition, store,
                                     batch_size=batch_size, cancel=cancel, order=order):
            if len(progress.committed):
                prediction.update(progress.committed,
                                  head.predict_proba(store.get(progress.committed)))
                yield PredictProgress(int(prediction.predicted.sum()), len(grid), prediction)
    return prediction
