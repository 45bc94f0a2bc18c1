"""A real napari viewer (under Xvfb) shows the sample slide opened through the plugin."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def stained_fraction(rgba: np.ndarray) -> float:
    """Fraction of pixels with H&E colours: red and blue clearly above green."""
    rgb = rgba[..., :3].astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return float(((r - g > 25) & (b - g > 10)).mean())


def grab(viewer, qtbot) -> np.ndarray:
    qtbot.wait(300)
    return viewer.screenshot(canvas_only=True, flash=False)


def test_sample_slide_renders_tissue_at_overview_and_level0(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    [layer] = viewer.open_sample("napari-dfl", "cmu1_small_region")
    assert layer.multiscale and layer.rgb and len(layer.data) == 2
    viewer.reset_view()

    overview = grab(viewer, qtbot)
    assert overview[..., :3].mean() > 30, "canvas is black: nothing rendered"
    assert 0.05 < stained_fraction(overview) < 0.9, "no tissue colours at the overview"
    # The slide is mostly white glass around a strip of tissue.
    assert (overview[..., :3].min(axis=-1) > 200).mean() > 0.1

    # Zoom onto tissue until screen pixels are finer than level-0 pixels.
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.center = (1500, 1000)
    camera.zoom = 2.0
    zoomed = grab(viewer, qtbot)
    assert layer.data_level == 0
    assert stained_fraction(zoomed) > 0.3, "no tissue colours at level 0"
    assert zoomed[..., :3].std() > 10, "flat canvas: tiles were not drawn"
