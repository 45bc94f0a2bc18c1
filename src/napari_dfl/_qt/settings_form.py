"""The "Backbone and composition" form: the session's settings, edited in the panel.

Every edit builds a new :class:`~napari_dfl.core.features.settings.Settings` and gives it to
the session; a value the settings refuse is reported in the status line and the field
shows the session's value again. When the session's settings change (a project opened),
the fields follow.
"""

from __future__ import annotations

from dataclasses import replace

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from napari_dfl.core.backbones.finetuned import PREFIX, list_finetuned
from napari_dfl.core.backbones.registry import available_backbones
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.slides.sampling import MIN_PATCH, Composition, parse_zooms

__all__ = ["CONTEXT_CHOICES", "SettingsForm"]

#: The x5 context choices as the form lists them: (text, ``Composition.context``).
CONTEXT_CHOICES = (("centred on each sample", "centred"),
                   ("nearest: one per 3 x 3 tiles", "nearest"),
                   ("shared: one per x5 tile (4 x 4)", "shared"))


class SettingsForm(QWidget):
    """Backbone, patch size, input size, zooms, colour variants, context, minimum tissue, store."""

    def __init__(self, session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.backbone_combo = QComboBox()
        self.backbone_combo.addItems([spec.name for spec in available_backbones()]
                                     + [PREFIX + entry["name"] for entry in list_finetuned()])
        self.backbone_combo.setEditable(True)  # any timm name or hf-hub:ORG/REPO id too
        self.backbone_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.backbone_combo.setToolTip(
            "a preset, a fine-tuned backbone (finetuned:NAME), or type any timm name or a "
            "Hugging Face hub id hf-hub:ORG/REPO and press Enter (gated models need their "
            "weights file: see docs/backbones.md)")
        self.patch_spin = QSpinBox(minimum=32, maximum=1024, singleStep=16)
        self.input_spin = QSpinBox(minimum=MIN_PATCH - 1, maximum=1024, singleStep=16)
        self.input_spin.setSpecialValueText("backbone's")  # the minimum: None, the backbone's
        self.input_spin.setToolTip("pixels at which every part is read and enters the network; "
                                   "backbone's: its own input size (224 for most)")
        self.zooms_edit = QLineEdit()
        self.rgb_check = QCheckBox("RGB")
        self.gray_check = QCheckBox("gray")
        self.stain_check = QCheckBox("stain")
        self.stain_check.setToolTip(
            "also each part with the slide's H&E stain normalised to a reference stain "
            "(Macenko, estimated once per slide): for slides from several labs or scanners "
            "(docs/embedding.md)")
        self.context_combo = QComboBox()
        for text, context in CONTEXT_CHOICES:
            self.context_combo.addItem(text, context)
        self.context_combo.setToolTip(
            "where the x5 part of a sample is read. centred: on each sample, the default for "
            "cells (points). nearest: on the middle tile of the sample's 3 x 3 block of x20 "
            "tiles, embedded once for the 9, the default for tissue (whole slides about 1.8x "
            "faster than centred). shared: on the x5 tile it lies in, once for 16 tiles "
            "(about 2x faster). Measured in docs/embedding.md")
        self.tissue_spin = QDoubleSpinBox(decimals=2, minimum=0.0, maximum=1.0, singleStep=0.1)
        self.store_edit = QLineEdit()
        self.store_edit.setPlaceholderText("default: the user cache, shared with the CLI")
        variants = QHBoxLayout()
        variants.addWidget(self.rgb_check)
        variants.addWidget(self.gray_check)
        variants.addWidget(self.stain_check)
        form = QFormLayout(self)
        form.addRow("backbone", self.backbone_combo)
        form.addRow("patch px", self.patch_spin)
        form.addRow("input px", self.input_spin)
        form.addRow("zooms µm/px", self.zooms_edit)
        form.addRow("variants", variants)
        form.addRow("x5 context", self.context_combo)
        form.addRow("min tissue", self.tissue_spin)
        form.addRow("store folder", self.store_edit)
        self.show_settings(session.settings)
        # a name picked from the list, or typed and confirmed (not every keystroke)
        self.backbone_combo.activated.connect(self.apply)
        self.backbone_combo.lineEdit().editingFinished.connect(self.apply)
        self.patch_spin.valueChanged.connect(self.apply)
        self.input_spin.valueChanged.connect(self.apply)
        self.zooms_edit.editingFinished.connect(self.apply)
        self.rgb_check.toggled.connect(self.apply)
        self.gray_check.toggled.connect(self.apply)
        self.stain_check.toggled.connect(self.apply)
        self.context_combo.currentIndexChanged.connect(self.apply)
        self.tissue_spin.valueChanged.connect(self.apply)
        self.store_edit.editingFinished.connect(self.apply)
        session.settings_changed.connect(self.show_settings)

    def _widgets(self) -> tuple:
        return (self.backbone_combo, self.patch_spin, self.input_spin, self.zooms_edit,
                self.rgb_check, self.gray_check, self.stain_check, self.context_combo,
                self.tissue_spin, self.store_edit)

    def show_settings(self, settings: Settings) -> None:
        """Show ``settings`` in the fields (without sending them back)."""
        for widget in self._widgets():
            widget.blockSignals(True)
        comp = settings.composition
        if self.backbone_combo.findText(settings.backbone) < 0:
            self.backbone_combo.addItem(settings.backbone)
        self.backbone_combo.setCurrentText(settings.backbone)
        self.patch_spin.setValue(comp.patch_size)
        self.input_spin.setValue(self.input_spin.minimum() if comp.input_size is None
                                 else comp.input_size)
        self.zooms_edit.setText(", ".join(f"{z:g}" for z in comp.zooms))
        self.rgb_check.setChecked("rgb" in comp.variants)
        self.gray_check.setChecked("gray" in comp.variants)
        self.stain_check.setChecked("stain" in comp.variants)
        # one zoom has no context: the list keeps its choice for when a context zoom returns
        if len(comp.zooms) > 1:
            self.context_combo.setCurrentIndex(self.context_combo.findData(comp.context))
        self.context_combo.setEnabled(len(comp.zooms) > 1)
        self.tissue_spin.setValue(settings.min_tissue)
        self.store_edit.setText(settings.store_dir or "")
        for widget in self._widgets():
            widget.blockSignals(False)

    def read(self) -> Settings:
        """The settings the fields show (the session's others kept).

        Raises:
            DFLError: a field holds a value the settings refuse (the message says which).

        """
        variants = tuple(v for v, box in (("rgb", self.rgb_check), ("gray", self.gray_check),
                                          ("stain", self.stain_check))
                         if box.isChecked())
        size = self.input_spin.value()
        composition = Composition(self.patch_spin.value(), parse_zooms(self.zooms_edit.text()),
                                  variants, None if size < MIN_PATCH else size,
                                  self.context_combo.currentData())
        return replace(self.session.settings, backbone=self.backbone_combo.currentText(),
                       composition=composition, min_tissue=self.tissue_spin.value(),
                       store_dir=self.store_edit.text().strip() or None)

    def apply(self, *_args) -> bool:
        """Give the fields' settings to the session; False (and a status) when refused."""
        try:
            settings = self.read()
        except DFLError as exc:
            self.session.tell("warning", f"{exc} The previous settings are kept.")
            self.show_settings(self.session.settings)
            return False
        self.session.set_settings(settings)
        return True
