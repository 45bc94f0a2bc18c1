"""The "Slide" box: which image layer is the slide, and its µm/px.

Image layers opened by napari-dfl's reader carry their slide's path (plain metadata, never
an open file); picking one opens that slide once for the panel (kept open while its layer is
listed) and makes it the session's slide. The µm/px field shows the slide's pixel size; a
value typed there is given to the session (a slide whose file records none needs it) and
the field is highlighted while the pixel size is unknown.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace

from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox

from napari_dfl._reader import READER_TAG
from napari_dfl.core.errors import MissingMppWarning, SlideError
from napari_dfl.core.slides.base import SlideReader

__all__ = ["SlideSection", "slide_of"]

_MISSING_STYLE = "QDoubleSpinBox { background: #7a4a00; }"


def _key(path: str) -> tuple[str, int, int] | None:
    """The identity of a slide file on disk: its path, size and modification time."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def slide_of(layer, opened: dict | None = None) -> SlideReader | None:
    """The slide behind an image layer made by napari-dfl's reader, or None.

    The slide is opened from ``layer.metadata["path"]``; ``opened`` (a dict the caller
    keeps) holds the slides opened before, so one file is opened once. A layer of another
    reader, or whose file is gone or no longer opens, gives None.
    """
    metadata = getattr(layer, "metadata", None) or {}
    path = metadata.get("path")
    if metadata.get("reader") != READER_TAG or not isinstance(path, str):
        return None
    key = _key(path)
    if key is None:
        return None
    if opened is not None and key in opened:
        return opened[key]
    from napari_dfl.core.slides.factory import open_slide

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingMppWarning)  # the µm/px field says it
            slide = open_slide(path)
    except SlideError:
        return None
    if opened is not None:
        opened[key] = slide
    return slide


class SlideSection(QGroupBox):
    """The slide picker and µm/px field of the panel."""

    def __init__(self, viewer, session) -> None:
        super().__init__("Slide")
        self.viewer, self.session = viewer, session
        self._opened: dict = {}  # (path, size, mtime) -> the slide opened for its layer
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
                 if getattr(layer, "rgb", False) and slide_of(layer, self._opened) is not None]
        listed = {_key(layer.metadata["path"]) for layer in self.viewer.layers
                  if layer.name in names}
        for key in [k for k in self._opened if k not in listed]:  # their layers are gone
            slide = self._opened.pop(key)
            if slide is not self.session.slide:
                slide.close()
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
        slide = None if layer is None else slide_of(layer, self._opened)
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
