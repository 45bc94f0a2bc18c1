"""The "Slide-level model" section: load a slide model, predict the open slide with it.

Thin Qt over :mod:`napari_dfl.core.slide_level.prediction`: the prediction runs as one job of
the main
panel's :class:`~napari_dfl._qt.jobs.JobRunner`; tiles the slide's store lacks are embedded
in the extraction child (:func:`napari_dfl.workflows.panel_jobs.extract`), never in this process.
The result is an attention heatmap (one value per tile) and a row of the session's table.
"""

from __future__ import annotations

from collections.abc import Generator
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

from napari_dfl._qt.jobs import notify
from napari_dfl._qt.overlays import tile_placement
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slide_level.prediction import (
    SlidePredictionResult,
    describe_extractor,
    extractor_mismatch,
    predict_tiles,
    slide_tiles,
    store_for_model,
)
from napari_dfl.workflows.extraction_service import one_line
from napari_dfl.workflows.panel_jobs import CancelToken, Settings, extract, known_store

if TYPE_CHECKING:  # torch: imported by the jobs that need it, not when the panel opens
    from napari_dfl.core.slide_level.model import SlideModel

ATTENTION_NAME = "DFL attention"


def predict_slide_job(settings: Settings, model: SlideModel,
                      token: CancelToken) -> Generator[tuple[str, object], None,
                                                       SlidePredictionResult]:
    """Find (or complete) the slide's store for the model, then predict the slide."""
    grid = slide_tiles(settings.slide, settings.composition, settings.min_tissue)
    yield "grid", grid
    store = (store_for_model(model.extractor, settings.slide.path, settings.store_dir)
             or known_store(settings))
    missing = grid.coords if store is None else grid.coords[store.missing(grid.coords)]
    if len(missing):
        path = yield from extract(settings, missing, token)
        store = EmbeddingStore.open(path)
    return predict_tiles(model, store, grid, settings.slide.path.name)


def model_summary(model: SlideModel) -> str:
    """Classes, extractor, training cohort, cross-validation and early stopping, in lines."""
    lines = [f"Classes: {', '.join(model.classes)}", describe_extractor(model.extractor)]
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


class CohortPanel(QWidget):
    """Load a slide model, predict the open slide, show attention and a per-slide table.

    Args:
        panel: the main :class:`~napari_dfl._qt.widget.DFLWidget` (its ``viewer``,
            ``slide_layer``, ``settings()`` and ``jobs`` are used).

    """

    def __init__(self, panel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.panel = panel
        self.model: SlideModel | None = None
        self.result: SlidePredictionResult | None = None
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
        panel.jobs.busy_changed.connect(self._on_busy)

    def _choose(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Slide model folder (train-slides --out)")
        if path:
            self.load(path)

    def load(self, path) -> bool:
        """Load the slide model folder ``path``; a bad folder is notified, never raised."""
        from napari_dfl.core.slide_level.model_files import load_slide_model

        try:
            model = load_slide_model(path)
        except (DFLError, OSError) as exc:
            notify("error", f"Load slide model: {one_line(exc)}")
            return False
        if self.model is None or model.classes != self.model.classes:
            self.table.setRowCount(0)
            self.table.setColumnCount(2 + len(model.classes))
            self.table.setHorizontalHeaderLabels(
                ["slide", "prediction", *[f"p({c})" for c in model.classes]])
        self.model = model
        self.info.setText(model_summary(model))
        self._on_busy(self.panel.jobs.busy)
        notify("info", f"Loaded the slide model {path}: classes {', '.join(model.classes)}.")
        return True

    def predict_slide(self) -> bool:
        """Predict the panel's slide in a background job; False (notified) when it cannot."""
        if self.model is None:
            notify("warning", "load a slide model first (Load slide model…).")
            return False
        try:
            settings = self.panel.settings()
        except DFLError as exc:
            notify("warning", one_line(exc))
            return False
        mismatch = extractor_mismatch(self.model.extractor, settings.backbone,
                                      settings.composition)
        if mismatch:
            notify("warning", f"Predict slide: {mismatch}")
            return False
        model = self.model
        return self.panel.jobs.start(
            "Predict slide", lambda token: predict_slide_job(settings, model, token),
            lambda kind, payload: None, self._on_predicted)

    def _on_busy(self, busy: bool) -> None:
        self.predict_button.setEnabled(self.model is not None and not busy)

    def _on_predicted(self, result: SlidePredictionResult) -> None:
        viewer = self.panel.viewer
        self.result = result
        if ATTENTION_NAME in viewer.layers:
            viewer.layers.remove(ATTENTION_NAME)
        data = result.attention_grid(fill=0.0)
        layer = viewer.add_image(
            data, name=ATTENTION_NAME, colormap="magma", opacity=0.6, blending="translucent",
            contrast_limits=(0.0, float(max(data.max(), 1e-12))),
            **tile_placement(result.grid.tile_size, self.panel.slide_layer))
        layer.metadata.update(slide=result.slide, classes=result.classes,
                              proba=result.proba.tolist())
        self._add_row(result)
        probs = ", ".join(f"{c} {p:.2f}" for c, p in zip(result.classes, result.proba,
                                                         strict=True))
        notify("info", f"{result.slide}: {result.prediction} ({probs}).")

    def _add_row(self, result: SlidePredictionResult) -> None:
        names = [self.table.item(r, 0).text() for r in range(self.table.rowCount())]
        row = names.index(result.slide) if result.slide in names else self.table.rowCount()
        if row == self.table.rowCount():
            self.table.insertRow(row)
        cells = [result.slide, result.prediction,
                 *[f"{p:.3f}" for p in np.asarray(result.proba, float)]]
        for col, text in enumerate(cells):
            self.table.setItem(row, col, QTableWidgetItem(text))
