"""Prediction overlays: a class map and a probability heatmap, one shown at a time.

Both hold one RGBA value per tile of the working grid, a small array placed on the slide
with ``scale`` = tile size and ``translate``, never upsampled to the slide's size, and
transparent where no tile was predicted (glass, the margin past the last whole tile, tiles
still to come): nothing veils the slide but the prediction itself. They follow the session's
prediction and fill in as tiles are predicted, once per turn of the event loop however many
batches arrived in it (:class:`~napari_dfl._qt.next_turn.OncePerTurn`).

One output is visible at a time (:meth:`PredictionOverlay.show`): the class map by default,
or the probability of a chosen class (its name is in the layer's name), or none; stacking
both made colours that match no class. The panel's overlay controls pick it and show the
legend. New layers never take the user's active layer (:func:`keeping_focus`).

Only the output shown has a layer: the heatmap's is added the first time the user picks a
class's probability, and kept from then on. Adding an image layer costs napari 150-200 ms on
the GUI thread here (its layer controls, its vispy visual, the selection's events), so adding
both at once stalled Predict for 300-850 ms (``benchmarks/gui_latency.py``). A new layer is
added hidden and shown on a later turn of the event loop, so that its first draw is a stall
of its own (:func:`~napari_dfl._qt.layer_focus.show_later`).

RGBA images rather than a Labels layer: napari colours Labels through numba functions
compiled on first use, which froze the event loop for about 1.5 s when the first prediction
appeared.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from psygnal import Signal

from napari_dfl._qt.annotation_layers import rgba
from napari_dfl._qt.layer_focus import keeping_focus, show_later
from napari_dfl._qt.next_turn import OncePerTurn
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.util.palette import UNKNOWN

__all__ = [
    "CLASS_MAP",
    "CLASS_MAP_NAME",
    "HEATMAP",
    "NOTHING",
    "PROBABILITY_NAME",
    "PredictionOverlay",
    "class_lut",
    "probability_lut",
    "tile_placement",
]

CLASS_MAP_NAME = "DFL class map"
#: The probability layer's name starts so; the class shown follows, e.g. "DFL probability:
#: tumour".
PROBABILITY_NAME = "DFL probability"
#: What :meth:`PredictionOverlay.show` can show: the class map, a class's probability, none.
CLASS_MAP, HEATMAP, NOTHING = "class map", "probability", "nothing"
#: The heatmap's colour map (perceptually uniform, dark to bright yellow).
HEATMAP_COLORMAP = "inferno"
_LAYER_OPACITY = 0.6


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


def probability_lut(levels: int = 256) -> np.ndarray:
    """``(levels, 4)`` uint8 RGBA of :data:`HEATMAP_COLORMAP` from probability 0 to 1."""
    from napari.utils.colormaps import ensure_colormap

    colours = ensure_colormap(HEATMAP_COLORMAP).map(np.linspace(0.0, 1.0, levels))
    lut = np.round(np.asarray(colours, np.float64) * 255).astype(np.uint8)
    lut[:, 3] = 255
    return lut


def _heat_rgba(probability: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """RGBA of a ``(rows, cols)`` probability map; NaN (no prediction) is transparent."""
    known = np.isfinite(probability)
    index = np.zeros(probability.shape, np.int64)
    index[known] = np.clip(np.round(probability[known] * (len(lut) - 1)), 0, len(lut) - 1)
    image = lut[index]
    image[~known] = 0
    return image


class PredictionOverlay:
    """The two overlay layers of the session's prediction (see the module docstring).

    Attributes:
        shown: :data:`CLASS_MAP`, :data:`HEATMAP` or :data:`NOTHING`.
        shown_class: index of the class whose probability the heatmap shows.
        changed: emitted when the output shown, its class or its colours change (the legend
            follows it).

    """

    changed = Signal()

    def __init__(self, viewer, session, reference=None) -> None:
        self.viewer, self.session, self.reference = viewer, session, reference
        self.prediction: TilePrediction | None = None
        self.class_layer = None
        self.probability_layer = None
        self.shown = CLASS_MAP
        self.shown_class = 0
        self.lut = np.zeros((1, 4), np.uint8)
        self.heat_lut = probability_lut()
        self._revealing = False  # a layer was just added hidden; it is shown on a later turn
        self._refresh_soon = OncePerTurn(self.refresh)
        session.prediction_started.connect(self._on_started)
        session.prediction_updated.connect(self._on_updated)
        session.prediction_finished.connect(self._on_finished)
        session.classes_changed.connect(self.recolor)
        session.class_removed.connect(self._on_class_removed)

    def disconnect(self) -> None:
        """Stop following the session (the layers stay)."""
        self.session.prediction_started.disconnect(self._on_started)
        self.session.prediction_updated.disconnect(self._on_updated)
        self.session.prediction_finished.disconnect(self._on_finished)
        self.session.classes_changed.disconnect(self.recolor)
        self.session.class_removed.disconnect(self._on_class_removed)

    @property
    def n_predicted(self) -> int:
        """Tiles predicted so far."""
        return 0 if self.prediction is None else int(self.prediction.predicted.sum())

    @property
    def shown_class_name(self) -> str | None:
        """The class whose probability the heatmap shows (None before a prediction)."""
        if self.prediction is None:
            return None
        return self.prediction.classes[self.shown_class]

    def _layers(self) -> list:
        """The overlay layers made so far (one, or both once the heatmap was shown)."""
        return [layer for layer in (self.class_layer, self.probability_layer)
                if layer is not None]

    def _reusable(self, prediction: TilePrediction) -> bool:
        """Whether the layers can be refilled in place (auto mode predicts the same tiles).

        Removing and adding layers after each retraining is slow under software GL.
        """
        old = self.prediction
        layers = self.viewer.layers
        return (old is not None and all(layer in layers for layer in self._layers())
                and old.grid.grid_shape == prediction.grid.grid_shape
                and np.array_equal(old.grid.coords, prediction.grid.coords)
                and old.classes == prediction.classes)

    def _on_started(self, prediction: TilePrediction) -> None:
        reuse = self._reusable(prediction)
        self.prediction = prediction
        self.lut = class_lut(prediction.classes, self.session.colors)
        if not reuse:
            active = self.session.active
            self.shown_class = prediction.classes.index(active) \
                if active in prediction.classes else 0
            with keeping_focus(self.viewer):
                self.remove_layers()
            self.class_layer = self.probability_layer = None
        self._add_shown_layer()
        self.refresh()
        self._apply_visibility()
        self.changed.emit()

    def _add_shown_layer(self) -> None:
        """Add the layer of the output shown when it has none yet (see the module docstring)."""
        prediction, layers = self.prediction, self.viewer.layers
        if prediction is None or self.shown == NOTHING:
            return
        if self.shown == CLASS_MAP and self.class_layer not in layers:
            self.class_layer = self._add_layer(prediction, CLASS_MAP_NAME)
            self.class_layer.metadata["classes"] = list(prediction.classes)
        elif self.shown == HEATMAP and self.probability_layer not in layers:
            self.probability_layer = self._add_layer(prediction, self._heat_name())
            self.probability_layer.metadata["class"] = self.shown_class_name

    def _add_layer(self, prediction: TilePrediction, name: str):
        """One transparent RGBA layer of the working grid, placed over the slide.

        It is added hidden and shown by :meth:`_reveal` on a later turn of the event loop.
        """
        grid = prediction.grid
        blank = np.zeros((*grid.grid_shape, 4), dtype=np.uint8)
        with keeping_focus(self.viewer):  # the user keeps annotating on their layer
            layer = self.viewer.add_image(
                blank, name=name, rgb=True, opacity=_LAYER_OPACITY, visible=False,
                **tile_placement(grid.tile_size, self.reference))
        self._revealing = True
        show_later(self._reveal)
        return layer

    def _reveal(self) -> None:
        """Show what is to be shown, now that the layer added hidden had a turn of its own."""
        if self._revealing:
            self._revealing = False
            self._apply_visibility()

    def remove_layers(self) -> None:
        """Remove the overlay layers (and stale ones of an earlier panel) from the viewer."""
        layers = self.viewer.layers
        for layer in list(layers):
            if layer.name == CLASS_MAP_NAME or layer.name.startswith(PROBABILITY_NAME):
                layers.remove(layer)

    def _heat_name(self) -> str:
        return f"{PROBABILITY_NAME}: {self.shown_class_name}"

    def _on_updated(self, _coords, _proba) -> None:
        self._refresh_soon()

    def _on_finished(self, prediction: TilePrediction) -> None:
        if prediction is not self.prediction:
            self._on_started(prediction)
        self.refresh()
        self.changed.emit()  # the legend's tile counts

    def _on_class_removed(self, name: str) -> None:
        """A deleted class's prediction is gone: its layers go with it."""
        if self.prediction is not None and name in self.prediction.classes:
            self.clear()

    def clear(self) -> None:
        """Forget the prediction and remove its layers."""
        self.prediction = None
        self.remove_layers()
        self.class_layer = self.probability_layer = None
        self.changed.emit()

    def recolor(self, *_args) -> None:
        """Colour the class map with the classes' current colours."""
        if self.prediction is not None:
            self.lut = class_lut(self.prediction.classes, self.session.colors)
            self.refresh()
            self.changed.emit()

    def refresh(self) -> None:
        """Push the prediction's current state into the layers."""
        prediction = self.prediction
        if prediction is None:
            return
        if self.class_layer in self.viewer.layers:
            self.class_layer.data = self.lut[prediction.class_map().astype(np.int64) + 1]
        if self.probability_layer in self.viewer.layers:
            self.probability_layer.data = _heat_rgba(
                prediction.probability_map(self.shown_class), self.heat_lut)

    def show(self, what: str, class_name: str | None = None) -> None:
        """Show the class map, the probability of ``class_name`` (or the current one), or none.

        Args:
            what: :data:`CLASS_MAP`, :data:`HEATMAP` or :data:`NOTHING`.
            class_name: for :data:`HEATMAP`, the class whose probability to show.

        """
        if what not in (CLASS_MAP, HEATMAP, NOTHING):
            raise ValueError(f"show {CLASS_MAP!r}, {HEATMAP!r} or {NOTHING!r}, not {what!r}")
        self.shown = what
        if what == HEATMAP and class_name is not None and self.prediction is not None \
                and class_name in self.prediction.classes:
            self.shown_class = self.prediction.classes.index(class_name)
            if self.probability_layer in self.viewer.layers:
                self.probability_layer.name = self._heat_name()
                self.probability_layer.metadata["class"] = class_name
        self._add_shown_layer()
        self.refresh()
        self._apply_visibility()
        self.changed.emit()

    def _apply_visibility(self) -> None:
        """Show the output chosen and hide the other.

        Only the output shown gets a new layer: while one waits for its turn, nothing is shown.
        """
        layers = self.viewer.layers
        for layer, shown in ((self.class_layer, self.shown == CLASS_MAP),
                             (self.probability_layer, self.shown == HEATMAP)):
            if layer in layers:
                layer.visible = shown and not self._revealing
