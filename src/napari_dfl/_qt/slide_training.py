"""Training a slide model from the panel: a cohort CSV in, cross-validated results out.

Thin Qt over :func:`napari_dfl.workflows.slide_level.train_slides_job`, run as a job of the
panel's session (off the GUI thread, one epoch at a time, Cancel between epochs): the same
training as ``napari-dfl train-slides`` with the same defaults and seed, on the slides'
stores in the panel's store folder. The results (per class or per target, with sample
sizes and 95 % intervals) are shown in a text view; the trained model goes to the slide
model section (:class:`~napari_dfl._qt.slide_model_section.SlideModelSection`), which
predicts the open slide with it and shows its attention. A bad cohort is said in one line
under the buttons; the model shown before is kept.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qtpy.QtCore import QObject, Signal
from qtpy.QtGui import QFontDatabase
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_dfl._qt.plots_dialog import show_figure
from napari_dfl.core.errors import DFLError, one_line
from napari_dfl.core.slide_level.config import MILConfig
from napari_dfl.workflows.slide_level import (
    SlideEpoch,
    TrainedSlides,
    cohort_columns,
    draw_cv_figure,
    results_text,
    save_trained,
    split_targets,
    train_slides_job,
)

__all__ = ["TRAIN_JOB", "SlideTrainingBox"]

#: The job's name (the panel's progress bar and messages start with it).
TRAIN_JOB = "Train slide model"
_PROBLEM_STYLE = "QLabel { color: #ffb454; }"


class _Relay(QObject):
    """Carries the job's epochs from its thread to this box (a queued Qt signal)."""

    epoch = Signal(object)


def _relayed(job, emit: Callable[[SlideEpoch], None]):
    """Pass a job's events on unchanged, handing each epoch to ``emit`` too."""
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as stop:
                return stop.value
            if event[0] == "epoch":
                emit(event[1])
            yield event
    finally:
        job.close()


