"""The explorer window's dock: colouring, clusters, legend, selection, gallery, hover.

From top to bottom: *colour by* and the number of clusters (k-means), the legend of the
colouring (:mod:`napari_dfl._qt.explorer_legend`), what is selected, *Label selection with
the active class*, *Show embedding colours on the slide*, the examples of the selection
(:mod:`napari_dfl._qt.explorer_gallery`) and the patch under the pointer. The widgets only
forward to the :class:`~napari_dfl._qt.explorer.Explorer`; it holds the state.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_dfl._qt.explorer_gallery import Gallery, rgb_pixmap
from napari_dfl._qt.explorer_legend import Legend
from napari_dfl.core.explorer.clusters import DEFAULT_K, MAX_K

__all__ = ["CLUSTER_MODE", "COLOR_MODES", "PATCH_VIEW_SIZE", "ExplorerControls"]

CLUSTER_MODE = "cluster"
COLOR_MODES = ("prediction", "class", "confidence", "slide", CLUSTER_MODE, "PCA colours")
#: Side of the hovered patch's view, in pixels.
PATCH_VIEW_SIZE = 160


class ExplorerControls(QWidget):
    """The dock of one explorer (see the module docstring)."""

    def __init__(self, explorer) -> None:
        super().__init__()
        self.explorer = explorer
        self.mode = QComboBox()
        self.mode.addItems(COLOR_MODES)
        self.mode.setToolTip("What the colours of the points show")
        self.k_spin = QSpinBox()
        self.k_spin.setRange(2, MAX_K)
        self.k_spin.setValue(DEFAULT_K)
        self.k_spin.setToolTip("Number of clusters of k-means on the embeddings (colour by "
                               "cluster); seeded, so the same tiles give the same clusters")
        self.legend = Legend(explorer.pick, explorer.label_category)
        self.info = QLabel()
        self.info.setWordWrap(True)
        self.label_button = QPushButton("Label selection with the active class")
        self.label_button.setToolTip("Make the selected tiles point annotations of the active "
                                     "class (keys 1-9 in the main window pick it)")
        self.colours_button = QPushButton("Show embedding colours on the slide")
        self.gallery = Gallery(lambda index: explorer.centre_slide_on(index, select=False))
        self.patch_view = QLabel("Hover a point to see its patch.")
        self.patch_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.patch_view.setMinimumSize(PATCH_VIEW_SIZE, PATCH_VIEW_SIZE)
        self._lay_out()
        self.mode.currentTextChanged.connect(explorer.color_by)
        self.k_spin.valueChanged.connect(explorer.set_k)
        self.label_button.clicked.connect(explorer.label_selection)
        self.colours_button.clicked.connect(explorer.false_colour_layer)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("colour by", self.mode)
        form.addRow("clusters (k)", self.k_spin)
        legend_box = QGroupBox("Legend (click a row to select its tiles)")
        QVBoxLayout(legend_box).addWidget(self.legend)
        examples_box = QGroupBox("Examples")
        QVBoxLayout(examples_box).addWidget(self.gallery)
        hover_box = QGroupBox("Under the pointer")
        QVBoxLayout(hover_box).addWidget(self.patch_view)
        content = QWidget()
        inner = QVBoxLayout(content)
        inner.addLayout(form)
        for widget in (legend_box, self.info, self.label_button, self.colours_button,
                       examples_box, hover_box):
            inner.addWidget(widget)
        inner.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content.setMinimumWidth(content.sizeHint().width())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

    def set_active_class(self, name: str | None) -> None:
        """Say which class *Label* gives."""
        self.label_button.setText(f"Label selection as {name}" if name else
                                  "Label selection with the active class")

    def show_patch(self, patch: np.ndarray | None, index: int) -> None:
        """Show a tile's patch (or a note when it cannot be read)."""
        if patch is None:
            self.patch_view.setText(f"tile {index}")
            return
        self.patch_view.setPixmap(rgb_pixmap(patch).scaled(
            PATCH_VIEW_SIZE, PATCH_VIEW_SIZE, Qt.AspectRatioMode.KeepAspectRatio))
