"""The "Deep Feature Learning" dock widget: slide, classes, annotations, extract/train/predict.

The widget only lays out, gathers settings and applies job events to layers; the work runs
in :mod:`napari_dfl.workflows.panel_jobs` generators (in a napari thread worker) and, for the
backbone, in a child process (:mod:`napari_dfl.workflows.extraction_service`).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QWidget

from napari_dfl._qt import layers as annotation_layers
from napari_dfl._qt.auto import AutoMode
from napari_dfl._qt.explorer import Explorer
from napari_dfl._qt.jobs import JobRunner, keep_triton_out, notify, warm_up_training
from napari_dfl._qt.metrics_view import metrics_html
from napari_dfl._qt.overlays import PredictionOverlay
from napari_dfl._qt.panel_layout import build_panel
from napari_dfl._qt.suggestions import Suggestions, viewer_camera
from napari_dfl.core.errors import DFLError
from napari_dfl.core.project.folder import extractor_differences
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.workflows.panel_jobs import (
    Settings,
    auto_job,
    default_store_dir,
    extract_job,
    extraction_service,
    extractor_summary,
    predict_job,
    train_job,
)


class DFLWidget(QWidget):
    """The plugin's dock widget (npe2 ``widgets`` contribution)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        keep_triton_out()
        warm_up_training()
        self.viewer = napari_viewer
        self.jobs = JobRunner()
        self.head = None
        self.head_extractor: dict | None = None  # backbone name and composition of the head
        self.samples = None
        self.overlay: PredictionOverlay | None = None
        self.regions = None
        self.points = None
        self._slides: dict[tuple, Slide] = {}
        build_panel(self)
        self.auto = AutoMode(self)
        self.auto_check.toggled.connect(self.auto.set_enabled)
        self.backbone_combo.currentTextChanged.connect(self._preload_backbone)
        self.suggestions = Suggestions(self)
        self.explorer = Explorer(self)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.jobs.busy_changed.connect(self._on_busy)
        jobs, viewer_events = self.jobs, self.viewer.layers.events
        callbacks = (self._refresh_layers, self._on_layer_removed)

        def teardown(*_args) -> None:
            jobs.shutdown()
            for emitter, callback in zip((viewer_events.inserted, viewer_events.removed),
                                         callbacks, strict=True):
                emitter.disconnect(callback)

        self._teardown = teardown
        self.destroyed.connect(teardown)
        self._bind_keys(self.viewer)
        self._refresh_layers()

    # -- layout ----------------------------------------------------------------------------
    # -- slide -----------------------------------------------------------------------------
    def _slide_layers(self) -> list:
        return [layer for layer in self.viewer.layers
                if getattr(layer, "rgb", False) and isinstance(layer.metadata.get("slide"),
                                                               Slide)]

    def _refresh_layers(self, *_args) -> None:
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self._slide_layers()]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        if names and current not in names:
            self._on_slide_changed()

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if self.jobs.busy and layer is not None and layer.name == self.layer_combo.currentText():
            self.jobs.cancel()
        removed = getattr(layer, "name", None)
        if self.regions is not None and self.regions.name == removed:
            self.regions = None
        if self.points is not None and self.points.name == removed:
            self.points = None
        self._refresh_layers()

    @property
    def slide_layer(self):
        """The image layer chosen as the slide, or None."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def _on_slide_changed(self, *_args) -> None:
        layer = self.slide_layer
        if layer is None:
            return
        slide = layer.metadata["slide"]
        self._bind_keys(layer)  # the image layer's own 1-9 mode keys would shadow the viewer's
        self.mpp_spin.setValue(slide.mpp or 0.0)
        self.ensure_annotation_layers()
        self._preload_backbone()
        if slide.mpp is None:
            notify("warning", f"{slide.path.name} does not record its pixel size: give its "
                   "µm/px in the panel's field (0.25 is typical at x40, 0.5 at x20).")

    def _preload_backbone(self, *_args) -> None:
        """Have the extraction child load the chosen backbone while the user annotates."""
        if self.slide_layer is not None and not self.jobs.busy:
            extraction_service().preload(self.backbone_combo.currentText())

    def current_slide(self) -> Slide:
        """The chosen slide with the mpp of the panel's field.

        Raises:
            DFLError: no slide layer, or no mpp known.

        """
        layer = self.slide_layer
        if layer is None:
            raise DFLError("no slide: open a whole-slide image with napari-dfl's reader "
                           "(File > Open) or its sample, then pick it in the panel.")
        slide: Slide = layer.metadata["slide"]
        mpp = self.mpp_spin.value() or None
        if mpp is None:
            raise DFLError(f"{slide.path.name} does not record its pixel size: give its µm/px "
                           "in the panel's field (0.25 is typical at x40, 0.5 at x20).")
        if slide.mpp is not None and abs(slide.mpp - mpp) < 1e-9:
            return slide
        key = (str(slide.path), mpp)
        if key not in self._slides:
            self._slides[key] = Slide(slide.path, mpp=mpp)
        return self._slides[key]

    def composition(self) -> Composition:
        """The composition of the panel's fields (raises CompositionError on bad input)."""
        try:
            zooms = tuple(float(z) for z in self.zooms_edit.text().replace(";", ",").split(",")
                          if z.strip())
        except ValueError:
            raise DFLError(f"zooms must be numbers in µm/px separated by commas, such as "
                           f"0.5, 2.0; got {self.zooms_edit.text()!r}.") from None
        variants = tuple(v for v, box in (("rgb", self.rgb_check), ("gray", self.gray_check))
                         if box.isChecked())
        return Composition(self.patch_spin.value(), zooms, variants)

    def settings(self) -> Settings:
        """Everything a job needs, from the panel (raises DFLError with advice)."""
        slide = self.current_slide()
        store_dir = self.store_edit.text().strip() or default_store_dir(slide.path)
        return Settings(slide=slide, composition=self.composition(), store_dir=store_dir,
                        backbone=self.backbone_combo.currentText(),
                        min_tissue=self.tissue_spin.value())

    # -- annotations -----------------------------------------------------------------------
    def ensure_annotation_layers(self) -> tuple:
        """Create (or find) the regions and points layers; returns ``(regions, points)``."""
        layers, fresh = self.viewer.layers, self.regions is None and self.points is None
        if self.regions is None:
            if annotation_layers.REGIONS_NAME in layers:
                self.regions = layers[annotation_layers.REGIONS_NAME]
            else:
                self.regions = self.viewer.add_layer(
                    annotation_layers.make_regions_layer(self.slide_layer))
            self._watch(self.regions)
        if self.points is None:
            if annotation_layers.POINTS_NAME in layers:
                self.points = layers[annotation_layers.POINTS_NAME]
            else:
                self.points = self.viewer.add_layer(
                    annotation_layers.make_points_layer(self.slide_layer))
            self._watch(self.points)
        self._on_active_class(self.classes.active)
        if fresh:
            self.project.restore()  # the slide's autosaved annotations, into empty layers
        return self.regions, self.points

    def _watch(self, layer) -> None:
        layer.events.data.connect(self._on_annotations_changed)
        layer.events.features.connect(self._on_annotations_changed)
        self._bind_keys(layer)

    def _bind_keys(self, keymap_provider) -> None:
        for key in range(1, 10):
            keymap_provider.bind_key(str(key), self._key_handler(key - 1), overwrite=True)
        keys = {"n": lambda _t=None: self.suggestions.go(1),
                "Shift-N": lambda _t=None: self.suggestions.go(-1),
                "k": lambda _t=None: self.suggestions.label()}
        for key, action in keys.items():
            keymap_provider.bind_key(key, action, overwrite=True)

    def _key_handler(self, index: int):
        def pick_class(_target=None) -> None:
            self.classes.set_active(index)

        pick_class.__name__ = f"dfl_pick_class_{index + 1}"
        return pick_class

    def annotations(self) -> list:
        """The annotations of the regions and points layers, as core ``Annotation``s."""
        return annotation_layers.annotations_from_layers(self.regions, self.points)

    def _on_active_class(self, name: str | None) -> None:
        if not name:
            return
        color = self.classes.colors[name]
        for layer in (self.regions, self.points):
            if layer is not None:
                annotation_layers.set_active(layer, name, color)

    def _on_annotations_changed(self, *_args) -> None:
        self._recolor()
        self.project.schedule()
        self.auto.annotations_changed()

    def _recolor(self) -> None:
        colors = self.classes.colors
        for layer in (self.regions, self.points):
            if layer is not None:
                with layer.events.features.blocker(), layer.events.data.blocker():
                    annotation_layers.recolor(layer, colors)
        counts = annotation_layers.class_counts(self.regions, self.points, colors)
        samples = self.samples.counts() if self.samples is not None else {}
        self.classes.set_counts({
            name: f"{r} regions, {p} points" + (f", {samples[name]} samples"
                                                 if name in samples else "")
            for name, (r, p) in counts.items()})

    def _on_renamed(self, old: str, new: str) -> None:
        for layer in (self.regions, self.points):
            annotation_layers.rename_class(layer, old, new)
        self._on_active_class(self.classes.active)

    def _on_removed(self, name: str) -> None:
        for layer in (self.regions, self.points):
            if layer is not None:
                annotation_layers.remove_class(layer, name)
        self._on_active_class(self.classes.active)
        self._recolor()

    def add_annotations(self, annotations) -> None:
        """Add core annotations (e.g. read from GeoJSON); unknown classes are created."""
        for ann in annotations:
            if ann.label not in self.classes.colors:
                self.classes.add_class(ann.label)
        self.ensure_annotation_layers()
        annotation_layers.add_annotations(self.regions, self.points, annotations)
        self._recolor()

    def save_project(self, path) -> bool:
        """Save annotations, settings and head into the folder ``path`` (see ``_qt.project``)."""
        return self.project.save(path)

    def open_project(self, path) -> bool:
        """Open the project folder ``path``; what is missing is notified, never raised."""
        return self.project.open(path)

    # -- jobs ------------------------------------------------------------------------------
    def _settings_or_notify(self) -> Settings | None:
        try:
            return self.settings()
        except DFLError as exc:
            notify("error", str(exc))
            return None

    def extract(self) -> bool:
        """Embed the samples of the annotations in the background; False if not started."""
        settings = self._settings_or_notify()
        if settings is None:
            return False
        annotations = self.annotations()
        if not annotations:
            notify("warning", "nothing to extract: draw regions or points with a class first.")
            return False
        return self.jobs.start("Extract", lambda t: extract_job(settings, annotations, t),
                               self._on_event, self._on_samples_done)

    def train(self, config=None) -> bool:
        """Extract what is missing, then train a head in the background."""
        from napari_dfl.core.heads.training import TrainConfig

        settings = self._settings_or_notify()
        if settings is None:
            return False
        annotations = self.annotations()
        config = config or TrainConfig()
        classes, extractor = self.classes.names, extractor_summary(settings)
        return self.jobs.start("Train",
                               lambda t: train_job(settings, annotations, classes, config, t),
                               self._on_event, lambda head: self._on_trained(head, extractor))

    def run_auto(self, config=None) -> bool:
        """Auto mode's step: extract what is missing, retrain, predict; False if not started."""
        from napari_dfl.core.heads.training import TrainConfig

        settings = self._settings_or_notify()
        if settings is None:
            return False
        annotations = self.annotations()
        present = {ann.label for ann in annotations}
        if len(present) < 2:
            self.status.setText("Auto mode: waiting for annotations of a second class.")
            return False
        config = config or TrainConfig()
        classes, centre = self.classes.names, self._view_centre()
        extractor = extractor_summary(settings)

        def on_event(kind: str, payload) -> None:
            if kind == "trained":  # the new head, before its prediction
                self._on_trained(payload, extractor)
            else:
                self._on_event(kind, payload)

        return self.jobs.start(
            "Auto", lambda t: auto_job(settings, annotations, classes, config, t, centre),
            on_event, lambda _head: self._on_predicted())

    def predict(self) -> bool:
        """Predict the slide's tiles, the field of view first, filling in the overlays."""
        if self.head is None:
            notify("error", "no trained head yet: annotate at least two classes and press "
                   "Train before Predict.")
            return False
        settings = self._settings_or_notify()
        if settings is None:
            return False
        mismatch = extractor_differences(self.head_extractor, extractor_summary(settings))
        if mismatch:
            notify("error", f"the head was trained with {', '.join(mismatch)}: set the panel "
                   "back to them (Backbone and composition), or Train again with these "
                   "settings.")
            return False
        centre_xy, head = self._view_centre(), self.head
        return self.jobs.start("Predict", lambda t: predict_job(settings, head, t, centre_xy),
                               self._on_event, lambda _r: self._on_predicted())

    def _view_centre(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of the view's centre (the prediction fills in from there)."""
        centre = np.asarray(viewer_camera(self.viewer).center[-2:], dtype=float)
        layer = self.slide_layer
        if layer is not None:
            centre = (centre - np.asarray(layer.translate[-2:])) / np.asarray(layer.scale[-2:])
        return float(centre[1]), float(centre[0])

    def _on_event(self, kind: str, payload) -> None:
        if kind == "samples":
            self.samples = payload
            self._recolor()
            self.status.setText(f"{len(payload)} samples from the annotations.")
        elif kind == "progress":
            self.status.setText(f"Embedded {payload['done']} / {payload['total']} samples.")
        elif kind == "started":
            self.status.setText("Backbone loaded; embedding…")
        elif kind == "epoch":
            bacc = payload.val_balanced_accuracy
            self.status.setText(f"Epoch {payload.epoch}: loss {payload.train_loss:.3f}"
                                + (f", val. balanced accuracy {bacc:.2f}" if bacc else ""))
        elif kind == "grid":
            classes = list(self.head.classes)
            if self.overlay is not None and self.overlay.reusable(payload, classes):
                self.overlay.recolor(self.classes.colors)  # auto mode: no new layers
                return
            shown = classes.index(self.classes.active) if self.classes.active in classes else 0
            self.overlay = PredictionOverlay(self.viewer, payload, classes, self.classes.colors,
                                             self.slide_layer, shown)
        elif kind == "proba" and self.overlay is not None:
            self.overlay.update(*payload)
            self.status.setText(f"Predicted {self.overlay.n_predicted} / "
                                f"{len(self.overlay.prediction.grid)} tiles.")

    def _on_samples_done(self, samples) -> None:
        self.status.setText(f"Extracted {len(samples)} samples.")

    def _on_trained(self, head, extractor: dict | None) -> None:
        """Use a trained head; ``extractor`` is the backbone and composition it was made on."""
        self.head = head
        self.head_extractor = extractor
        self.metrics.setText(metrics_html(head))
        self.status.setText(f"Trained a head on {', '.join(head.classes)}.")

    def _on_predicted(self) -> None:
        if self.overlay is not None:
            counts = self.overlay.prediction.counts()
            self.status.setText("Predicted: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            self.suggestions.refresh()

    def show_prediction(self, prediction) -> None:
        """Show a finished prediction (e.g. a project's) as the overlays, with suggestions."""
        classes = list(prediction.classes)
        self.overlay = PredictionOverlay(self.viewer, prediction.grid, classes,
                                         self.classes.colors, self.slide_layer)
        self.overlay.update(prediction.grid.coords, prediction.proba)
        self.suggestions.refresh()

    def _on_busy(self, busy: bool) -> None:
        for button in (self.extract_button, self.train_button, self.predict_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def showEvent(self, event) -> None:
        """Watch the main window once docked: its closing writes a pending autosave."""
        window = self.window()
        if window is not self and not getattr(self, "_watching_window", False):
            window.installEventFilter(self)
            self._watching_window = True
        super().showEvent(event)

    def eventFilter(self, watched, event) -> bool:
        """Flush the autosave when the viewer's window closes (the dock may not get it)."""
        if event.type() == QEvent.Type.Close:
            self.project.flush()
        return super().eventFilter(watched, event)

    def closeEvent(self, event) -> None:
        """Write a pending autosave and cancel the running job when the panel closes."""
        self.project.flush()
        self.jobs.shutdown()
        self.explorer.close()
        super().closeEvent(event)
