"""The explorer's gallery: example patches of the selected tiles or of a picked cluster.

A grid of thumbnails (each the tile's first patch as the backbone saw it, shrunk only when
larger than :data:`napari_dfl.core.explorer.gallery.THUMB_MAX`) under a caption that says
what they are examples of. Clicking a thumbnail centres the slide on its tile (the
selection stays).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QLabel, QVBoxLayout, QWidget

__all__ = ["COLUMNS", "Gallery", "Thumbnail", "pixmap_rgb", "rgb_pixmap"]

#: Thumbnails per row.
COLUMNS = 3


def rgb_pixmap(rgb: np.ndarray) -> QPixmap:
    """A pixmap of an ``(h, w, 3)`` uint8 array, pixel for pixel."""
    rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    h, w = rgb.shape[:2]
    return QPixmap.fromImage(QImage(rgb.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy())


def pixmap_rgb(pixmap: QPixmap) -> np.ndarray:
    """The ``(h, w, 3)`` uint8 pixels a pixmap shows (the inverse of :func:`rgb_pixmap`)."""
    image = pixmap.toImage().convertToFormat(QImage.Format.Format_RGB888)
    h, w, stride = image.height(), image.width(), image.bytesPerLine()
    bits = image.constBits()
    if hasattr(bits, "setsize"):  # PyQt's sip.voidptr; PySide gives a memoryview
        bits.setsize(h * stride)
    data = np.frombuffer(bits, dtype=np.uint8, count=h * stride)
    return data.reshape(h, stride)[:, :3 * w].reshape(h, w, 3).copy()


class Thumbnail(QLabel):
    """One example: its patch, and the tile it shows (a click centres the slide on it)."""

    def __init__(self, index: int, rgb: np.ndarray | None,
                 clicked: Callable[[int], None]) -> None:
        super().__init__()
        self.index, self._clicked = int(index), clicked
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setToolTip(f"tile {self.index}: click to see it on the slide")
        if rgb is None:
            self.setText(f"tile {self.index}\n(unreadable)")
        else:
            self.setPixmap(rgb_pixmap(rgb))

    def mousePressEvent(self, event) -> None:
        """Centre the slide on this tile."""
        self._clicked(self.index)
        super().mousePressEvent(event)


class Gallery(QWidget):
    """The gallery (see the module docstring); ``clicked`` gets a thumbnail's tile index."""

    def __init__(self, clicked: Callable[[int], None]) -> None:
        super().__init__()
        self._clicked = clicked
        self.caption = QLabel()
        self.caption.setWordWrap(True)
        self._grid_widget = QWidget()
        self._grid = QGridLayout(self._grid_widget)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setSpacing(3)
        self.thumbnails: list[Thumbnail] = []
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self._grid_widget)
        self.show_text("Select tiles (a lasso, a region on the slide or a legend row) to "
                       "see examples.")

    @property
    def indices(self) -> list[int]:
        """The tiles shown, in order."""
        return [thumb.index for thumb in self.thumbnails]

    def show_examples(self, indices: Sequence[int], patches: Sequence[np.ndarray | None],
                      caption: str) -> None:
        """Show the thumbnails of tiles ``indices`` (``patches``: their pixels or None)."""
        self._clear()
        self.caption.setText(caption)
        for i, (index, rgb) in enumerate(zip(indices, patches, strict=True)):
            thumb = Thumbnail(int(index), rgb, self._clicked)
            self._grid.addWidget(thumb, i // COLUMNS, i % COLUMNS)
            self.thumbnails.append(thumb)

    def show_text(self, text: str) -> None:
        """Show a sentence instead of thumbnails."""
        self._clear()
        self.caption.setText(text)

    def _clear(self) -> None:
        for thumb in self.thumbnails:
            self._grid.removeWidget(thumb)
            thumb.deleteLater()
        self.thumbnails = []
