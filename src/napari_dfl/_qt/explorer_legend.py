"""The legend of the explorer's colouring, in its dock.

Categorical colourings (prediction, class, slide, cluster) list one row per category: a
coloured square, the name and the number of tiles. Clicking a row picks the category
(its tiles are selected in both views); cluster rows also carry a *Label* button that
labels the whole cluster with the active class. A continuous colouring (confidence) shows
a colour bar with the ends of its scale and the range of the tiles' values.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QIcon, QImage, QPixmap
from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_dfl.core.explorer.colours import value_colors
from napari_dfl.core.explorer.legend import Colouring, LegendEntry

__all__ = ["BAR_SIZE", "Legend", "LegendRow", "swatch"]

#: Width and height of the colour bar, in pixels.
BAR_SIZE = (220, 14)


def swatch(rgb: tuple[float, float, float], side: int = 14) -> QPixmap:
    """A square of colour ``rgb`` (floats in [0, 1])."""
    pixmap = QPixmap(side, side)
    pixmap.fill(QColor(*(round(float(c) * 255) for c in rgb[:3])))
    return pixmap


def _bar_pixmap(colormap: str) -> QPixmap:
    width, height = BAR_SIZE
    line = np.round(value_colors(np.linspace(0.0, 1.0, width), colormap) * 255).astype(np.uint8)
    image = np.ascontiguousarray(np.repeat(line[None], height, axis=0))
    qimage = QImage(image.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(qimage)


def _number(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:,.0f}"


class LegendRow(QWidget):
    """One category: a button (square and name) that picks it, its count, maybe *Label*."""

    def __init__(self, entry: LegendEntry, pick: Callable[[int], None],
                 label: Callable[[int], None] | None) -> None:
        super().__init__()
        self.entry = entry
        self.pick_button = QPushButton(QIcon(swatch(entry.rgb)), entry.name)
        self.pick_button.setFlat(True)
        self.pick_button.setStyleSheet("text-align: left; padding: 1px 4px;")
        self.pick_button.setToolTip(f"Select the {entry.count:,} tiles of {entry.name}")
        self.pick_button.clicked.connect(lambda _checked=False: pick(entry.code))
        self.count_label = QLabel(f"{entry.count:,}")
        self.count_label.setAlignment(Qt.AlignmentFlag.AlignRight |
                                      Qt.AlignmentFlag.AlignVCenter)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pick_button, 1)
        layout.addWidget(self.count_label)
        self.label_button: QPushButton | None = None
        if label is not None:
            self.label_button = QPushButton("Label")
            self.label_button.setToolTip(f"Label the {entry.count:,} tiles of {entry.name} "
                                         "with the active class")
            self.label_button.clicked.connect(lambda _checked=False: label(entry.code))
            layout.addWidget(self.label_button)


class Legend(QWidget):
    """The legend (see the module docstring).

    Args:
        pick: called with a category's code when its row is clicked.
        label: called with a category's code when its *Label* button is clicked.

    """

    def __init__(self, pick: Callable[[int], None], label: Callable[[int], None]) -> None:
        super().__init__()
        self._pick, self._label = pick, label
        self.colouring: Colouring | None = None
        self.rows: list[LegendRow] = []
        self.title = QLabel()
        self.title.setWordWrap(True)
        self._rows_widget = QWidget()
        self._rows_layout = QVBoxLayout(self._rows_widget)
        self._rows_layout.setContentsMargins(0, 0, 0, 0)
        self._rows_layout.setSpacing(0)
        self.bar = QLabel()
        self.bar_low, self.bar_high = QLabel(), QLabel()
        self.bar_high.setAlignment(Qt.AlignmentFlag.AlignRight)
        ends = QHBoxLayout()
        ends.addWidget(self.bar_low)
        ends.addWidget(self.bar_high)
        self._bar_box = QWidget()
        bar_layout = QVBoxLayout(self._bar_box)
        bar_layout.setContentsMargins(0, 0, 0, 0)
        bar_layout.addWidget(self.bar)
        bar_layout.addLayout(ends)
        self.bar.setFixedWidth(BAR_SIZE[0])
        self._bar_box.setFixedWidth(BAR_SIZE[0])
        self.note = QLabel()
        self.note.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.title, self._rows_widget, self._bar_box, self.note):
            layout.addWidget(widget)
        self.show_text("")

    def show_colouring(self, colouring: Colouring, labellable: bool = False) -> None:
        """Show the legend of ``colouring``; rows get a *Label* button if ``labellable``."""
        self.colouring = colouring
        self._clear_rows()
        self.title.setText(f"<b>{colouring.title}</b> · {len(colouring):,} tiles")
        for entry in colouring.entries:
            row = LegendRow(entry, self._pick, self._label if labellable else None)
            self._rows_layout.addWidget(row)
            self.rows.append(row)
        self._rows_widget.setVisible(bool(self.rows))
        continuous = colouring.colormap is not None
        self._bar_box.setVisible(continuous)
        if continuous:
            self.bar.setPixmap(_bar_pixmap(colouring.colormap))
            lo, hi = colouring.domain
            self.bar_low.setText(_number(lo))
            self.bar_high.setText(_number(hi))
        note = colouring.note
        if continuous and colouring.value_range is not None:
            low, high = colouring.value_range
            note = f"tiles from {_number(low)} to {_number(high)}" + (f"; {note}" if note
                                                                        else "")
        self.note.setText(note)
        self.note.setVisible(bool(note))

    def show_text(self, text: str) -> None:
        """Show only a sentence (a colouring being computed, or none possible)."""
        self.colouring = None
        self._clear_rows()
        self.title.setText(text)
        for widget in (self._rows_widget, self._bar_box, self.note):
            widget.setVisible(False)

    def _clear_rows(self) -> None:
        for row in self.rows:
            self._rows_layout.removeWidget(row)
            row.deleteLater()
        self.rows = []
