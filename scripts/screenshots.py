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

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    demo = Path(args[0]) if args else ROOT / "out" / "demo"
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
        from napari_dfl.core.util.palette import class_colors, to_rgb

        colors = class_colors(sorted(classes))
        rgba = np.zeros((*class_map.shape, 4), np.uint8)
        for index, name in enumerate(classes):
            rgba[class_map == index] = (*to_rgb(colors[name]), 255)
        overlay = viewer.add_image(rgba, rgb=True, name="prediction: " + ", ".join(classes),
                         scale=(size, size), translate=(size / 2 - 0.5,) * 2, opacity=0.55)
        _settle(QApplication)
        viewer.screenshot(str(IMAGES / "prediction_overlay.png"), canvas_only=False,
                          flash=False)
        viewer.layers.remove(overlay)
    # The panel, with the demo annotations loaded into its layers.
    from napari_dfl.core.annotations.annotation import read_geojson
    from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS

    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    widget.session.add_annotations(read_geojson(SAMPLE_ANNOTATIONS))
    _settle(QApplication)
    viewer.screenshot(str(IMAGES / "panel.png"), canvas_only=False, flash=False)
    if "--explorer" in sys.argv:
        explorer_screenshots(viewer, widget, QApplication)
    viewer.close()
    return 0


def explorer_screenshots(viewer, widget, app_type) -> None:
    """Train, predict, open the explorer with a lasso drawn, and show the PCA colours."""
    import time

    from napari_dfl._qt.explorer import LASSO_NAME

    widget.form.store_edit.setText(str(ROOT / "out" / "screenshots"))
    widget.form.store_edit.editingFinished.emit()
    for job in (widget.train, widget.predict):
        if not job():
            raise SystemExit("the panel refused to start a job (see the notifications)")
        while widget.session.busy:
            app_type.processEvents()
            time.sleep(0.05)
    explorer = widget.explorer
    if not explorer.open("pca"):
        raise SystemExit("the explorer found no embeddings")
    explorer.viewer.window._qt_window.resize(1200, 900)
    rows, cols = explorer.map.pixels[:, 0], explorer.map.pixels[:, 1]
    r0, c0 = np.percentile(rows, 10), np.percentile(cols, 10)
    r1, c1 = np.percentile(rows, 45), np.percentile(cols, 45)
    explorer.viewer.layers[LASSO_NAME].add_polygons(
        [np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]])])
    explorer.viewer.reset_view()
    _settle(app_type)
    explorer.viewer.screenshot(str(IMAGES / "explorer.png"), canvas_only=False, flash=False)
    explorer.false_colour_layer()
    for name in ("DFL class map", "DFL probability", "DFL selected tiles"):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    _settle(app_type)
    viewer.screenshot(str(IMAGES / "embedding_colours.png"), canvas_only=True, flash=False)


def _settle(app_type) -> None:
    import time

    for _ in range(20):
        app_type.processEvents()
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
