"""Take the README/docs screenshots in a real napari window (run under Xvfb).

    xvfb-run -a -s "-screen 0 1400x1000x24" .venv/bin/python scripts/screenshots.py [DEMO_OUT]

Opens the sample slide through the plugin and, when a demo output folder is given (default
``out/demo``, written by ``napari-dfl demo``), adds its prediction as a class-map layer
placed with one value per tile, then docks the panel with the demo annotations. Writes
``docs/images/sample_slide.png``, ``prediction_overlay.png`` and ``panel.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"


def main() -> int:
    """Take the screenshots."""
    import napari
    from qtpy.QtWidgets import QApplication

    demo = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "out" / "demo"
    IMAGES.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1200, 900)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    viewer.reset_view()
    _settle(QApplication)
    viewer.screenshot(str(IMAGES / "sample_slide.png"), canvas_only=False, flash=False)
    arrays = demo / "CMU-1-Small-Region.prediction.npz"
    if arrays.exists():
        with np.load(arrays, allow_pickle=False) as data:
            class_map = data["class_map"].astype(np.int32)
            size = float(data["tile_size"])
            classes = [str(c) for c in data["classes"]]
        colors = {"epidermis": (120, 40, 160), "dermis": (230, 120, 160),
                  "background": (200, 200, 200)}
        rgba = np.zeros((*class_map.shape, 4), np.uint8)
        for index, name in enumerate(classes):
            rgba[class_map == index] = (*colors.get(name, (255, 200, 0)), 255)
        overlay = viewer.add_image(rgba, rgb=True, name="prediction: " + ", ".join(classes),
                         scale=(size, size), translate=(size / 2 - 0.5,) * 2, opacity=0.55)
        _settle(QApplication)
        viewer.screenshot(str(IMAGES / "prediction_overlay.png"), canvas_only=False,
                          flash=False)
        viewer.layers.remove(overlay)
    # The panel, with the demo annotations loaded into its layers.
    from napari_dfl._sample_data import SAMPLE_ANNOTATIONS
    from napari_dfl.core.annotations import read_geojson

    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    widget.add_annotations(read_geojson(SAMPLE_ANNOTATIONS))
    _settle(QApplication)
    viewer.screenshot(str(IMAGES / "panel.png"), canvas_only=False, flash=False)
    viewer.close()
    return 0


def _settle(app_type) -> None:
    import time

    for _ in range(20):
        app_type.processEvents()
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
