"""The panel's project row: autosave, restore, Save/Open project, GeoJSON import/export.

Each annotation or class change is appended at once to the folder's journal
(:mod:`napari_dfl.core.project.journal`: a crash a moment later loses nothing), and the
annotations are rewritten (debounced, atomically), which empties the journal: into the
slide's own autosave folder in the user data folder, keyed by the slide's content
(:mod:`napari_dfl.core.project.autosave`), and into the folder of the last Save/Open
project. Picking a slide shows its own annotations (those of the slide before were saved
to its folder first). Nothing is ever written next to a slide or into the package. File
dialogs only pick paths; every outcome is a message of the session (a notification and the
status line).
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGridLayout, QPushButton, QWidget

from napari_dfl.core.annotations.annotation import read_geojson, write_geojson
from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads.prediction_files import save_geojson
from napari_dfl.core.project import folder as project_folder
from napari_dfl.core.project.autosave import (
    SLIDE_FILE,
    given_mpp,
    holds_annotations,
    locate_autosave,
    record_slide,
)
from napari_dfl.core.project.journal import AnnotationJournal, replay
from napari_dfl.workflows.train import TrainingResult

__all__ = ["AUTOSAVE_MS", "ProjectPanel"]

#: Autosave delay after the last change (ms): a burst of edits gives one write.
AUTOSAVE_MS = 500
_GEOJSON_FILTER = "GeoJSON (*.geojson *.json)"


class ProjectPanel(QWidget):
    """Buttons and autosave of one panel's session."""

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.folder: Path | None = None  # chosen by Save/Open project
        self.slide_dir: Path | None = None  # the autosave folder of the bound slide
        self.bound_slide = None  # the slide the annotations shown belong to
        self.last_saved: Path | None = None
        self.enabled = False  # no autosave before the slide's annotations were restored
        self.journals: dict[Path, AnnotationJournal] = {}
        self._journal_failed = False
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_MS)
        self.timer.timeout.connect(self.autosave)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        actions = (("Save project…", self._pick_save), ("Open project…", self._pick_open),
                   ("Import GeoJSON…", self._pick_import),
                   ("Export GeoJSON…", self._pick_export),
                   ("Export predictions…", self._pick_export_predictions))
        self.buttons = {}
        for i, (text, slot) in enumerate(actions):
            button = QPushButton(text)
            button.clicked.connect(slot)
            grid.addWidget(button, i // 2, i % 2)
            self.buttons[text] = button
        session.annotations_changed.connect(self.on_edit)
        session.classes_changed.connect(self.on_edit)
        session.class_trashed.connect(self.keep_trashed)
        session.settings_changed.connect(self._remember_mpp)

    # -- folders -------------------------------------------------------------------------
    def project_dir(self) -> Path | None:
        """Where annotations autosave: the chosen project, else the slide's folder."""
        return self.folder if self.folder is not None else self.slide_dir

    def _targets(self) -> list[Path]:
        """The folders the annotations autosave to (the slide's, the project's)."""
        return list(dict.fromkeys(f for f in (self.slide_dir, self.folder) if f is not None))

    # -- autosave ------------------------------------------------------------------------
    def _journal(self, folder: Path) -> AnnotationJournal:
        if folder not in self.journals:
            self.journals[folder] = AnnotationJournal.on_disk(folder)
        return self.journals[folder]

    def on_edit(self, *_args) -> None:
        """Journal the change at once, then schedule the rewrite of the annotations."""
        if not self.enabled or self.project_dir() is None:
            return
        self.journal_edit()
        self.schedule()

    def journal_edit(self) -> int:
        """Append the change since the last one to each folder's journal; how many changes."""
        changes = 0
        for folder in self._targets():
            try:
                if folder == self.slide_dir and self.bound_slide is not None and \
                        not (folder / SLIDE_FILE).is_file():  # whose edits these are
                    folder.mkdir(parents=True, exist_ok=True)
                    record_slide(folder, self.bound_slide, self.session.settings.mpp)
                changes = max(changes, self._journal(folder).record(self.session.annotations,
                                                                    self.session.colors))
            except (OSError, DFLError) as exc:
                if not self._journal_failed:  # once, not on every stroke
                    self.session.tell("error", f"edits cannot be written to {folder} ({exc}); "
                                      "your annotations are still in the layers: use Save "
                                      "project… to pick another folder.")
                self._journal_failed = True
                return changes
        self._journal_failed = False
        return changes

    def schedule(self, *_args) -> None:
        """Restart the autosave timer (called on every annotation or class change)."""
        if self.enabled and self.project_dir() is not None:
            self.timer.start()

    def autosave(self) -> Path | None:
        """Write the annotations now; a failure is a message (the layers keep them).

        They go to the slide's own autosave folder and, after Save/Open project, to the
        project folder too: reopening the slide alone finds them as well.
        """
        self.timer.stop()
        if not self.enabled or self.project_dir() is None:
            return None
        written = None
        for folder in self._targets():
            try:
                written = self._journal(folder).compact(self.session.annotations,
                                                        self.session.colors)
                if folder == self.slide_dir and self.bound_slide is not None:
                    record_slide(folder, self.bound_slide, self.session.settings.mpp)
            except (OSError, DFLError) as exc:
                self.session.tell("error", f"autosave to {folder} failed ({exc}); your "
                                  "annotations are still in the layers: use Save project… "
                                  "to pick another folder.")
                return None
        self.last_saved = written
        return written

    def keep_trashed(self, entry) -> list[Path]:
        """Write a deleted class's annotations to the trash of each autosave folder.

        Written at once, before the autosave drops them from ``annotations.geojson``.
        """
        written = []
        if not entry.annotations:
            return written
        for folder in dict.fromkeys(f for f in (self.slide_dir, self.folder) if f is not None):
            try:
                written.append(project_folder.save_trashed(
                    folder, entry.name, entry.annotations, entry.color, entry.when))
            except (OSError, DFLError) as exc:
                self.session.tell("error", f"the deleted class's annotations could not be "
                                  f"kept in {folder} ({exc}); Undo still brings them back "
                                  "while the panel is open.")
        if written:
            self.session.say(f"Deleted {entry.describe()}; a copy is in {written[0]} "
                             "(Undo, or Import GeoJSON, brings it back).")
        return written

    def _remember_mpp(self, settings) -> None:
        """Keep the µm/px typed for a slide that records none in its autosave folder."""
        slide = self.bound_slide
        if not self.enabled or slide is None or self.slide_dir is None or \
                slide is not self.session.slide or slide.mpp is not None:
            return
        if settings.mpp == given_mpp(self.slide_dir):
            return
        try:
            self.slide_dir.mkdir(parents=True, exist_ok=True)
            record_slide(self.slide_dir, slide, settings.mpp)
        except OSError as exc:
            self.session.tell("warning", f"the µm/px could not be remembered in "
                              f"{self.slide_dir} ({exc}); give it again next time.")

    def flush(self) -> None:
        """Write a pending autosave at once (panel closing, slide changing)."""
        if self.timer.isActive():
            self.autosave()

    def restore(self) -> int:
        """Follow the session's slide: save the last slide's annotations, show this one's.

        The annotations of a slide are restored from its autosave folder; those of the slide
        before were written to its own folder first. Returns the annotations restored.
        """
        self.flush()
        slide = self.session.slide
        if slide is self.bound_slide:
            return 0
        first = self.bound_slide is None
        self.bound_slide, self.folder, self.enabled = slide, None, False
        self.journals.clear()
        location = None if slide is None else locate_autosave(slide)
        self.slide_dir = None if location is None else location.folder
        source = None if location is None else location.restore_from
        path = None if source is None else source / project_folder.ANNOTATIONS_NAME
        annotations, colors, recovered = [], {}, 0
        if source is not None and holds_annotations(source):
            try:
                if path.is_file():
                    annotations = read_geojson(path)
                    colors = project_folder.geojson_colors(path)
                state = replay(source, annotations, colors)  # edits a crash left unsaved
                annotations, colors, recovered = state.annotations, state.colors, state.edits
            except DFLError as exc:
                self.session.tell("warning", f"the autosaved annotations could not be read "
                                  f"({exc}); the file was left untouched: repair or import "
                                  "it.")
                # never overwrite it: new annotations autosave beside it
                self.slide_dir = self.slide_dir.with_name(self.slide_dir.name + ".recovered")
        if annotations or not first:
            self._add(annotations, colors, replace_all=True)
        self.enabled = slide is not None
        if annotations:
            self.session.say(f"Restored {len(annotations)} annotations of {slide.path.name} "
                             f"from {source}.")
        if recovered:
            self.session.tell("info", f"Recovered {recovered} edits made just before "
                              "napari-dfl stopped last time (they had not been autosaved "
                              "yet).")
            self.schedule()  # into annotations.geojson soon
        if location is not None and location.note:
            self.session.tell("warning" if location.restore_from is None else "info",
                              location.note[0].upper() + location.note[1:] + ".")
        remembered = None if slide is None or slide.mpp is not None or self.slide_dir is None \
            else given_mpp(self.slide_dir)
        if remembered is not None and self.session.settings.mpp is None:
            self.session.set_settings(self.session.settings.with_(mpp=remembered))
            self.session.say(f"{slide.path.name} records no pixel size: using the "
                             f"{remembered:g} µm/px you gave it before (change it in the "
                             "µm/px field).")
        return len(annotations)

    def _add(self, annotations, colors: dict[str, str], replace_all: bool = False) -> None:
        session = self.session
        for name, color in colors.items():
            if any(a.label == name for a in annotations):
                if name in session.colors:
                    session.set_color(name, color)
                else:
                    session.add_class(name, color)
        if replace_all:
            session.replace_annotations(annotations)
        else:
            session.add_annotations(annotations)

    # -- project -------------------------------------------------------------------------
    def project_file(self) -> project_folder.ProjectFile:
        """What ``project.json`` records of the session: slide, settings, classes."""
        slide = self.session.slide
        return project_folder.ProjectFile(
            slide=None if slide is None else str(Path(slide.path).resolve()),
            settings=self.session.settings, colors=self.session.colors)

    def save(self, folder: str | Path) -> bool:
        """Save the project to ``folder`` (annotations, settings, head); autosave goes there."""
        session, folder = self.session, Path(folder)
        result = session.result
        prediction = session.prediction if session.prediction is not None and \
            session.prediction.predicted.any() else None
        try:
            project_folder.save_project(
                folder, annotations=session.annotations, file=self.project_file(),
                head=None if result is None else result.head,
                extractor=None if result is None else result.extractor,
                prediction=prediction,
                assessment=None if result is None else result.assessment)
        except DFLError as exc:
            session.tell("error", str(exc))
            return False
        except OSError as exc:
            session.tell("error", project_folder.save_failure(folder, exc))
            return False
        self.journals.pop(folder, None)  # the save emptied its journal
        self.folder = folder
        session.tell("info", f"Project saved to {folder}.")
        return True

    def open(self, folder: str | Path) -> bool:
        """Open a project: settings, classes, annotations (replacing the layers'), head."""
        session = self.session
        try:
            project = project_folder.load_project(folder)
        except DFLError as exc:
            session.tell("error", str(exc))
            return False
        self.flush()  # pending edits go to the folder they were made for
        same_slide = session.slide is not None and project.file.slide is not None and \
            Path(session.slide.path).resolve() == Path(project.file.slide).resolve()
        settings = project.file.settings
        session.set_settings(settings if same_slide else settings.with_(mpp=None))
        self.folder = Path(folder)
        self.journals.pop(self.folder, None)
        self.enabled = False
        for name, color in project.file.colors.items():
            if not color:
                continue
            if name in session.colors:
                session.set_color(name, color)
            else:
                session.add_class(name, color)
        self._add(project.annotations, project_folder.geojson_colors(
            Path(folder) / project_folder.ANNOTATIONS_NAME), replace_all=True)
        self.enabled = True
        if project.head is not None:
            session.set_result(TrainingResult.from_card(project.head, project.card))
        if project.prediction is not None and same_slide:
            session.set_prediction(project.prediction)
        self.timer.stop()
        if project.problems:
            session.tell("warning", f"Project {Path(folder).name} opened with problems: "
                         + " ".join(project.problems))
        else:
            session.tell("info", f"Project {Path(folder).name} opened.")
        return True

    # -- GeoJSON -------------------------------------------------------------------------
    def import_geojson(self, path: str | Path) -> int:
        """Add the annotations of a QuPath GeoJSON file; their count (0 and a note on error)."""
        try:
            annotations = read_geojson(path)
        except DFLError as exc:
            self.session.tell("error", str(exc))
            return 0
        self._add(annotations, project_folder.geojson_colors(path))
        self.session.tell("info", f"Imported {len(annotations)} annotations from "
                          f"{Path(path).name}.")
        return len(annotations)

    def export_geojson(self, path: str | Path) -> bool:
        """Write the annotations as QuPath GeoJSON annotations."""
        try:
            write_geojson(self.session.annotations, path, colors=self.session.colors)
        except (OSError, DFLError) as exc:
            self.session.tell("error", f"export to {path} failed ({exc}).")
            return False
        self.session.tell("info", f"Exported the annotations to {path}.")
        return True

    def export_predictions(self, path: str | Path) -> bool:
        """Write the predicted tiles as QuPath detections; a note when nothing is predicted."""
        prediction = self.session.prediction
        if prediction is None or not prediction.predicted.any():
            self.session.tell("warning", "no prediction to export yet: Train, then Predict.")
            return False
        colors = {k: v for k, v in self.session.colors.items() if k in prediction.classes}
        try:
            save_geojson(prediction, path, colors or None)
        except (OSError, DFLError) as exc:
            self.session.tell("error", f"export to {path} failed ({exc}).")
            return False
        self.session.tell("info", f"Exported {int(prediction.predicted.sum())} predicted tiles "
                          f"to {path}.")
        return True

    # -- dialogs (path picking only) -------------------------------------------------------
    def _pick_save(self) -> None:  # pragma: no cover - interactive
        folder = QFileDialog.getExistingDirectory(self, "Save project into folder")
        if folder:
            self.save(folder)

    def _pick_open(self) -> None:  # pragma: no cover - interactive
        folder = QFileDialog.getExistingDirectory(self, "Open project folder")
        if folder:
            self.open(folder)

    def _pick_import(self) -> None:  # pragma: no cover - interactive
        path, _ = QFileDialog.getOpenFileName(self, "Import QuPath GeoJSON", "",
                                              _GEOJSON_FILTER)
        if path:
            self.import_geojson(path)

    def _pick_export(self) -> None:  # pragma: no cover - interactive
        path, _ = QFileDialog.getSaveFileName(self, "Export annotations", "annotations.geojson",
                                              _GEOJSON_FILTER)
        if path:
            self.export_geojson(path)

    def _pick_export_predictions(self) -> None:  # pragma: no cover - interactive
        path, _ = QFileDialog.getSaveFileName(self, "Export predictions", "predictions.geojson",
                                              _GEOJSON_FILTER)
        if path:
            self.export_predictions(path)

