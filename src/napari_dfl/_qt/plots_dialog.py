"""A window with a trained head's validation figure.

The confusion matrix, PR curves and learning curve: the same ``validation.png`` that
``napari-dfl train`` writes beside a head.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import QDialog, QLabel, QScrollArea, QVBoxLayout, QWidget

from napari_dfl.core.heads.plots import save_report_plots

__all__ = ["MAX_WIDTH", "has_plots", "show_head_plots"]

#: The figure is scaled down to at most this many pixels wide.
MAX_WIDTH = 1400


def has_plots(head) -> bool:
    """Whether the head has a validation to draw (a head without a split has none)."""
    return head is not None and bool(getattr(head, "metrics", None))


def show_head_plots(parent: QWidget, head) -> QDialog:
    """Draw the head's validation figure and show it in a non-modal window.

    Args:
        parent: the window's parent (the panel).
        head: a :class:`~napari_dfl.core.heads.model.TrainedHead` with metrics.

    Returns:
        The window (shown).

    """
    validation = head.validation or {}
    with tempfile.TemporaryDirectory(prefix="dfl-plots-") as folder:
        path = save_report_plots(head.metrics, validation.get("proba"),
                                 validation.get("y_true", np.empty(0, np.int64)),
                                 head.classes, Path(folder) / "validation.png",
                                 history=head.history)
        pixmap = QPixmap(str(path))
    if pixmap.width() > MAX_WIDTH:
        pixmap = pixmap.scaledToWidth(MAX_WIDTH, Qt.TransformationMode.SmoothTransformation)
    dialog = QDialog(parent)
    dialog.setWindowTitle("Validation of the head (held-out split)")
    image = QLabel()
    image.setPixmap(pixmap)
    scroll = QScrollArea()
    scroll.setWidget(image)
    layout = QVBoxLayout(dialog)
    n = head.data_summary.get("n_val") if head.data_summary else None
    note = QLabel(f"Validation split of {n} samples, held out from training by region; the "
                  "panel's headline figure is the grouped cross-validation above."
                  if n else "The head's validation split.")
    note.setWordWrap(True)
    layout.addWidget(note)
    layout.addWidget(scroll)
    dialog.resize(min(pixmap.width() + 40, MAX_WIDTH + 40), pixmap.height() + 90)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog
