"""Prediction overlays: a class map (RGBA image) and a probability heatmap (Image).

Both hold one value per tile of the working grid, a small array placed on the slide with
``scale`` = tile size and ``translate``, never upsampled to the slide's size. They follow
the session's prediction and fill in as tiles are predicted. The class map is an RGBA image
coloured through a small lookup table rather than a Labels layer: napari colours Labels
through numba functions compiled on first use, which froze the event loop for about 1.5 s
when the first prediction appeared.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from napari_dfl._qt.annotation_layers import rgba
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.util.palette import UNKNOWN

__all__ = ["CLASS_MAP_NAME", "PROBABILITY_NAME", "PredictionOverlay", "class_lut",
           "tile_placement"]

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
        lut[i + 1] = np.round(rgba(colors.get(name, UNKNOWN)) * 255)
    return lut


class PredictionOverlay:
    """The two overlay layers of the session's prediction (see the module docstring)."""

    def __init__(self, viewer, session, reference=None) -> None:
        self.viewer, self.session, self.reference = viewer, session, reference
        self.prediction: TilePrediction | None = None
        self.class_layer = None
        self.probability_layer = None
        self.shown_class = 0
        self.lut = np.zeros((1, 4), np.uint8)
        session.prediction_started.connect(self._on_started)
        session.prediction_updated.connect(self._on_updated)
        session.prediction_finished.connect(self._on_finished)
        session.classes_changed.connect(self.recolor)

    def disconnect(self) -> None:
        """Stop following the session (the layers stay)."""
        self.session.prediction_started.disconnect(self._on_started)
        self.session.prediction_updated.disconnect(self._on_updated)
        self.session.prediction_finished.disconnect(self._on_finished)
        self.session.classes_changed.disconnect(self.recolor)

    @property
    def n_predicted(self) -> int:
        """Tiles predicted so far."""
        return 0 if self.prediction is None else int(self.prediction.predicted.sum())

    def _reusable(self, prediction: TilePrediction) -> bool:
        """Whether the layers can be refilled in place (auto mode predicts the same tiles).

        Removing and adding two layers after each retraining is slow under software GL.
        """
        old = self.prediction
        layers = self.viewer.layers
        return (old is not None and self.class_layer in layers
                and self.probability_layer in layers
                and old.grid.grid_shape == prediction.grid.grid_shape
                and np.array_equal(old.grid.coords, prediction.grid.coords)
                and old.classes == prediction.classes)

    def _on_started(self, prediction: TilePrediction) -> None:
        reuse = self._reusable(prediction)
        self.prediction = prediction
        self.lut = class_lut(prediction.classes, self.session.colors)
        active = self.session.active
        self.shown_class = prediction.classes.index(active) if active in prediction.classes \
            else 0
        if not reuse:
            self._add_layers(prediction)
        self.refresh()

    def _add_layers(self, prediction: TilePrediction) -> None:
        viewer, grid = self.viewer, prediction.grid
        for name in (CLASS_MAP_NAME, PROBABILITY_NAME):
            if name in viewer.layers:
                viewer.layers.remove(name)
        placement = tile_placement(grid.tile_size, self.reference)
        self.probability_layer = viewer.add_image(
            np.zeros(grid.grid_shape, dtype=np.float32), name=PROBABILITY_NAME,
            colormap="inferno", contrast_limits=(0.0, 1.0), opacity=0.5,
            blending="translucent", **placement)
        self.class_layer = viewer.add_image(
            np.zeros((*grid.grid_shape, 4), dtype=np.uint8), name=CLASS_MAP_NAME, rgb=True,
            opacity=0.5, **placement)
        self.class_layer.metadata["classes"] = list(prediction.classes)
        self.probability_layer.metadata["class"] = prediction.classes[self.shown_class]

    def _on_updated(self, _coords, _proba) -> None:
        self.refresh()

    def _on_finished(self, prediction: TilePrediction) -> None:
        if prediction is not self.prediction:
            self._on_started(prediction)
        self.refresh()

    def recolor(self, *_args) -> None:
        """Colour the class map with the classes' current colours."""
        if self.prediction is not None:
            self.lut = class_lut(self.prediction.classes, self.session.colors)
            self.refresh()

    def refresh(self) -> None:
        """Push the prediction's current state into the layers."""
        prediction = self.prediction
        if prediction is None or self.class_layer is None:
            return
        if self.class_layer in self.viewer.layers:
            self.class_layer.data = self.lut[prediction.class_map().astype(np.int64) + 1]
        if self.probability_layer in self.viewer.layers:
            heat = np.nan_to_num(prediction.probability_map(self.shown_class), nan=0.0)
            self.probability_layer.data = heat

    def show_class(self, index: int) -> None:
        """Show the probability of another class in the heatmap."""
        if self.prediction is None:
            return
        self.shown_class = int(index)
        self.probability_layer.metadata["class"] = self.prediction.classes[self.shown_class]
        self.refresh()
