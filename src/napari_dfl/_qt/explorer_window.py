"""The explorer window's frame: a plot's orientation, labelled axes, a caption.

A napari canvas is not a plot: rows grow downwards and nothing says what the axes are.
:func:`dress` turns the camera so that the second axis points up, draws the axes' arrows at
the origin (the plot's corner) and, from napari 0.9, writes the axes' names under and beside
the plot (text overlays that render under Xvfb's software OpenGL too); with older napari
the arrows carry the names. :func:`label` sets the window's title, the names of the axes
(also ``viewer.dims.axis_labels``) and the caption at the top left (what is shown and how
it is coloured).
"""

from __future__ import annotations

from napari_dfl._qt.canvas_caption import text_overlay

__all__ = ["AXIS_OVERLAYS", "axis_titles", "dress", "label"]

#: Names of the text overlays that hold the axes' names (columns, rows).
AXIS_OVERLAYS = ("dfl_axis_1", "dfl_axis_2")
_POSITIONS = ("bottom_center", "middle_left")


def _canvas_overlays(viewer):
    """``viewer.canvas.overlays`` (a dict of overlays) from napari 0.9, else None."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)
    return overlays if hasattr(overlays, "__setitem__") else None


def _scene_axes(viewer):
    """The axes drawn at the world's origin (``viewer.scene.overlays.axes`` from 0.9)."""
    overlays = getattr(getattr(viewer, "scene", None), "overlays", None)
    axes = getattr(overlays, "axes", None)
    return axes if axes is not None else viewer.axes


def dress(viewer) -> None:
    """Orient the camera like a plot and show the axes, their names and the caption."""
    camera = getattr(getattr(viewer, "scene", None), "camera", None) or viewer.camera
    if hasattr(camera, "orientation2d"):  # napari >= 0.6: the second axis points up
        camera.orientation2d = ("up", "right")
    overlays = _canvas_overlays(viewer)
    axes = _scene_axes(viewer)
    axes.visible, axes.colored, axes.labels = True, False, overlays is None
    if overlays is not None:
        from napari.components.overlays import TextOverlay

        for name, position in zip(AXIS_OVERLAYS, _POSITIONS, strict=True):
            if name not in overlays:
                overlays[name] = TextOverlay(position=position, font_size=11, color="white",
                                             box=True, visible=True)
    caption = text_overlay(viewer)
    caption.position, caption.font_size, caption.color = "top_left", 11, "white"
    caption.visible = True


def label(viewer, title: str, caption: str, axis_labels: tuple[str, str]) -> None:
    """Set the window's ``title``, the ``caption`` and the names of (rows, columns)."""
    viewer.title = title
    viewer.dims.axis_labels = tuple(axis_labels)
    text_overlay(viewer).text = caption
    overlays = _canvas_overlays(viewer)
    if overlays is not None and all(name in overlays for name in AXIS_OVERLAYS):
        rows, cols = axis_labels
        overlays[AXIS_OVERLAYS[0]].text = f"{cols} →"
        overlays[AXIS_OVERLAYS[1]].text = f"↑ {rows}"


def axis_titles(viewer) -> tuple[str, str]:
    """The names written along the (columns, rows) axes: the overlays' or the arrows' text."""
    overlays = _canvas_overlays(viewer)
    if overlays is not None and all(name in overlays for name in AXIS_OVERLAYS):
        return tuple(overlays[name].text for name in AXIS_OVERLAYS)  # type: ignore[return-value]
    rows, cols = viewer.dims.axis_labels[-2:]
    return cols, rows
