"""The panel's project row: autosave, restore, Save/Open project, GeoJSON import/export.

Annotations autosave (debounced, atomically) to the project folder after each change: by
default the slide's store folder ``<slide folder>/<stem>.dfl/``, or the folder of the last
Save/Open project. The bundled sample slide lives inside the installed package, which is
never written to: its annotations autosave only once a project folder was chosen. File
dialogs are only used to pick paths; every outcome is a napari notification.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QGridLayout, QPushButton, QWidget

import napari_dfl
from napari_dfl.core.annotations.annotation import read_geojson, write_geojson
from napari_dfl.core.errors import DFLError
from napari_dfl.core.project import folder as core_project

#: Autosave delay after the last change (ms): a burst of edits gives one write.
AUTOSAVE_MS = 500
_GEOJSON_FILTER = "GeoJSON (*.geojson *.json)"


def default_project_dir(slide_path: Path) -> Path | None:
    """The slide's default project folder (its store folder); None for the bundled sample."""
    from napari_dfl.workflows.panel_jobs import default_store_dir

    if is_bundled_sample(slide_path):
        return None
    return Path(default_store_dir(Path(slide_path)))


def is_bundled_sample(slide_path: Path) -> bool:
    """Whether a slide is the sample shipped in the package (or the repository's copy)."""
    from napari_dfl._sample_data import SAMPLE_SLIDE

    path = Path(slide_path).resolve()
    package = Path(napari_dfl.__file__).resolve().parent
    return package in path.parents or (path.name == SAMPLE_SLIDE.name
                                       and path.parent.name == SAMPLE_SLIDE.parent.name)


