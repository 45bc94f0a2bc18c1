"""The "Deep Feature Learning" dock widget: a view over one :class:`Session`.

The panel declares its child widgets here and gives each the session, never itself:
the slide picker, the classes list, the settings form, the job buttons, the status and
progress area, the metrics, the explorer and project rows and the slide-level section. It
also owns the adapters between the session and napari's layers (annotations, prediction
overlays, suggestions) and the keys: 1-9 pick a class, N / Shift-N walk the suggestions, K
labels one, whichever layer is active. All state and all work live in the session and its
jobs (run in napari thread workers; the backbone in a child process).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_dfl._qt.annotation_layers import (
    AnnotationLayers,
    is_dropped_geojson,
    take_geojson_layers,
)
from napari_dfl._qt.auto import AutoMode
from napari_dfl._qt.canvas_caption import CanvasCaption
from napari_dfl._qt.classes_widget import ClassesWidget
from napari_dfl._qt.explorer import Explorer
from napari_dfl._qt.jobs import QtRunner, keep_triton_out, notify, warm_up_training
from napari_dfl._qt.metrics_view import assessment_html
from napari_dfl._qt.overlay_controls import OverlayControls
from napari_dfl._qt.overlays import PredictionOverlay
from napari_dfl._qt.plots_dialog import has_plots, show_head_plots
from napari_dfl._qt.project import ProjectPanel
from napari_dfl._qt.settings_form import SettingsForm
from napari_dfl._qt.slide_model_section import SlideModelSection
from napari_dfl._qt.slide_section import SlideSection
from napari_dfl._qt.status_view import StatusView
from napari_dfl._qt.suggest_settings import SuggestSettings
from napari_dfl._qt.suggestions import Suggestions, viewer_camera
from napari_dfl.core.annotations.samples import SamplePreview, preview_samples
from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.workflows.embedding.child import ChildEmbedder
from napari_dfl.workflows.embedding.service import shared_service
from napari_dfl.workflows.labelled import annotation_advice
from napari_dfl.workflows.session import Session, plural

__all__ = ["COUNT_DELAY_MS", "DFLWidget"]

#: Delay of the per-class sample counts after the last edit (ms).
COUNT_DELAY_MS = 300


class DFLWidget(QWidget):
    """The plugin's dock widget (npe2 ``widgets`` contribution)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        keep_triton_out()
        warm_up_training()
        self.viewer = napari_viewer
        self.runner = QtRunner(self)
        self.session = session = Session(runner=self.runner, embedder=ChildEmbedder)
        self.annotation_layers: AnnotationLayers | None = None

        self.slide_section = SlideSection(napari_viewer, session)
        self.classes = ClassesWidget(session)
        classes_box = QGroupBox("Classes (keys 1-9 pick)")
        QVBoxLayout(classes_box).addWidget(self.classes)
        self.form = SettingsForm(session)
        self.advanced = QCollapsible("Backbone and composition")
        self.advanced.addWidget(self.form)
        self.suggest = SuggestSettings(session)  # "Suggest settings…": select on these labels
        self.extract_button = QPushButton("Extract")
        self.train_button = QPushButton("Train")
        self.predict_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.auto_check = QCheckBox("Auto: retrain and predict after each annotation")
        self.explore_pca_button = QPushButton("PCA")
        self.explore_umap_button = QPushButton("UMAP")
        self.explore_all_check = QCheckBox("all slides of the store folder")
        self.explore_all_check.setToolTip(
            "Project the other slides embedded with the same backbone and composition too, "
            "in one space (colour by slide)")
        self.project = ProjectPanel(session)
        self.status = StatusView(session)
        self.metrics = QLabel()
        self.metrics.setWordWrap(True)
        self.plots_button = QPushButton("Validation plots…")
        self.plots_button.setToolTip("confusion matrix, precision-recall curves and learning "
                                     "curve of the head's validation split")
        self.plots_button.setVisible(False)
        self.slide_model = SlideModelSection(napari_viewer, session, lambda: self.slide_layer)
        self.slide_model_box = QCollapsible("Slide-level model (a label or values per slide)")
        self.slide_model_box.addWidget(self.slide_model)
        self.count_timer = QTimer(self)  # a burst of edits gives one count
        self.count_timer.setSingleShot(True)
        self.count_timer.setInterval(COUNT_DELAY_MS)
        self.count_timer.timeout.connect(self._show_counts)
        self.overlay = PredictionOverlay(napari_viewer, session)
        self.overlay_controls = OverlayControls(self.overlay)
        self.caption = CanvasCaption(napari_viewer, session, self.overlay)
        self._lay_out(classes_box)

        self.suggestions = Suggestions(napari_viewer, session, lambda: self.slide_layer)
        self.auto = AutoMode(session, self.run_auto, self)
        self.explorer = Explorer(napari_viewer, session, lambda: self.slide_layer,
                                 self.bind_keys)
        self._connect()
        self.bind_keys(napari_viewer)
        for layer in napari_viewer.layers:
            self.bind_keys(layer)
        self.slide_section.refresh()

    # -- layout and wiring -----------------------------------------------------------------
    def _lay_out(self, classes_box: QGroupBox) -> None:
        buttons = QHBoxLayout()
        for button in (self.extract_button, self.train_button, self.predict_button,
                       self.cancel_button):
            buttons.addWidget(button)
        explore = QHBoxLayout()
        explore.addWidget(QLabel("Explore embeddings:"))
        for widget in (self.explore_pca_button, self.explore_umap_button,
                       self.explore_all_check):
            explore.addWidget(widget)
        # The sections live in a scroll area: on a short screen, or with the settings open
        # and a ranking shown, the panel scrolls instead of squeezing its lists and tables.
        content = QWidget()
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        layout = QVBoxLayout(content)
        for widget in (self.slide_section, classes_box, self.advanced, self.suggest):
            layout.addWidget(widget)
        layout.addLayout(buttons)
        layout.addWidget(self.auto_check)
        layout.addWidget(self.status)
        layout.addWidget(self.metrics)
        layout.addWidget(self.plots_button)
        layout.addWidget(self.overlay_controls)
        layout.addLayout(explore)
        layout.addWidget(self.project)
        layout.addWidget(self.slide_model_box)
        layout.addStretch(1)
        scroll.setWidget(content)
        # as wide as the sections need (the dock takes its width from this), plus the bar
        scroll.setMinimumWidth(content.minimumSizeHint().width()
                               + scroll.verticalScrollBar().sizeHint().width())
        self.scroll_area = scroll

    def _connect(self) -> None:
        session, viewer = self.session, self.viewer
        self.extract_button.clicked.connect(self.extract)
        self.train_button.clicked.connect(lambda: self.train())
        self.predict_button.clicked.connect(self.predict)
        self.cancel_button.clicked.connect(session.cancel)
        self.auto_check.toggled.connect(self.auto.set_enabled)
        for button, method in ((self.explore_pca_button, "pca"),
                               (self.explore_umap_button, "umap")):
            button.clicked.connect(lambda _checked=False, m=method: self.explorer.open(
                m, cohort=self.explore_all_check.isChecked()))
        session.slide_changed.connect(self._on_slide)
        session.settings_changed.connect(self._preload_backbone)
        session.head_changed.connect(self._on_head)
        self.plots_button.clicked.connect(self.show_plots)
        session.job_changed.connect(self._on_job)
        session.message.connect(notify)
        for signal in (session.annotations_changed, session.classes_changed,
                       session.settings_changed, session.slide_changed):
            signal.connect(self._schedule_counts)
        viewer.layers.events.inserted.connect(self._on_layer_inserted)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        self.destroyed.connect(self._teardown_callbacks())

    def _teardown_callbacks(self):
        """A teardown that needs no ``self`` (Qt calls it after the widget is gone)."""
        runner, session, events = self.runner, self.session, self.viewer.layers.events
        caption = self.caption
        callbacks = ((events.inserted, self._on_layer_inserted),
                     (events.removed, self._on_layer_removed))

        def teardown(*_args) -> None:
            caption.disconnect()
            session.disconnect_all()
            runner.shutdown()
            for emitter, callback in callbacks:
                emitter.disconnect(callback)

        return teardown

    # -- keys ------------------------------------------------------------------------------
    def bind_keys(self, keymap_provider) -> None:
        """Bind 1-9 (class), N / Shift-N (suggestions), K (label) on a viewer or layer.

        Bound on every layer too: a layer's own keys (an image layer's 2 is a mode) would
        otherwise win while it is active.
        """
        for key in range(1, 10):
            keymap_provider.bind_key(str(key), self._class_key(key - 1), overwrite=True)
        keys = {"n": lambda _target=None: self.suggestions.go(1),
                "Shift-N": lambda _target=None: self.suggestions.go(-1),
                "k": lambda _target=None: self.suggestions.label()}
        for key, action in keys.items():
            keymap_provider.bind_key(key, action, overwrite=True)

    def _class_key(self, index: int):
        def pick_class(_target=None) -> None:
            self.session.set_active(index)

        pick_class.__name__ = f"dfl_pick_class_{index + 1}"
        return pick_class

    # -- layers ----------------------------------------------------------------------------
    @property
    def slide_layer(self):
        """The image layer chosen as the slide, or None."""
        return self.slide_section.slide_layer

    @property
    def regions(self):
        """The regions layer (None before a slide is picked)."""
        return None if self.annotation_layers is None else self.annotation_layers.regions

    @property
    def points(self):
        """The points layer (None before a slide is picked)."""
        return None if self.annotation_layers is None else self.annotation_layers.points

    def _on_layer_inserted(self, event) -> None:
        self.bind_keys(event.value)
        self.slide_section.refresh()
        if self.annotation_layers is not None and is_dropped_geojson(event.value):
            QTimer.singleShot(0, self.take_geojson_layers)  # not inside napari's insertion

    def take_geojson_layers(self) -> int:
        """Take the layers of dropped GeoJSON files into the panel's annotation layers."""
        if self.annotation_layers is None:
            return 0
        return take_geojson_layers(self.viewer, self.session)

    def _on_layer_removed(self, event) -> None:
        layer = event.value
        if layer is not None and layer is self.slide_layer and self.session.busy:
            self.session.cancel()
        adapter = self.annotation_layers
        if adapter is not None and not adapter.alive():
            self.project.flush()
            adapter.disconnect()
            self.annotation_layers = None  # a deleted layer must not erase the autosave
            self.project.enabled = False
        self.slide_section.refresh()

    def _on_slide(self, slide) -> None:
        if slide is None:
            return
        reference = self.slide_layer
        if self.annotation_layers is None:
            self.annotation_layers = AnnotationLayers(self.viewer, self.session, reference)
            QTimer.singleShot(0, self.take_geojson_layers)  # dropped before a slide was
        self.overlay.reference = reference
        self.project.restore()  # also the µm/px given to this slide before
        self._preload_backbone()
        if slide.mpp is None and self.session.settings.mpp is None:
            self.session.tell("warning", f"{slide.path.name} does not record its pixel size: "
                              "give its µm/px in the panel's field (0.25 is typical at x40, "
                              "0.5 at x20).")

    def _preload_backbone(self, *_args) -> None:
        """Have the extraction child load the chosen backbone while the user annotates."""
        if self.session.slide is not None and not self.session.busy:
            shared_service().preload(self.session.settings)

    # -- actions ---------------------------------------------------------------------------
    def view_centre(self) -> tuple[float, float]:
        """Level-0 ``(x, y)`` of the view's centre (the prediction fills in from there)."""
        centre = np.asarray(viewer_camera(self.viewer).center[-2:], dtype=float)
        layer = self.slide_layer
        if layer is not None:
            centre = (centre - np.asarray(layer.translate[-2:])) / np.asarray(layer.scale[-2:])
        return float(centre[1]), float(centre[0])

    def extract(self) -> bool:
        """Embed the samples of the annotations in the background; False if not started."""
        return self.session.extract()

    def train(self, config: TrainConfig | None = None) -> bool:
        """Embed what is missing, then train a head in the background."""
        return self.session.train(config)

    def predict(self) -> bool:
        """Predict the slide's tiles, the field of view first, filling in the overlays."""
        return self.session.predict(self.view_centre())

    def run_auto(self, config: TrainConfig | None = None) -> bool:
        """Auto mode's step: embed what is missing, retrain, predict; False if not started."""
        return self.session.auto_step(config, self.view_centre())

    # -- session -> widgets ----------------------------------------------------------------
    def _on_head(self, result) -> None:
        self.metrics.setText("" if result is None else assessment_html(result.assessment))
        self.plots_button.setVisible(result is not None and has_plots(result.head))

    def show_plots(self):
        """Open the head's validation figure in a window (None without a head)."""
        head = self.session.head
        return show_head_plots(self, head) if has_plots(head) else None

    def _on_job(self, job) -> None:
        busy = job is not None
        for button in (self.extract_button, self.train_button, self.predict_button):
            button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _schedule_counts(self, *_args) -> None:
        self.count_timer.start()

    def _show_counts(self) -> None:
        """Regions, points and the samples they give, per class; advice under the list."""
        adapter = self.annotation_layers
        if adapter is None:
            return
        preview = self.sample_preview()
        samples = {} if preview is None else preview.counts
        self.classes.set_counts({
            name: f"{plural(r, 'region')}, {plural(p, 'point')}"
                  + (f" → {plural(samples[name], 'sample')}" if name in samples else "")
            for name, (r, p) in adapter.counts().items()})
        self.classes.set_advice([] if preview is None else annotation_advice(preview))

    def sample_preview(self) -> SamplePreview | None:
        """The samples the annotations give with the current settings (None without mpp)."""
        session = self.session
        if session.slide is None or not session.annotations:
            return None
        try:
            return preview_samples(session.working_slide(), session.annotations,
                                   session.settings.composition)
        except DFLError:  # no µm/px yet: the slide section says so
            return None

    # -- window life -----------------------------------------------------------------------
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
        self.session.disconnect_all()
        self.runner.shutdown()
        self.explorer.close()
        super().closeEvent(event)
