"""Prediction overlays: a class map (Labels) and a probability heatmap (Image).

Both hold one value per tile of the working grid, a small array placed on the slide with
``scale`` = tile size and ``translate``, never upsampled to the slide's size. They fill in
as tiles are predicted.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from napari_dfl._qt.layers import rgba
from napari_dfl.core.predict import SlidePrediction
from napari_dfl.core.tissue import TileGrid

CLASS_MAP_NAME = "DFL class map"
PROBABILITY_NAME = "DFL probability"


def tile_placement(grid: TileGrid, reference=None) -> dict:
    """The ``scale``/``translate`` (row, col) of a per-tile array over the slide layer.

    napari centres pixel ``i`` of a layer on ``translate + i * scale``; level-0 pixel ``j``
    of the slide covers ``[j - 0.5, j + 0.5)``, so tile ``i`` (level-0 ``[i T, (i+1) T)``)
    is centred on ``(i + 0.5) T - 0.5``.
    """
    size = float(grid.tile_size)
    base_scale = np.ones(2) if reference is None else np.asarray(reference.scale[-2:], float)
    base_shift = np.zeros(2) if reference is None else np.asarray(reference.translate[-2:],
                                                                  float)
    scale = base_scale * size
    translate = base_shift + base_scale * (size / 2.0 - 0.5)
    return {"scale": tuple(scale.tolist()), "translate": tuple(translate.tolist())}


def _color_dict(classes: list[str], colors: Mapping[str, object]) -> dict:
    """Label value -> RGBA of the class map: 0 (no tile) transparent, class i at i + 1."""
    color_dict = {None: np.zeros(4), 0: np.zeros(4)}
    for i, name in enumerate(classes):
        color_dict[i + 1] = rgba(colors.get(name, "gray"))
    return color_dict


class PredictionOverlay:
    """Owns the two overlay layers of one prediction and refreshes them."""

    def __init__(self, viewer, grid: TileGrid, classes: list[str],
                 colors: Mapping[str, object], reference=None, shown_class: int = 0) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        self.viewer = viewer
        self.prediction = SlidePrediction.empty(grid, classes)
        self.shown_class = int(shown_class)
        placement = tile_placement(grid, reference)
        color_dict = _color_dict(classes, colors)
        for name in (CLASS_MAP_NAME, PROBABILITY_NAME):
            if name in viewer.layers:
                viewer.layers.remove(name)
        self.probability_layer = viewer.add_image(
            np.zeros(grid.grid_shape, dtype=np.float32), name=PROBABILITY_NAME,
            colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.5,
            blending="translucent", **placement)
        self.class_layer = viewer.add_labels(
            np.zeros(grid.grid_shape, dtype=np.int32), name=CLASS_MAP_NAME, opacity=0.5,
            colormap=DirectLabelColormap(color_dict=color_dict), **placement)
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
        from napari.utils.colormaps import DirectLabelColormap

        self.class_layer.colormap = DirectLabelColormap(
            color_dict=_color_dict(self.prediction.classes, colors))

    def update(self, coords: np.ndarray, proba: np.ndarray) -> None:
        """Record predictions of tiles (level-0 anchors) and refresh both layers."""
        self.prediction.update(coords, proba)
        self.refresh()

    def refresh(self) -> None:
        """Push the prediction's current state into the layers."""
        self.class_layer.data = (self.prediction.class_map().astype(np.int32) + 1)
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
