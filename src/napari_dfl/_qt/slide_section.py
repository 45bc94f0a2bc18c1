"""The "Slide" box: which image layer is the slide, and its µm/px.

Image layers opened by napari-dfl's reader carry their slide; picking one makes it the
session's slide. The µm/px field shows the slide's pixel size; a value typed there is given
to the session (a slide whose file records none needs it) and the field is highlighted
while the pixel size is unknown.
"""

from __future__ import annotations

from dataclasses import replace

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox

from napari_dfl.core.slides.base import SlideReader

__all__ = ["SlideSection", "slide_of"]

_MISSING_STYLE = "QDoubleSpinBox { background: #7a4a00; }"


def slide_of(layer) -> SlideReader | None:
    """The slide behind an image layer made by napari-dfl's reader, or None."""
    slide = getattr(layer, "metadata", {}).get("slide")
    return slide if isinstance(slide, SlideReader) else None


class SlideSection(QGroupBox):
    """The slide picker and µm/px field of the panel."""

    def __init__(self, viewer, session) -> None:
        super().__init__("Slide")
        self.viewer, self.session = viewer, session
        self.layer_combo = QComboBox()
        self.mpp_spin = QDoubleSpinBox(decimals=4, minimum=0.0, maximum=100.0, singleStep=0.05)
        self.mpp_spin.setSpecialValueText("unknown: give it")
        form = QFormLayout(self)
        form.addRow("image layer", self.layer_combo)
        form.addRow("µm/px", self.mpp_spin)
        self.layer_combo.currentIndexChanged.connect(self._on_pick)
        self.mpp_spin.valueChanged.connect(self._on_mpp)
        session.settings_changed.connect(lambda _s: self._show_mpp())

    @property
    def slide_layer(self):
        """The image layer chosen as the slide, or None."""
        name = self.layer_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401

    def refresh(self, *_args) -> None:
        """List the slide layers again (a layer was added or removed)."""
        current = self.layer_combo.currentText()
        names = [layer.name for layer in self.viewer.layers
                 if getattr(layer, "rgb", False) and slide_of(layer) is not None]
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        self.layer_combo.addItems(names)
        if current in names:
            self.layer_combo.setCurrentText(current)
        self.layer_combo.blockSignals(False)
        if current not in names:
            self._on_pick()

    def _on_pick(self, *_args) -> None:
        layer = self.slide_layer
        slide = None if layer is None else slide_of(layer)
        if slide is not self.session.slide:
            if self.session.settings.mpp is not None:
                self.session.set_settings(replace(self.session.settings, mpp=None))
            self.session.set_slide(slide)
        self._show_mpp()

    def _show_mpp(self) -> None:
        slide = self.session.slide
        mpp = self.session.settings.mpp or (slide.mpp if slide is not None else None)
        self.mpp_spin.blockSignals(True)
        self.mpp_spin.setValue(mpp or 0.0)
        self.mpp_spin.blockSignals(False)
        self.mpp_spin.setStyleSheet(_MISSING_STYLE if slide is not None and not mpp else "")

    def _on_mpp(self, value: float) -> None:
        slide = self.session.slide
        own = None if slide is None else slide.mpp
        given = None if value <= 0 or (own is not None and abs(value - own) < 1e-9) else value
        self.session.set_settings(replace(self.session.settings, mpp=given))
        self._show_mpp()