class ProjectPanel(QWidget):
    """Buttons and autosave of one :class:`~napari_dfl._qt.widget.DFLWidget`."""

    def __init__(self, panel) -> None:
        super().__init__()
        self.panel = panel
        self.folder: Path | None = None  # chosen by Save/Open project
        self.slide_dir: Path | None = None  # the default folder of the layers' slide
        self.last_saved: Path | None = None
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

    # -- folders -------------------------------------------------------------------------
    def project_dir(self) -> Path | None:
        """Where annotations autosave: the chosen project, else the slide's default."""
        return self.folder if self.folder is not None else self.slide_dir

    def _bind_slide(self) -> None:
        # the annotation layers belong to the slide they were made on: picking another slide
        # later must not send these annotations to that slide's folder
        layer = self.panel.slide_layer
        self.slide_dir = None if layer is None else default_project_dir(
            layer.metadata["slide"].path)

    # -- autosave ------------------------------------------------------------------------
    def schedule(self, *_args) -> None:
        """Restart the autosave timer (called on every annotation or class change)."""
        if self.project_dir() is not None:
            self.timer.start()

    def autosave(self) -> Path | None:
        """Write the annotations now; a failure is a notification (the layers keep them)."""
        self.timer.stop()
        folder = self.project_dir()
        if folder is None or self.panel.regions is None or self.panel.points is None:
            return None  # a deleted annotation layer must not erase its part of the file
        try:
            self.last_saved = core_project.save_annotations(
                folder, self.panel.annotations(), self.panel.classes.colors)
        except (OSError, DFLError) as exc:
            self._notify("error", f"autosave to {folder} failed ({exc}); your annotations are "
                         "still in the layers: use Save project… to pick another folder.")
            return None
        return self.last_saved

    def flush(self) -> None:
        """Write a pending autosave at once (panel closing)."""
        if self.timer.isActive():
            self.autosave()

    def restore(self) -> int:
        """Load the slide's autosaved annotations into fresh layers; their count."""
        self._bind_slide()
        folder = self.project_dir()
        path = None if folder is None else folder / core_project.ANNOTATIONS_NAME
        panel = self.panel
        if path is None or not path.is_file() or len(panel.regions.data) or \
                len(panel.points.data):
            return 0
        try:
            annotations = read_geojson(path)
        except DFLError as exc:
            self._notify("warning", f"the autosaved annotations could not be read ({exc}); "
                         f"the file was left untouched: repair or import it.")
            self.folder = folder.with_name(folder.name + ".recovered")  # never overwrite it
            self._notify("info", f"new annotations autosave to {self.folder}.")
            return 0
        self._add(annotations, core_project.geojson_colors(path))
        self.panel.status.setText(f"Restored {len(annotations)} annotations from {path}.")
        return len(annotations)

    def _add(self, annotations, colors: dict[str, str]) -> None:
        classes = self.panel.classes
        for name, color in colors.items():
            if name not in classes.colors and any(a.label == name for a in annotations):
                classes.add_class(name, color)
        self.panel.add_annotations(annotations)

    # -- project -------------------------------------------------------------------------
    def settings_dict(self) -> dict:
        """The panel's settings as JSON values (slide, mpp, extractor, store folder)."""
        panel = self.panel
        layer = panel.slide_layer
        slide_path = str(layer.metadata["slide"].path) if layer is not None else None
        out = {"slide": slide_path, "mpp": panel.mpp_spin.value() or None,
               "backbone": panel.backbone_combo.currentText(),
               "patch_size": panel.patch_spin.value(), "zooms": panel.zooms_edit.text(),
               "variants": [v for v, box in (("rgb", panel.rgb_check),
                                             ("gray", panel.gray_check)) if box.isChecked()],
               "min_tissue": panel.tissue_spin.value(),
               "store_dir": panel.store_edit.text().strip() or None}
        if out["store_dir"] is None and slide_path is not None:
            from napari_dfl.workflows.panel_jobs import default_store_dir

            out["store_dir"] = default_store_dir(Path(slide_path))
        return out

    def save(self, folder: str | Path) -> bool:
        """Save the project to ``folder`` (annotations, settings, head); autosave goes there."""
        from napari_dfl.workflows.panel_jobs import known_store

        panel, folder = self.panel, Path(folder)
        extractor = None
        if panel.head is not None:
            try:
                store = known_store(panel.settings())
            except DFLError:
                store = None
            extractor = None if store is None else store.identity
        overlay = panel.overlay
        prediction = overlay.prediction if overlay is not None and overlay.n_predicted else None
        try:
            core_project.save_project(folder, annotations=panel.annotations(),
                                      settings=self.settings_dict(),
                                      colors=panel.classes.colors, head=panel.head,
                                      extractor=extractor, prediction=prediction)
        except (OSError, DFLError) as exc:
            self._notify("error", f"the project could not be saved to {folder} ({exc}); "
                         "choose another folder.")
            return False
        self.folder = folder
        note = "" if panel.head is None or extractor else \
            " (the head was not saved: its embedding store is unknown; Train again first)"
        self._notify("info", f"Project saved to {folder}{note}.")
        return True

    def open(self, folder: str | Path) -> bool:
        """Open a project: settings, classes, annotations (replacing the layers'), head."""
        try:
            project = core_project.load_project(folder)
        except DFLError as exc:
            self._notify("error", str(exc))
            return False
        self.flush()  # pending edits go to the folder they were made for
        self._apply_settings(project.settings)
        panel = self.panel
        panel.ensure_annotation_layers()
        _clear(panel.regions)
        _clear(panel.points)
        for name, color in project.colors.items():
            if name in panel.classes.colors:
                panel.classes.set_color(name, color)
            else:
                panel.classes.add_class(name, color)
        self.folder = Path(folder)
        self._add(project.annotations, core_project.geojson_colors(
            Path(folder) / core_project.ANNOTATIONS_NAME))
        if project.head is not None:
            panel._on_trained(project.head, core_project.card_extractor(project.card))
        slide = panel.slide_layer
        if (project.prediction is not None and slide is not None
                and str(slide.metadata["slide"].path) == project.settings.get("slide")):
            panel.show_prediction(project.prediction)
        self.timer.stop()
        if project.problems:
            self._notify("warning", f"Project {Path(folder).name} opened with problems: "
                         + " ".join(project.problems))
        else:
            self._notify("info", f"Project {Path(folder).name} opened.")
        return True

    def _apply_settings(self, settings: dict) -> None:
        panel = self.panel
        if settings.get("backbone") in [panel.backbone_combo.itemText(i)
                                        for i in range(panel.backbone_combo.count())]:
            panel.backbone_combo.setCurrentText(settings["backbone"])
        if isinstance(settings.get("patch_size"), int):
            panel.patch_spin.setValue(settings["patch_size"])
        if isinstance(settings.get("zooms"), str):
            panel.zooms_edit.setText(settings["zooms"])
        if isinstance(settings.get("variants"), list):
            panel.rgb_check.setChecked("rgb" in settings["variants"])
            panel.gray_check.setChecked("gray" in settings["variants"])
        if isinstance(settings.get("min_tissue"), (int, float)):
            panel.tissue_spin.setValue(float(settings["min_tissue"]))
        if isinstance(settings.get("store_dir"), str):
            panel.store_edit.setText(settings["store_dir"])
        layer = panel.slide_layer
        same_slide = layer is not None and str(layer.metadata["slide"].path) == \
            settings.get("slide")
        if same_slide and isinstance(settings.get("mpp"), (int, float)):
            panel.mpp_spin.setValue(float(settings["mpp"]))

    # -- GeoJSON -------------------------------------------------------------------------
    def import_geojson(self, path: str | Path) -> int:
        """Add the annotations of a QuPath GeoJSON file; their count (0 and a note on error)."""
        try:
            annotations = read_geojson(path)
        except DFLError as exc:
            self._notify("error", str(exc))
            return 0
        self._add(annotations, core_project.geojson_colors(path))
        self._notify("info", f"Imported {len(annotations)} annotations from {Path(path).name}.")
        return len(annotations)

    def export_geojson(self, path: str | Path) -> bool:
        """Write the annotations as QuPath GeoJSON annotations."""
        try:
            write_geojson(self.panel.annotations(), path, colors=self.panel.classes.colors)
        except (OSError, DFLError) as exc:
            self._notify("error", f"export to {path} failed ({exc}).")
            return False
        self._notify("info", f"Exported the annotations to {path}.")
        return True

    def export_predictions(self, path: str | Path) -> bool:
        """Write the predicted tiles as QuPath detections; a note when nothing is predicted."""
        from napari_dfl.core.heads.prediction_files import save_geojson

        overlay = self.panel.overlay
        if overlay is None or overlay.n_predicted == 0:
            self._notify("warning", "no prediction to export yet: Train, then Predict.")
            return False
        colors = {k: v for k, v in self.panel.classes.colors.items()
                  if k in overlay.prediction.classes}
        try:
            save_geojson(overlay.prediction, path, colors or None)
        except (OSError, DFLError) as exc:
            self._notify("error", f"export to {path} failed ({exc}).")
            return False
        self._notify("info", f"Exported {overlay.n_predicted} predicted tiles to {path}.")
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

    @staticmethod
    def _notify(kind: str, message: str) -> None:
        from napari_dfl._qt.jobs import notify

        notify(kind, message)


def _clear(layer) -> None:
    """Remove every item of an annotation layer."""
    if layer is None or not len(layer.data):
        return
    if hasattr(layer, "add_rectangles"):
        layer.selected_data = set(range(len(layer.data)))
        layer.remove_selected()
    else:
        layer.data = layer.data[:0]
