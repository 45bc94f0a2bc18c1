"""The "Slide-level model" section: train or load a slide model, predict the open slide.

A model is trained here from a cohort CSV (:class:`~napari_dfl._qt.slide_training.
SlideTrainingBox`, the same training as ``napari-dfl train-slides``) or loaded from a folder
``train-slides`` wrote; either kind: a classifier or a multi-target model (numeric and
binary targets). *Predict this slide* is thin Qt over
:func:`napari_dfl.workflows.slide_level.predict_open_slide`, run as a job of the panel's
session: tiles the slide's store lacks are embedded in the extraction child, never in this
process. The result is an attention heatmap (one value per tile; a multi-target model has
one per target, chosen under *Attention of*) and a row of the section's table: the class
and its probabilities, or each target's predicted value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dfl._qt.overlays import tile_placement
from napari_dfl._qt.slide_training import SlideTrainingBox
from napari_dfl.core.errors import DFLError, one_line
from napari_dfl.core.slide_level.prediction import SlideLabelPrediction, extractor_problem
from napari_dfl.workflows.slide_level import SlideTargetPrediction, predict_open_slide

if TYPE_CHECKING:  # torch: imported by the jobs that need it, not when the panel opens
    from napari_dfl.core.slide_level.model import SlideModel, TargetSlideModel

__all__ = ["ATTENTION_NAME", "SlideModelSection", "model_summary"]

ATTENTION_NAME = "DFL attention"


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def model_summary(model: SlideModel | TargetSlideModel) -> str:
    """Classes or targets, extractor, training cohort, cross-validation, early stopping."""
    targets = getattr(model, "targets", None)
    if targets is not None:
        shown = ", ".join(f"{t.name} ({t.kind})" for t in targets[:8])
        lines = [f"Targets: {shown}{' ...' if len(targets) > 8 else ''}"]
    else:
        lines = [f"Classes: {', '.join(model.classes)}"]
    if model.extractor is not None:
        lines.append(model.extractor.describe())
    summary = model.summary or {}
    if summary:
        lines.append(f"Trained on {summary.get('n_slides')} slides "
                     f"({summary.get('n_groups')} groups)")
    metrics = model.metrics or {}
    if targets is not None and metrics.get("summary"):
        mil = metrics["summary"]["mil"]
        lines.append(f"Cross-validated ({metrics.get('n_folds')} folds): mean r "
                     f"{_fmt(mil['mean_pearson_r'])} over {mil['n_numeric']} numeric, mean "
                     f"AUC {_fmt(mil['mean_auc'])} over {mil['n_binary']} binary target(s)")
    elif metrics.get("auc") is not None:
        lines.append(f"Cross-validated AUC {metrics['auc']:.3f} ({metrics.get('n_folds')} "
                     "folds)")
    stop = model.early_stopping or {}
    if stop.get("validation"):
        lines.append(f"Early stopping: best epoch {stop['best_epoch']} of "
                     f"{stop['epochs_run']}")
    return "\n".join(lines)


class SlideModelSection(QWidget):
    """Train or load a slide model, predict the open slide, show attention and a table.

    Args:
        viewer: the napari viewer (the attention layer goes there).
        session: the panel's session (slide, settings, jobs).
        reference_of: returns the slide layer (placement of the attention layer).

    """

    def __init__(self, viewer, session, reference_of, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer, self.session, self._reference_of = viewer, session, reference_of
        self.model: SlideModel | TargetSlideModel | None = None
        self.result: SlideLabelPrediction | SlideTargetPrediction | None = None
        self.training = SlideTrainingBox(session, self.set_model)
        self.load_button = QPushButton("Load slide model…")
        self.predict_button = QPushButton("Predict this slide")
        self.predict_button.setEnabled(False)
        self.info = QLabel("No slide model: train one from a cohort CSV above, or load one "
                           "(napari-dfl train-slides writes them).")
        self.info.setWordWrap(True)
        self.attention_combo = QComboBox()
        self.attention_combo.setToolTip("The target whose attention the layer shows")
        attention_row = QHBoxLayout()
        self.attention_label = QLabel("Attention of")
        attention_row.addWidget(self.attention_label)
        attention_row.addWidget(self.attention_combo, 1)
        self._show_attention_choice(False)
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["slide", "prediction"])
        self.table.setEditTriggers(QTableWidget.NoEditTriggers)
        layout = QVBoxLayout(self)
        for widget in (self.training, self.load_button, self.info, self.predict_button):
            layout.addWidget(widget)
        layout.addLayout(attention_row)
        layout.addWidget(self.table)
        self.load_button.clicked.connect(self._choose)
        self.predict_button.clicked.connect(self.predict_slide)
        self.attention_combo.currentIndexChanged.connect(self._show_target)
        session.job_changed.connect(lambda job: self._on_busy(job is not None))

    def _choose(self) -> None:  # pragma: no cover - interactive
        path = QFileDialog.getExistingDirectory(self, "Slide model folder (train-slides --out)")
        if path:
            self.load(path)

    def load(self, path) -> bool:
        """Load the slide model folder ``path``; a bad folder is reported, never raised."""
        from napari_dfl.core.slide_level.model_files import load_any_slide_model  # torch

        try:
            model = load_any_slide_model(path)
        except (DFLError, OSError) as exc:
            self.session.tell("error", f"Load slide model: {one_line(exc)}")
            return False
        self.set_model(model, f"loaded from {path}")
        return True

    def set_model(self, model: SlideModel | TargetSlideModel, origin: str) -> None:
        """Make ``model`` (loaded, or trained in the panel) the one *Predict* uses."""
        columns = self._columns(model)
        if self.model is None or columns != self._columns(self.model):
            self.table.setRowCount(0)
            self.table.setColumnCount(len(columns))
            self.table.setHorizontalHeaderLabels(columns)
        self.model = model
        targets = getattr(model, "names", None)
        self.attention_combo.blockSignals(True)
        self.attention_combo.clear()
        self.attention_combo.addItems(targets or [])
        self.attention_combo.blockSignals(False)
        self._show_attention_choice(targets is not None)
        self.info.setText(f"Slide model {origin}.\n{model_summary(model)}")
        self._on_busy(self.session.busy)
        what = (f"targets {', '.join(targets[:5])}" if targets is not None
                else f"classes {', '.join(model.classes)}")
        self.session.tell("info", f"Slide model {origin}: {what}.")

    @staticmethod
    def _columns(model) -> list[str]:
        names = getattr(model, "names", None)
        if names is not None:
            return ["slide", *names]
        return ["slide", "prediction", *[f"p({c})" for c in model.classes]]

    def _show_attention_choice(self, shown: bool) -> None:
        self.attention_label.setVisible(shown)
        self.attention_combo.setVisible(shown)

    def predict_slide(self) -> bool:
        """Predict the session's slide in a background job; False (reported) when it cannot."""
        session = self.session
        if self.model is None:
            session.tell("warning", "train or load a slide model first (Train slide model, "
                         "or Load slide model…).")
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

    def _attention_data(self) -> np.ndarray:
        result = self.result
        if isinstance(result, SlideTargetPrediction):
            target = max(self.attention_combo.currentIndex(), 0)
            if target >= len(result.targets):
                target = 0
            return result.attention_grid(target, fill=0.0)
        return result.attention_grid(fill=0.0)

    def _show_target(self, _index: int = 0) -> None:
        """Show the attention of the target chosen under *Attention of*."""
        if isinstance(self.result, SlideTargetPrediction) and ATTENTION_NAME in self.viewer.layers:
            layer = self.viewer.layers[ATTENTION_NAME]
            data = self._attention_data()
            layer.data = data
            layer.contrast_limits = (0.0, float(max(data.max(), 1e-12)))
            layer.metadata["target"] = self.attention_combo.currentText()

    def _on_predicted(self, result: SlideLabelPrediction | SlideTargetPrediction) -> None:
        viewer = self.viewer
        self.result = result
        if ATTENTION_NAME in viewer.layers:
            viewer.layers.remove(ATTENTION_NAME)
        data = self._attention_data()
        active = viewer.layers.selection.active
        layer = viewer.add_image(
            data, name=ATTENTION_NAME, colormap="magma", opacity=0.6, blending="translucent",
            contrast_limits=(0.0, float(max(data.max(), 1e-12))),
            **tile_placement(result.grid.tile_size, self._reference_of()))
        if active is not None and active in viewer.layers:
            viewer.layers.selection.active = active
        if isinstance(result, SlideTargetPrediction):
            layer.metadata.update(slide=result.slide, targets=result.targets,
                                  values=result.values.tolist(),
                                  target=self.attention_combo.currentText())
            cells = [result.value_text(t) for t in range(len(result.targets))]
            shown = ", ".join(f"{n} {v}" for n, v in zip(result.targets, cells, strict=True))
        else:
            layer.metadata.update(slide=result.slide, classes=result.classes,
                                  proba=result.proba.tolist())
            cells = [result.prediction, *[f"{p:.3f}" for p in np.asarray(result.proba, float)]]
            shown = f"{result.prediction} (" + ", ".join(
                f"{c} {p:.2f}" for c, p in zip(result.classes, result.proba, strict=True)) + ")"
        self._add_row(result.slide, cells)
        self.session.tell("info", f"{result.slide}: {shown}.")

    def _add_row(self, slide: str, cells: list[str]) -> None:
        names = [self.table.item(r, 0).text() for r in range(self.table.rowCount())]
        row = names.index(slide) if slide in names else self.table.rowCount()
        if row == self.table.rowCount():
            self.table.insertRow(row)
        for col, text in enumerate([slide, *cells]):
            self.table.setItem(row, col, QTableWidgetItem(text))
