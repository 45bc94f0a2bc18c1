"""The panel's "Suggest settings…": ``napari-dfl select`` on the open slide's annotations.

A button under the settings form starts :func:`napari_dfl.workflows.select.suggest_settings`
as a panel job (off the GUI thread, with the panel's progress bar and Cancel): the current
backbone x the fields of view x {x20, x20 + x5} x {rgb, rgb + gray}, ranked by the grouped
linear probe the CLI uses, on the same samples Train makes. The ranking shows as a small
table (candidate, balanced accuracy ± sd, n samples, folds; the suggestion marked ★, the
settings in use "(in use)"). The suggestion is the workflow's pick: the best, unless the
form's settings are among the candidates and not clearly beaten (then nothing is offered).
Nothing is applied until **Apply suggestion** is pressed: it then sets the settings form to
the suggestion and keeps it (:func:`~napari_dfl.core.features.preferred.save_preferred`, as
``select --apply``). The logic is the workflow's; this module lays out and forwards.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.parts import sub_compositions
from napari_dfl.core.features.preferred import save_preferred
from napari_dfl.core.heads.metrics import NO_SD, metric_text
from napari_dfl.core.heads.selection import Pick, marked
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.workflows.embedding.child import ChildEmbedder
from napari_dfl.workflows.jobs import Event
from napari_dfl.workflows.select import (
    DEFAULT_FIELDS,
    DEFAULT_FOLDS,
    SELECT_COMPOSITION,
    Suggestion,
    plan_suggestion,
    suggest_settings,
)

__all__ = ["APPLY", "COLUMNS", "JOB_NAME", "SuggestSettings", "row_cells"]

JOB_NAME = "Suggest settings"
COLUMNS = ("candidate", "bal. acc. ± sd", "n", "folds")
_COLUMN_TIPS = ("field of view, zooms and colour variants (the backbone is in the summary)",
                "balanced accuracy of the linear probe: mean ± sd over the grouped folds",
                "samples scored (each once, out of fold)", "grouped folds")
#: Rows the table shows without scrolling.
_VISIBLE_ROWS = 12
APPLY = "Apply suggestion"


def _short(row: dict) -> str:
    """The candidate without its backbone (every row has the same one)."""
    return str(row["candidate"]).removeprefix(f"{row['backbone']}, ")


def row_cells(row: dict, pick: Pick | None = None) -> list[str]:
    """The table's cells of one ranking row: candidate, balanced accuracy ± sd, n, folds.

    With ``pick``, the suggestion is marked ★ and the settings in use "(in use)".
    """
    name = marked(row, pick, _short(row))
    if row["status"] != "ok":
        return [name, f"unavailable: {row['error']}", "", ""]
    return [name, f"{row['balanced_accuracy']:.3f} ± "
                  f"{metric_text(row['balanced_accuracy_sd'], NO_SD)}",
            str(row["samples"]), str(row["folds"])]


def _relayed(job: Generator[Event, None, Any], emit: Callable[[dict], None],
             ) -> Generator[Event, None, Any]:
    """The job's events, each candidate's row also handed to ``emit`` (a queued signal)."""
    try:
        while True:
            try:
                kind, payload = next(job)
            except StopIteration as stop:
                return stop.value
            if kind == "candidate":
                emit(payload)
            yield kind, payload
    finally:
        job.close()


class _Relay(QObject):
    """Carries rows from the job's thread to the GUI thread (a queued connection)."""

    row = Signal(object)


