"""A caption on the canvas: the class the next annotation gets, and what the overlay shows.

Keys 1-9 change the class while the eyes are on the slide; the caption says which one is
active there, where the pathologist looks, not only in the panel's list.
"""

from __future__ import annotations

from napari_dfl._qt.overlays import CLASS_MAP, HEATMAP, PredictionOverlay

__all__ = ["CanvasCaption", "caption_text", "text_overlay"]


def caption_text(session, overlay: PredictionOverlay) -> str:
    """``"Class 2: dermis · showing the class map"`` (what the canvas caption says)."""
    active = session.active
    if active is None:
        text = "No class: add one in the panel"
    else:
        text = f"Class {session.classes.index(active) + 1}: {active}"
    if overlay.prediction is not None:
        if overlay.shown == CLASS_MAP:
            text += " · showing the class map"
        elif overlay.shown == HEATMAP:
            text += f" · showing the probability of {overlay.shown_class_name}"
    return text


def text_overlay(viewer):
    """The viewer's canvas text overlay (``viewer.canvas.overlays.text`` since napari 0.9)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    text = getattr(overlays, "text", None)
    return text if text is not None else viewer.text_overlay


class CanvasCaption:
    """Keeps the viewer's text overlay on :func:`caption_text`."""

    def __init__(self, viewer, session, overlay: PredictionOverlay) -> None:
        self.viewer, self.session, self.overlay = viewer, session, overlay
        self.text = text_overlay(viewer)
        self.text.position = "top_left"
        self.text.font_size = 12
        self.text.color = "white"
        for signal in (session.active_class_changed, session.classes_changed,
                       overlay.changed):
            signal.connect(self.refresh)
        self.refresh()

    def disconnect(self) -> None:
        """Stop following the session (the panel closing); the caption is hidden."""
        for signal in (self.session.active_class_changed, self.session.classes_changed,
                       self.overlay.changed):
            signal.disconnect(self.refresh)
        self.text.visible = False

    def refresh(self, *_args) -> None:
        """Show the current caption."""
        self.text.text = caption_text(self.session, self.overlay)
        self.text.visible = True
