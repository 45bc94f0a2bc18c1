"""Windows with figures drawn by the core: a head's validation, a slide model's CV.

A head's figure is the confusion matrix, PR curves and learning curve (the
``validation.png`` that ``napari-dfl train`` writes beside a head); a slide model's, what
``train-slides`` writes beside it (:func:`napari_dfl.workflows.slide_level.draw_cv_figure`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QPixmap
from qtpy.QtWidgets import QDialog, QLabel, QScrollArea, QVBoxLayout, QWidget

from napari_dfl.core.heads.plots import save_report_plots

__all__ = ["MAX_WIDTH", "has_plots", "show_figure", "show_head_plots"]

#: The figure is scaled down to at most this many pixels wide.
MAX_WIDTH = 1400


def has_plots(head) -> bool:
    """Whether the head has a validation to draw (a head without a split has none)."""
    return head is not None and bool(getattr(head, "metrics", None))


def show_figure(parent: QWidget, title: str, note: str,
                draw: Callable[[Path], Path | None]) -> QDialog | None:
    """Draw a figure with ``draw(path)`` into a temporary PNG and show it in a window.

    Args:
        parent: the window's parent (the panel).
        title: the window's title.
        note: a line above the figure (what it rests on).
        draw: writes the PNG at the path it is given and returns it (None: nothing to show).

    Returns:
        The window (shown, non-modal), or None when there was nothing to draw.

    """
    with tempfile.TemporaryDirectory(prefix="dfl-plots-") as folder:
        path = draw(Path(folder) / "figure.png")
        if path is None:
            return None
        pixmap = QPixmap(str(path))
    if pixmap.width() > MAX_WIDTH:
        pixmap = pixmap.scaledToWidth(MAX_WIDTH, Qt.TransformationMode.SmoothTransformation)
    dialog = QDialog(parent)
    dialog.setWindowTitle(title)
    image = QLabel()
    image.setPixmap(pixmap)
    scroll = QScrollArea()
    scroll.setWidget(image)
    layout = QVBoxLayout(dialog)
    label = QLabel(note)
    label.setWordWrap(True)
    layout.addWidget(label)
    layout.addWidget(scroll)
    dialog.resize(min(pixmap.width() + 40, MAX_WIDTH + 40), pixmap.height() + 90)
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    dialog.show()
    return dialog


def show_head_plots(parent: QWidget, head) -> QDialog | None:
    """The head's validation figure (confusion matrix, PR curves, learning curve).

    Args:
        parent: the window's parent (the panel).
        head: a :class:`~napari_dfl.core.heads.model.TrainedHead` with metrics.

    Returns:
        The window (shown).

    """
    validation = head.validation or {}

    def draw(path: Path) -> Path:
        return save_report_plots(head.metrics, validation.get("proba"),
                                 validation.get("y_true", np.empty(0, np.int64)),
                                 head.classes, path, history=head.history)

    n = head.data_summary.get("n_val") if head.data_summary else None
    note = (f"Validation split of {n} samples, held out from training by region; the "
            "panel's headline figure is the grouped cross-validation above."
            if n else "The head's validation split.")
    return show_figure(parent, "Validation of the head (held-out split)", note, draw)