class SuggestSettings(QWidget):
    """The "Suggest settings…" button, its ranking table and **Apply suggestion**.

    Args:
        session: the panel's session (its slide, annotations, settings and job runner).
        make_embedder: embedder per candidate's settings (the panel's extraction child).
        fields: fields of view compared (the CLI's 32, 64, 224 px by default).
        composition: the fullest candidate (the CLI's x20 + x5, rgb + gray).
        folds: grouped folds at most (the CLI's 5; fewer when a class has fewer groups).

    """

    def __init__(self, session, make_embedder: Callable = ChildEmbedder, *,
                 fields: Sequence[int] = DEFAULT_FIELDS,
                 composition: Composition = SELECT_COMPOSITION, folds: int = DEFAULT_FOLDS,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.make_embedder = make_embedder
        self.fields = tuple(fields)
        self.composition = composition
        self.folds = folds
        self.suggestion: Suggestion | None = None
        #: The ranking shown before the running job (shown again if it is cancelled).
        self._previous: Suggestion | None = None
        self._running = False
        #: The annotations the ranking shown was made on, and those of the running job.
        self._ranked_on: list = []
        self._ranking_on: list = []
        self._stale = False
        self.button = QPushButton("Suggest settings…")
        self.button.setToolTip(
            "compare fields of view, x5 context and grayscale for the current backbone on "
            "your annotations (as napari-dfl select: a linear probe on grouped folds); "
            f"nothing changes until you press {APPLY}")
        self.apply_button = QPushButton(APPLY)
        self.apply_button.setToolTip("set the settings above to the suggested candidate (★) "
                                     "and keep it as the default of train, evaluate, embed "
                                     "and the panel (as napari-dfl select --apply)")
        self.apply_button.setVisible(False)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setVisible(False)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        for column, tip in enumerate(_COLUMN_TIPS):
            self.table.horizontalHeaderItem(column).setToolTip(tip)
        rows = self.table.verticalHeader()
        rows.setVisible(False)
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(self.fontMetrics().height() + 6)  # compact rows
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column in range(1, len(COLUMNS)):
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setVisible(False)
        buttons = QHBoxLayout()
        buttons.addWidget(self.button)
        buttons.addWidget(self.apply_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.table)
        self._relay = _Relay(self)
        self._relay.row.connect(self._on_row)
        self.button.clicked.connect(self.start)
        self.apply_button.clicked.connect(self.apply)
        for signal in (session.annotations_changed, session.classes_changed,
                       session.job_changed):
            signal.connect(self._refresh)
        session.job_changed.connect(self._on_job)
        session.annotations_changed.connect(self._mark_stale)
        self._refresh()

    # -- state -----------------------------------------------------------------------------
    def _refresh(self, *_args) -> None:
        """Enable the button with annotations of two classes or more and no job running."""
        classes = {a.label for a in self.session.annotations}
        self.button.setEnabled(len(classes) >= 2 and not self.session.busy)
        pick = None if self.suggestion is None else self.suggestion.pick
        self.apply_button.setEnabled(pick is not None and not pick.keeps_current
                                     and not self.session.busy)

    def _mark_stale(self, *_args) -> None:
        """Say so when the annotations changed after the ranking shown was made."""
        if self.suggestion is None or self._running or self._stale:
            return
        if list(self.session.annotations) == self._ranked_on:
            return
        self._stale = True
        self.summary.setText(
            f"The annotations changed after this ranking ({len(self._ranked_on)} annotations "
            "then): press Suggest settings again for one on the current annotations. "
            + self.summary.text())

    def rows_shown(self) -> list[list[str]]:
        """The table's cells, row by row (what the user reads)."""
        return [[self.table.item(r, c).text() if self.table.item(r, c) else ""
                 for c in range(self.table.columnCount())]
                for r in range(self.table.rowCount())]

    # -- the job ---------------------------------------------------------------------------
    def start(self) -> bool:
        """Start the comparison as a panel job; False (and one line why) when refused."""
        session = self.session
        try:
            slide = session.working_slide()
            annotations = session.annotations
            plan = plan_suggestion(slide, annotations, session.settings, self.fields,
                                   folds=self.folds, composition=self.composition)
        except DFLError as exc:  # nothing started, nothing written
            session.tell("warning", f"{JOB_NAME}: {exc}")
            return False
        settings, fields, composition = session.settings, self.fields, self.composition
        self._ranking_on = list(annotations)
        folds, make_embedder, emit = self.folds, self.make_embedder, self._relay.row.emit

        def job(cancel):
            return _relayed(suggest_settings(slide, annotations, settings, make_embedder,
                                             fields=fields, folds=folds,
                                             composition=composition, cancel=cancel,
                                             plan=plan), emit)

        if session.busy:  # the session says which job runs
            return session.start_job(JOB_NAME, job, self._on_done)
        # the view first: a runner may hand the result over before start_job returns
        self._previous, self.suggestion = self.suggestion, None
        self._show_rows([])
        n_candidates = len(plan.fields) * len(sub_compositions(composition))
        self.summary.setText(
            f"Comparing {n_candidates} candidates on {settings.backbone} "
            f"({', '.join(f'{f} px' for f in plan.fields)}; {self._folds_text(plan)})…")
        self.summary.setVisible(True)
        self.apply_button.setVisible(False)
        session.say(f"{JOB_NAME}: embedding your annotations' samples at "
                    f"{', '.join(f'{f} px' for f in plan.fields)} (stored ones are reused), "
                    "then a linear probe per candidate.")
        self._running = True
        if not session.start_job(JOB_NAME, job, self._on_done):
            self._running = False
            self._show_result(self._previous, ended=True)
            return False
        return True

    def _folds_text(self, plan) -> str:
        if plan.folds < self.folds:
            return (f"{plan.folds} folds, not {self.folds}: a class has samples in only "
                    f"{plan.folds} regions or points")
        return f"{plan.folds} grouped folds"

    def _on_row(self, row: dict) -> None:
        if not self._running:
            return
        self._append(row)
        state = (f"balanced accuracy {row['balanced_accuracy']:.3f}" if row["status"] == "ok"
                 else f"unavailable ({row['error']})")
        self.session.say(f"{JOB_NAME}: {_short(row)}: {state}.")

    def _on_job(self, job) -> None:
        if job is None and self._running:  # its result, if any, is handed over right after
            QTimer.singleShot(0, self._after_job)

    def _after_job(self) -> None:
        """The job ended without a ranking (cancelled or failed): show the previous one."""
        if not self._running:
            return
        self._running = False
        self._show_result(self._previous, ended=True)
        self._stale = False
        self._mark_stale()

    def _on_done(self, suggestion: Suggestion) -> None:
        self._running = False
        self._ranked_on, self._stale = self._ranking_on, False
        self._show_result(suggestion)
        self._mark_stale()  # annotations drawn while it ran

    def _show_result(self, suggestion: Suggestion | None, ended: bool = False) -> None:
        self.suggestion = suggestion
        if suggestion is None:
            self._show_rows([])
            self.summary.setText("Stopped before a ranking: nothing was applied; the "
                                 "embeddings computed so far stay in the store folder.")
            self.apply_button.setVisible(False)
            self._refresh()
            return
        pick = suggestion.pick
        self._show_rows(suggestion.rows, pick)
        notes = " ".join(suggestion.plan.notes)
        if pick is None:
            self.summary.setText(f"No candidate could be evaluated. {notes}".strip())
            self.apply_button.setVisible(False)
            self._refresh()
            if ended:
                return
            self.session.tell("warning", f"{JOB_NAME}: no candidate could be evaluated "
                              f"({suggestion.rows[0]['error'] if suggestion.rows else ''}).")
            return
        row = pick.row
        offer = ("Your settings stay: nothing to apply." if pick.keeps_current
                 else f"Nothing is applied until you press {APPLY}.")
        self.summary.setText(
            ("Stopped: the previous ranking is shown again. " if ended else "")
            + f"{suggestion.settings.backbone}, linear probe, "
            f"{self._folds_text(suggestion.plan)}; n: samples scored. ★ suggested: "
            f"{pick.reason()} {offer} {notes}".strip())
        self.apply_button.setVisible(not pick.keeps_current)
        self._refresh()
        if ended:
            return
        figures = (f"balanced accuracy {row['balanced_accuracy']:.3f} ± "
                   f"{metric_text(row['balanced_accuracy_sd'], NO_SD)}, {row['samples']} "
                   f"samples, {row['folds']} folds")
        if pick.keeps_current:
            self.session.say(f"{JOB_NAME}: keep your settings, {_short(row)} ({figures}): no "
                             "candidate beats them by more than the folds can tell.")
        else:
            self.session.say(f"{JOB_NAME}: suggested {_short(row)} ({figures}). Press {APPLY} "
                             "to use it.")

    # -- the table -------------------------------------------------------------------------
    def _show_rows(self, rows: Sequence[dict], pick: Pick | None = None) -> None:
        self.table.setRowCount(0)
        self.table.setVisible(bool(rows))
        for row in rows:
            self._append(row, pick)

    def _append(self, row: dict, pick: Pick | None = None) -> None:
        picked = pick is not None and row is pick.row
        index = self.table.rowCount()
        self.table.insertRow(index)
        for column, text in enumerate(row_cells(row, pick)):
            item = QTableWidgetItem(text)
            if column:
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight
                                      | Qt.AlignmentFlag.AlignVCenter)
            if picked:
                font = QFont(item.font())
                font.setBold(True)
                item.setFont(font)
            if row["status"] != "ok":
                item.setToolTip(str(row["error"]))
            else:
                item.setToolTip(str(row["candidate"]))
            self.table.setItem(index, column, item)
        self.table.setVisible(True)
        shown = min(self.table.rowCount(), _VISIBLE_ROWS)
        header = self.table.horizontalHeader()
        self.table.setFixedHeight(max(header.height(), header.sizeHint().height())
                                  + sum(self.table.rowHeight(r) for r in range(shown))
                                  + 2 * self.table.frameWidth())

    # -- Apply -----------------------------------------------------------------------------
    def apply(self) -> bool:
        """Set the panel's settings to the suggestion and keep it; False when not done.

        The choice is kept first (``select --apply``'s file); only when that worked do the
        panel's settings change, so a failure leaves both as they were. A suggestion to keep
        the settings in use changes nothing.
        """
        session, suggestion = self.session, self.suggestion
        pick = None if suggestion is None else suggestion.pick
        if pick is None:
            session.tell("warning", f"{JOB_NAME}: nothing to apply yet: press Suggest "
                                    "settings and wait for its ranking.")
            return False
        if pick.keeps_current:
            session.tell("info", f"{JOB_NAME}: the suggestion is your settings as they are: "
                                 "nothing to apply.")
            return False
        if session.busy:
            session.tell("info", f"{session.job.name} is running: apply when it is done "
                                 "(or press Cancel).")
            return False
        backbone, composition = suggestion.choice()
        try:
            path = save_preferred(backbone, composition, suggestion.evidence())
        except (OSError, DFLError) as exc:
            session.tell("error", f"{APPLY}: the choice could not be kept ({exc}); the "
                                  "settings are unchanged.")
            return False
        session.set_settings(session.settings.with_(backbone=backbone, weights=None,
                                                    composition=composition))
        session.say(f"Applied {backbone}, {_short(pick.row)}: the panel's settings now use "
                    f"it, kept as the default of train, evaluate, embed and the panel "
                    f"({path}); napari-dfl select --reset forgets it.")
        return True
