"""A head's prediction of a slide's tiles: class probabilities per tile, complete or partial.

One value per tile on the slide's tile grid (a small array, never upsampled to the slide's
size); :meth:`TilePrediction.placement` says where it sits on the slide. Predictions fill in
as tiles are embedded (:func:`napari_dfl.workflows.predict.predict_tiles`), so every view
of it copes with tiles not predicted yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from napari_dfl.core.slides.tissue import TileGrid


@dataclass
class TilePrediction:
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
    def empty(cls, grid: TileGrid, classes: list[str]) -> TilePrediction:
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
