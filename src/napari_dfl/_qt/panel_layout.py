"""The layout of the "Deep Feature Learning" dock: its boxes, fields and buttons.

:func:`build_panel` creates the widgets as attributes of the panel and connects them to
its slots; the panel's behaviour lives in :mod:`napari_dfl._qt.widget`.
"""

from __future__ import annotations

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)
from superqt import QCollapsible

from napari_dfl._qt.classes_widget import ClassesWidget
from napari_dfl._qt.cohort_panel import CohortPanel
from napari_dfl._qt.project import ProjectPanel
from napari_dfl.core.backbones.backbone import available_backbones
from napari_dfl.core.backbones.finetuned import PREFIX, list_finetuned


def build_panel(panel) -> None:
    """Create the panel's widgets (as attributes of ``panel``) and lay them out."""
    panel.layer_combo = QComboBox()
    panel.mpp_spin = QDoubleSpinBox(decimals=4, minimum=0.0, maximum=100.0, singleStep=0.05)
    panel.mpp_spin.setSpecialValueText("unknown: give it")
    panel.layer_combo.currentIndexChanged.connect(panel._on_slide_changed)
    slide_box = QGroupBox("Slide")
    form = QFormLayout(slide_box)
    form.addRow("image layer", panel.layer_combo)
    form.addRow("µm/px", panel.mpp_spin)

    panel.classes = ClassesWidget()
    panel.classes.active_changed.connect(panel._on_active_class)
    panel.classes.changed.connect(panel._recolor)
    panel.classes.renamed.connect(panel._on_renamed)
    panel.classes.removed.connect(panel._on_removed)
    panel.project = ProjectPanel(panel)
    panel.classes.changed.connect(panel.project.schedule)
    classes_box = QGroupBox("Classes (keys 1-9 pick)")
    QVBoxLayout(classes_box).addWidget(panel.classes)

    panel.backbone_combo = QComboBox()
    panel.backbone_combo.addItems([spec.name for spec in available_backbones()]
                                  + [PREFIX + entry["name"] for entry in list_finetuned()])
    panel.patch_spin = QSpinBox(minimum=32, maximum=1024, value=224, singleStep=16)
    panel.zooms_edit = QLineEdit("0.5, 2.0")
    panel.rgb_check = QCheckBox("RGB", checked=True)
    panel.gray_check = QCheckBox("gray", checked=True)
    panel.tissue_spin = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, value=0.5,
                                      singleStep=0.1)
    panel.store_edit = QLineEdit()
    panel.store_edit.setPlaceholderText("default: next to the slide")
    variants = QHBoxLayout()
    variants.addWidget(panel.rgb_check)
    variants.addWidget(panel.gray_check)
    advanced = QWidget()
    form = QFormLayout(advanced)
    form.addRow("backbone", panel.backbone_combo)
    form.addRow("patch px", panel.patch_spin)
    form.addRow("zooms µm/px", panel.zooms_edit)
    form.addRow("variants", variants)
    form.addRow("min tissue", panel.tissue_spin)
    form.addRow("store folder", panel.store_edit)
    panel.advanced = QCollapsible("Backbone and composition")
    panel.advanced.addWidget(advanced)

    panel.extract_button = QPushButton("Extract")
    panel.train_button = QPushButton("Train")
    panel.predict_button = QPushButton("Predict")
    panel.cancel_button = QPushButton("Cancel")
    panel.cancel_button.setEnabled(False)
    buttons = QHBoxLayout()
    for button in (panel.extract_button, panel.train_button, panel.predict_button,
                   panel.cancel_button):
        buttons.addWidget(button)
    panel.extract_button.clicked.connect(panel.extract)
    panel.train_button.clicked.connect(panel.train)
    panel.predict_button.clicked.connect(panel.predict)
    panel.cancel_button.clicked.connect(panel.jobs.cancel)
    panel.auto_check = QCheckBox("Auto: retrain and predict after each annotation")
    panel.status = QLabel("Pick a slide, add classes, draw regions or points.")
    panel.status.setWordWrap(True)
    panel.metrics = QLabel()
    panel.metrics.setWordWrap(True)

    layout = QVBoxLayout(panel)
    for widget in (slide_box, classes_box, panel.advanced):
        layout.addWidget(widget)
    layout.addLayout(buttons)
    layout.addWidget(panel.auto_check)
    explore = QHBoxLayout()
    explore.addWidget(QLabel("Explore embeddings:"))
    panel.explore_pca_button = QPushButton("PCA")
    panel.explore_umap_button = QPushButton("UMAP")
    panel.explore_cohort_check = QCheckBox("all slides of the store folder")
    panel.explore_cohort_check.setToolTip(
        "Project the other slides embedded with the same backbone and composition too, in "
        "one space (colour by slide)")
    for button, method in ((panel.explore_pca_button, "pca"),
                           (panel.explore_umap_button, "umap")):
        button.clicked.connect(lambda _checked=False, m=method: panel.explorer.open(
            m, cohort=panel.explore_cohort_check.isChecked()))
        explore.addWidget(button)
    explore.addWidget(panel.explore_cohort_check)
    layout.addLayout(explore)
    layout.addWidget(panel.project)
    layout.addWidget(panel.status)
    layout.addWidget(panel.metrics)
    panel.cohort = CohortPanel(panel)
    panel.cohort_box = QCollapsible("Slide-level model (one label per slide)")
    panel.cohort_box.addWidget(panel.cohort)
    layout.addWidget(panel.cohort_box)
    layout.addStretch(1)
