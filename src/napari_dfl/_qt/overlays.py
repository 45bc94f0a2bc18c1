"""Prediction overlays: a class map (RGBA image) and a probability heatmap (Image).

Both hold one value per tile of the working grid, a small array placed on the slide with
``scale`` = tile size and ``translate``, never upsampled to the slide's size. They fill in
as tiles are predicted. The class map is an RGBA image coloured through a small lookup
table rather than a Labels layer: napari colours Labels through numba functions compiled on
first use, which froze the event loop for about 1.5 s when the first prediction appeared.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from napari_dfl._qt.layers import rgba
from napari_dfl.core.heads.tile_prediction import SlidePrediction
from napari_dfl.core.slides.tissue import TileGrid

CLASS_MAP_NAME = "DFL class map"
PROBABILITY_NAME = "DFL probability"


def tile_placement(tile_size: float, reference=None) -> dict:
    """The ``scale``/``translate`` (row, col) of a per-tile array over the slide layer.

    ``tile_size`` is the level-0 side of a tile (``TileGrid.tile_size``).

    napari centres pixel ``i`` of a layer on ``translate + i * scale``; level-0 pixel ``j``
    of the slide covers ``[j - 0.5, j + 0.5)``, so tile ``i`` (level-0 ``[i T, (i+1) T)``)
    is centred on ``(i + 0.5) T - 0.5``.
    """
    size = float(tile_size)
    base_scale = np.ones(2) if reference is None else np.asarray(reference.scale[-2:], float)
    base_shift = np.zeros(2) if reference is None else np.asarray(reference.translate[-2:],
                                                                  float)
    scale = base_scale * size
    translate = base_shift + base_scale * (size / 2.0 - 0.5)
    return {"scale": tuple(scale.tolist()), "translate": tuple(translate.tolist())}


def class_lut(classes: list[str], colors: Mapping[str, object]) -> np.ndarray:
    """``(C + 1, 4)`` uint8 RGBA per class-map value + 1: row 0 (no tile) is transparent."""
    lut = np.zeros((len(classes) + 1, 4), dtype=np.uint8)
    for i, name in enumerate(classes):
        lut[i + 1] = np.round(rgba(colors.get(name, "gray")) * 255)
    return lut


class PredictionOverlay:
    """Owns the two overlay layers of one prediction and refreshes them."""

    def __init__(self, viewer, grid: TileGrid, classes: list[str],
                 colors: Mapping[str, object], reference=None, shown_class: int = 0) -> None:
        self.viewer = viewer
        self.prediction = SlidePrediction.empty(grid, classes)
        self.shown_class = int(shown_class)
        self.lut = class_lut(list(classes), colors)
        placement = tile_placement(grid.tile_size, reference)
        for name in (CLASS_MAP_NAME, PROBABILITY_NAME):
            if name in viewer.layers:
                viewer.layers.remove(name)
        self.probability_layer = viewer.add_image(
            np.zeros(grid.grid_shape, dtype=np.float32), name=PROBABILITY_NAME,
            colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.5,
            blending="translucent", **placement)
        self.class_layer = viewer.add_image(
            np.zeros((*grid.grid_shape, 4), dtype=np.uint8), name=CLASS_MAP_NAME, rgb=True,
            opacity=0.5, **placement)
        self.class_layer.metadata["classes"] = list(classes)
        self.probability_layer.metadata["class"] = classes[self.shown_class]

    def reusable(self, grid: TileGrid, classes: list[str]) -> bool:
        """Whether a new prediction of ``grid`` and ``classes`` can refill these layers.

        Auto mode predicts the same tiles again after each retraining: refilling the layers
        in place avoids removing and adding two layers each time (slow under software GL).
        """
        layers = self.viewer.layers
        same_grid = (self.prediction.grid.grid_shape == grid.grid_shape
                     and len(self.prediction.grid) == len(grid)
                     and np.array_equal(self.prediction.grid.coords, grid.coords))
        return (same_grid and list(classes) == self.prediction.classes
                and self.class_layer in layers and self.probability_layer in layers)

    def recolor(self, colors: Mapping[str, object]) -> None:
        """Colour the class map with the classes' current colours."""
        self.lut = class_lut(self.prediction.classes, colors)
        self.refresh()

    def update(self, coords: np.ndarray, proba: np.ndarray) -> None:
        """Record predictions of tiles (level-0 anchors) and refresh both layers."""
        self.prediction.update(coords, proba)
        self.refresh()

    def refresh(self) -> None:
        """Push the prediction's current state into the layers."""
        self.class_layer.data = self.lut[self.prediction.class_map().astype(np.int64) + 1]
        heat = np.nan_to_num(self.prediction.probability_map(self.shown_class), nan=0.0)
        self.probability_layer.data = heat

    def show_class(self, index: int) -> None:
        """Show the probability of another class in the heatmap."""
        self.shown_class = int(index)
        self.probability_layer.metadata["class"] = self.prediction.classes[self.shown_class]
        self.refresh()

    @property
    def n_predicted(self) -> int:
        """Tiles predicted so far."""
        return int(self.prediction.predicted.sum())
