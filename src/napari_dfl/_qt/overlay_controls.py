"""What the prediction overlay shows, and its legend.

A "Show" choice (the class map, the probability of one class, or nothing: one output at a
time) and a legend under it: each class's colour with its count of predicted tiles, or the
heatmap's colour bar with the class it is for. Transparent cells are tiles with no
prediction (glass below the tissue threshold, the margin past the last whole tile).
"""

from __future__ import annotations

from html import escape

import numpy as np
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_dfl._qt.overlays import CLASS_MAP, HEATMAP, NOTHING, PredictionOverlay

__all__ = ["OverlayControls", "legend_html"]

_BAR_SIZE = (160, 12)


def legend_html(overlay: PredictionOverlay) -> str:
    """The legend of what ``overlay`` shows, as rich text ("" before a prediction)."""
    prediction = overlay.prediction
    if prediction is None:
        return ""
    done, total = overlay.n_predicted, len(prediction.grid)
    progress = f"{done} of {total} tiles predicted" + ("" if done == total else " so far")
    if overlay.shown == NOTHING:
        return f"Overlays hidden; {progress}."
    if overlay.shown == HEATMAP:
        name = escape(str(overlay.shown_class_name))
        return (f"Probability of <b>{name}</b> per tile, 0 (dark) to 1 (yellow); "
                f"{progress}; transparent: not predicted.")
    counts = prediction.counts()
    colours = overlay.session.colors
    rows = [f"<span style='color:{colours.get(c, '#808080')}'>&#9632;</span> "
            f"{escape(c)}: {counts[c]} tiles" for c in prediction.classes]
    return "<br>".join([*rows, f"{progress}; transparent: not predicted."])


def _colour_bar(lut: np.ndarray) -> QPixmap:
    width, height = _BAR_SIZE
    index = np.linspace(0, len(lut) - 1, width).round().astype(int)
    pixels = np.ascontiguousarray(np.repeat(lut[index][None, :, :], height, axis=0))
    image = QImage(pixels.data, width, height, 4 * width, QImage.Format.Format_RGBA8888)
    return QPixmap.fromImage(image.copy())


class OverlayControls(QWidget):
    """The "Show" combo box and the legend of a :class:`PredictionOverlay`."""

    def __init__(self, overlay: PredictionOverlay, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.overlay = overlay
        self.combo = QComboBox()
        self.combo.setToolTip("One output at a time: the class map, one class's probability, "
                              "or none (the layers stay in the layer list)")
        self.colour_bar = QLabel()
        self.colour_bar.setPixmap(_colour_bar(overlay.heat_lut))
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show:"))
        row.addWidget(self.combo, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.colour_bar)
        layout.addWidget(self.legend)
        self.combo.activated.connect(self._on_chosen)
        overlay.changed.connect(self.redraw)
        self.redraw()

    def choices(self) -> list[str]:
        """The combo box's entries."""
        return [self.combo.itemText(i) for i in range(self.combo.count())]

    def choose(self, text: str) -> None:
        """Pick an entry by its text, as a user would."""
        index = self.choices().index(text)
        self.combo.setCurrentIndex(index)
        self._on_chosen(index)

    def redraw(self) -> None:
        """Follow the overlay: entries for its classes, the current choice, the legend."""
        overlay, prediction = self.overlay, self.overlay.prediction
        self.setVisible(prediction is not None)
        entries = [("Class map", (CLASS_MAP, None))]
        if prediction is not None:
            entries += [(f"Probability: {c}", (HEATMAP, c)) for c in prediction.classes]
        entries.append(("Nothing", (NOTHING, None)))
        current = (overlay.shown, overlay.shown_class_name if overlay.shown == HEATMAP
                   else None)
        self.combo.blockSignals(True)
        self.combo.clear()
        for text, data in entries:
            self.combo.addItem(text, data)
        self.combo.setCurrentIndex(next(
            (i for i, (_, data) in enumerate(entries) if data == current), 0))
        self.combo.blockSignals(False)
        self.colour_bar.setVisible(overlay.shown == HEATMAP)
        self.legend.setText(legend_html(overlay))

    def _on_chosen(self, index: int) -> None:
        what, name = self.combo.itemData(index)
        self.overlay.show(what, name)