class SlideTrainingBox(QWidget):
    """Cohort CSV, targets, folds, epochs and seed; Train, Cancel, progress and results.

    Args:
        session: the panel's session (store folder, jobs, messages).
        on_trained: called with the trained model and a line saying where it comes from.

    """

    def __init__(self, session, on_trained: Callable[[object, str], None],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self._on_trained = session, on_trained
        self.cohort_csv: Path | None = None
        self.trained: TrainedSlides | None = None
        self._running = False
        self.csv_button = QPushButton("Cohort CSV…")
        self.csv_label = QLabel("No cohort: a CSV with slide,label[,group] (or target "
                                "columns); the slides' stores in the store folder.")
        self.csv_label.setWordWrap(True)
        self.targets_edit = QLineEdit()
        self.targets_edit.setPlaceholderText("empty: classify the label column")
        self.targets_edit.setToolTip(
            "Numeric or 0/1 columns to learn instead of the label, comma-separated, or one "
            "pattern such as GENE_* (as train-slides --targets / --targets-from)")
        self.folds_spin = _spin(0, 50, 5, "cross-validation folds, 0 for none")
        self.epochs_spin = _spin(1, 10000, 20, "most epochs of each fit")
        self.seed_spin = _spin(0, 2**31 - 1, 0, "seed of the folds, the weights and the noise")
        self.train_button = QPushButton(TRAIN_JOB)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.save_button = QPushButton("Save slide model…")
        self.save_button.setEnabled(False)
        self.plots_button = QPushButton("Plots…")
        self.plots_button.setToolTip("the cross-validation as figures: out-of-fold confusion "
                                     "matrix and ROC curves, or each target's r / AUC")
        self.plots_button.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.problem.setStyleSheet(_PROBLEM_STYLE)
        self.problem.setVisible(False)
        self.results = QPlainTextEdit()
        self.results.setReadOnly(True)
        self.results.setLineWrapMode(QPlainTextEdit.NoWrap)
        self.results.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self.results.setPlaceholderText("Cross-validated results appear here.")
        self.results.setMinimumHeight(150)
        self._lay_out()
        self._relay = _Relay(self)
        self._relay.epoch.connect(self._on_epoch)
        self.csv_button.clicked.connect(self._choose_csv)
        self.train_button.clicked.connect(lambda: self.train())
        self.cancel_button.clicked.connect(session.cancel)
        self.save_button.clicked.connect(self._choose_save)
        self.plots_button.clicked.connect(lambda: self.show_plots())
        session.job_changed.connect(self._on_job)
        session.message.connect(self._on_message)

    def _lay_out(self) -> None:
        form = QFormLayout()
        form.addRow("Targets", self.targets_edit)
        numbers = QHBoxLayout()
        for name, spin in (("Folds", self.folds_spin), ("Epochs", self.epochs_spin),
                           ("Seed", self.seed_spin)):
            numbers.addWidget(QLabel(name))
            numbers.addWidget(spin)
        buttons = QHBoxLayout()
        for button in (self.train_button, self.cancel_button, self.save_button,
                       self.plots_button):
            buttons.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.csv_button)
        layout.addWidget(self.csv_label)
        layout.addLayout(form)
        layout.addLayout(numbers)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.problem)
        layout.addWidget(self.results)

    # -- the cohort ----------------------------------------------------------------------
    def _choose_csv(self) -> None:  # pragma: no cover - interactive
        path, _ = QFileDialog.getOpenFileName(self, "Cohort CSV (as napari-dfl train-slides)",
                                              "", "CSV (*.csv);;All files (*)")
        if path:
            self.set_cohort(path)

    def set_cohort(self, path) -> bool:
        """Choose the cohort CSV ``path``; a file that is not a cohort is said in one line."""
        try:
            columns = cohort_columns(path)
        except DFLError as exc:
            self._say_problem(one_line(exc))
            return False
        self.cohort_csv = Path(path)
        self._say_problem("")
        others = [c for c in columns if c not in ("slide", "label", "group")]
        kind = ("classes from its label column" if "label" in columns
                else "no label column: name target columns under Targets")
        extra = f"; other columns: {', '.join(others[:8])}" if others else ""
        self.csv_label.setText(f"{self.cohort_csv.name}: {kind}{extra}.")
        return True

    def config(self) -> MILConfig:
        """The training settings: the spin boxes, the rest ``train-slides``' defaults."""
        return MILConfig(epochs=self.epochs_spin.value(), seed=self.seed_spin.value())

    # -- training ------------------------------------------------------------------------
    def train(self) -> bool:
        """Start training on the chosen cohort; False (said in one line) when it cannot."""
        if self.cohort_csv is None:
            self._say_problem("Choose a cohort CSV first (Cohort CSV…).")
            return False
        try:
            split_targets(self.targets_edit.text())
        except DFLError as exc:
            self._say_problem(one_line(exc))
            return False
        csv_path, stores = self.cohort_csv, self.session.settings.stores
        config, folds, targets = self.config(), self.folds_spin.value(), \
            self.targets_edit.text()
        emit = self._relay.epoch.emit
        self._say_problem("")
        self._running = True
        started = self.session.start_job(
            TRAIN_JOB,
            lambda cancel: _relayed(train_slides_job(csv_path, stores, config, folds=folds,
                                                     targets=targets, cancel=cancel), emit),
            self._on_done)
        if not started:
            self._running = False
        return started

    def _on_epoch(self, epoch: SlideEpoch) -> None:
        done, total = epoch.overall()
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setFormat(f"{epoch.describe()} (%p %)")

    def _on_done(self, trained: TrainedSlides) -> None:
        self._running = False
        self.trained = trained
        self.results.setPlainText(results_text(trained.model, trained.skipped))
        self.save_button.setEnabled(True)
        self.plots_button.setEnabled(bool(trained.model.metrics))
        self._on_trained(trained.model, f"trained on {trained.cohort_csv.name}")

    def show_plots(self):
        """Open the trained model's cross-validation figure (None before a training)."""
        if self.trained is None:
            return None
        trained = self.trained
        return show_figure(self, "Cross-validation of the slide model",
                           f"Out-of-fold predictions of {trained.cohort_csv.name}'s slides "
                           "(each predicted by a model that did not see it).",
                           lambda path: draw_cv_figure(trained, path))

    def _on_job(self, job) -> None:
        ours = job is not None and job.name == TRAIN_JOB
        self.train_button.setEnabled(job is None)
        self.cancel_button.setEnabled(ours)
        self.progress.setVisible(ours)
        if ours and job.stage == "starting":
            self.progress.setRange(0, 0)  # busy until the first epoch
            self.progress.setFormat("reading the cohort")

    def _on_message(self, level: str, text: str) -> None:
        """The job's end when it made no model (an error, or cancelled): one line here."""
        if self._running and text.startswith(TRAIN_JOB):
            self._running = False
            self._say_problem(text, tell=False)

    def _say_problem(self, text: str, tell: bool = True) -> None:
        """Show ``text`` as the box's one problem line (empty: none), and tell the session."""
        self.problem.setText(text)
        self.problem.setVisible(bool(text))
        if text and tell:
            self.session.tell("warning", text)

    # -- saving --------------------------------------------------------------------------
    def _choose_save(self) -> None:  # pragma: no cover - interactive
        path = QFileDialog.getSaveFileName(self, "Slide model folder", "model.dflslide")[0]
        if path:
            self.save(path)

    def save(self, path) -> Path | None:
        """Save the trained model as ``train-slides --out`` would; None (said) on failure."""
        if self.trained is None:
            return None
        try:
            folder = save_trained(self.trained, path)
        except (DFLError, OSError) as exc:
            self._say_problem(f"Save slide model: {one_line(exc)}")
            return None
        self.session.tell("info", f"Saved the slide model to {folder}.")
        return folder


def _spin(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin
