"""The "Slide-level model" section: load a slide model, predict the open slide with it.

Thin Qt over :func:`napari_dfl.workflows.slide_level.predict_open_slide`, run as a job of the
panel's session: tiles the slide's store lacks are embedded in the extraction child, never
in this process. The result is an attention heatmap (one value per tile) and a row of the
session's table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QFileDialog,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dfl._qt.overlays import tile_placement
from napari_dfl.core.errors import DFLError, one_line
from napari_dfl.core.slide_level.prediction import SlideLabelPrediction, extractor_problem
from napari_dfl.workflows.slide_level import predict_open_slide

if TYPE_CHECKING:  # torch: imported by the jobs that need it, not when the panel opens
    from napari_dfl.core.slide_level.model import SlideModel

__all__ = ["ATTENTION_NAME", "SlideModelSection", "model_summary"]

ATTENTION_NAME = "DFL attention"


def model_summary(model: SlideModel) -> str:
    """Classes, extractor, training cohort, cross-validation and early stopping, in lines."""
    lines = [f"Classes: {', '.join(model.classes)}"]
    if model.extractor is not None:
        lines.append(model.extractor.describe())
    summary = model.summary or {}
    if summary:
        lines.append(f"Trained on {summary.get('n_slides')} slides "
                     f"({summary.get('n_groups')} groups)")
    auc = (model.metrics or {}).get("auc")
    if auc is not None:
        lines.append(f"Cross-validated AUC {auc:.3f} ({model.metrics.get('n_folds')} folds)")
    stop = model.early_stopping or {}
    if stop.get("validation"):
        lines.append(f"Early stopping: best epoch {stop['best_epoch']} of "
                     f"{stop['epochs_run']}")
    return "\n".join(lines)


class SlideModelSection(QWidget):
    """Load a slide model, predict the open slide, show attention and a per-slide table.

    Args:
        viewer: the napari viewer (the attention layer goes there).
        session: the panel's session (slide, settings, jobs).
        reference_of: returns the slide layer (placement of the attention layer).

    """

    def __init__(self, viewer, session, reference_of, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self._reference_of = viewer, session, reference_of
        self.model: SlideModel | None = None
        self.result: SlideLabelPrediction | None = None
        self.load_button = QPushButton("Load slide model…")
        self.predict_button = QPushButton("Predict this slide")
        self.predict_button.setEnabled(False)
        self.info = QLabel("No slide model: train one with napari-dfl train-slides.")
        self.info.setWordWrap(True)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["slide", "prediction"])
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        layout = QVBoxLayout(self)
        for widget in (self.load_button, self.info, self.predict_button, self.table):
            layout.addWidget(widget)
        self.load_button.clicked.connect(self._choose)
        self.predict_button.clicked.connect(self.predict_slide)
        session.job_changed.connect(lambda job: self._on_busy(job is not None))

    def _choose(self) -> None:  # pragma: no cover - interactive
        path = QFileDialog.getExistingDirectory(self, "Slide model folder (train-slides --out)")
        if path:
            self.load(path)

    def load(self, path) -> bool:
        """Load the slide model folder ``path``; a bad folder is reported, never raised."""
        from napari_dfl.core.slide_level.model_files import load_slide_model  # torch

        try:
            model = load_slide_model(path)
        except (DFLError, OSError) as exc:
            self.session.tell("error", f"Load slide model: {one_line(exc)}")
            return False
        if self.model is None or model.classes != self.model.classes:
            self.table.setRowCount(0)
            self.table.setColumnCount(2 + len(model.classes))
            self.table.setHorizontalHeaderLabels(
                ["slide", "prediction", *[f"p({c})" for c in model.classes]])
        self.model = model
        self.info.setText(model_summary(model))
        self._on_busy(self.session.busy)
        self.session.tell("info", f"Loaded the slide model {path}: classes "
                          f"{', '.join(model.classes)}.")
        return True

    def predict_slide(self) -> bool:
        """Predict the session's slide in a background job; False (reported) when it cannot."""
        session = self.session
        if self.model is None:
            session.tell("warning", "load a slide model first (Load slide model…).")
            return False
        try:
            slide = session.working_slide()
        except DFLError as exc:
            session.tell("warning", one_line(exc))
            return False
        settings = session.settings
        problem = extractor_problem(self.model.extractor, settings.chosen_extractor())
        if problem:
            session.tell("warning", f"Predict slide: {problem}")
            return False
        model, embedder = self.model, session.embedder()
        return session.start_job(
            "Predict slide",
            lambda cancel: predict_open_slide(slide, model, settings, embedder, cancel),
            self._on_predicted)

    def _on_busy(self, busy: bool) -> None:
        self.predict_button.setEnabled(self.model is not None and not busy)

    def _on_predicted(self, result: SlideLabelPrediction) -> None:
        viewer = self.viewer
        self.result = result
        if ATTENTION_NAME in viewer.layers:
            viewer.layers.remove(ATTENTION_NAME)
        data = result.attention_grid(fill=0.0)
        active = viewer.layers.selection.active
        layer = viewer.add_image(
            data, name=ATTENTION_NAME, colormap="magma", opacity=0.6, blending="translucent",
            contrast_limits=(0.0, float(max(data.max(), 1e-12))),
            **tile_placement(result.grid.tile_size, self._reference_of()))
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active
        layer.metadata.update(slide=result.slide, classes=result.classes,
                              proba=result.proba.tolist())
        self._add_row(result)
        probs = ", ".join(f"{c} {p:.2f}" for c, p in zip(result.classes, result.proba,
                                                         strict=True))
        self.session.tell("info", f"{result.slide}: {result.prediction} ({probs}).")

    def _add_row(self, result: SlideLabelPrediction) -> None:
        names = [self.table.item(r, 0).text() for r in range(self.table.rowCount())]
        row = names.index(result.slide) if result.slide in names else self.table.rowCount()
        if row == self.table.rowCount():
            self.table.insertRow(row)
        cells = [result.slide, result.prediction,
                 *[f"{p:.3f}" for p in np.asarray(result.proba, float)]]
        for col, text in enumerate(cells):
            self.table.setItem(row, col, QTableWidgetItem(text))
