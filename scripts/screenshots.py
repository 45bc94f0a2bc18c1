"""Take the README/docs screenshots in a real napari window, in a user's order (under Xvfb).

    xvfb-run -a -s "-screen 0 1500x1000x24" .venv/bin/python scripts/screenshots.py [--explorer]
    xvfb-run -a -s "-screen 0 1500x1400x24" .venv/bin/python scripts/screenshots.py --suggest

Opens the sample slide through the plugin, docks the panel, imports the demo annotations,
clicks Extract (a picture of the progress), Train and Predict (the real backbone, in the
panel's child process), presses key 2 on the canvas, shows the class map and a heatmap,
asks to delete a class, switches to 224 px tiles (the advice), then opens the TCGA slide
that records no pixel size. ``--explorer`` adds the embedding explorer. Autosave goes to a
temporary folder and embeddings to a temporary store folder, so the user's own folders
are never touched. Writes PNGs into ``docs/images`` and prints their paths.

``--suggest`` takes only the Suggest settings pictures instead: the demo annotations,
Suggest settings with the panel's defaults (its ranking and the suggestion), Apply
suggestion, then Suggest settings again (the applied settings in use, kept). Its embeddings
go to ``out/screenshots/stores`` (kept: a rerun embeds nothing) and the kept choice to a
temporary configuration folder.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images"
NO_MPP_SLIDE = ROOT.parent / "shared" / "data" / "slides" / "tcga-cr-7395-01a-01-ts1.svs"
WINDOW = (1500, 1000)
#: Window height of the ``--suggest`` pictures (the Xvfb screen must be as tall).
TALL = 1400


def settle(seconds: float = 1.0) -> None:
    """Let Qt and the OpenGL canvas catch up."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.03)


def wait_idle(widget, timeout: float = 600) -> None:
    """Wait for the panel's job to end (raise if it does not)."""
    end = time.monotonic() + timeout
    while widget.session.busy:
        if time.monotonic() > end:
            raise SystemExit("a job of the panel did not finish in time")
        settle(0.05)


def shoot(viewer, name: str, canvas_only: bool = False) -> Path:
    """Screenshot the window (or the canvas) into docs/images."""
    settle()
    path = IMAGES / name
    viewer.screenshot(str(path), canvas_only=canvas_only, flash=False)
    print(path)
    return path


def press(viewer, key) -> None:
    """Press a key on the canvas, as a user would."""
    from qtpy.QtTest import QTest

    QTest.keyClick(viewer.window._qt_viewer.canvas.native, key)
    settle(0.2)


def main() -> int:
    """Take the screenshots."""
    os.environ.setdefault("NAPARI_DFL_AUTOSAVE", tempfile.mkdtemp(prefix="dfl-shots-"))
    if "--suggest" in sys.argv:
        return suggest_screenshots()
    import napari
    from qtpy.QtCore import Qt

    from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS

    IMAGES.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(show=True, title="napari-dfl")
    viewer.window._qt_window.resize(*WINDOW)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    viewer.reset_view()
    shoot(viewer, "sample_slide.png", canvas_only=True)

    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    form = widget.form
    form.store_edit.setText(tempfile.mkdtemp(prefix="dfl-shots-stores-"))  # Extract runs
    form.store_edit.editingFinished.emit()
    widget.project.import_geojson(SAMPLE_ANNOTATIONS)
    viewer.reset_view()

    widget.extract_button.click()
    end = time.monotonic() + 300
    while widget.session.busy and (widget.session.job.done == 0 or
                                   widget.session.job.stage != "embedding"):
        if time.monotonic() > end:
            raise SystemExit("Extract did not start embedding")
        settle(0.05)
    if widget.session.busy:
        shoot(viewer, "panel_progress.png")
    wait_idle(widget)
    for button in (widget.train_button, widget.predict_button):
        button.click()
        wait_idle(widget)
    if widget.session.head is None or widget.overlay.prediction is None:
        raise SystemExit(f"Train/Predict failed: {widget.status.text()}")
    viewer.layers.selection.active = widget.points
    press(viewer, Qt.Key.Key_2)  # the next point will be dermis: the canvas says so
    shoot(viewer, "panel.png")

    widget.overlay_controls.choose("Probability: epidermis")
    shoot(viewer, "panel_heatmap.png")
    widget.overlay_controls.choose("Class map")

    widget.session.set_active("background")
    widget.classes.delete_button.click()
    shoot(viewer, "panel_delete.png")
    widget.classes.keep_button.click()

    form.patch_spin.setValue(224)  # too large for this small slide: the panel says so
    settle(1.0)
    shoot(viewer, "panel_advice.png")
    form.patch_spin.setValue(112)

    if "--explorer" in sys.argv:
        explorer_screenshots(viewer, widget)
    widget.close()
    viewer.close()

    if NO_MPP_SLIDE.is_file():  # TCGA open-access frozen section without µm/px
        second = napari.Viewer(show=True, title="napari-dfl")
        second.window._qt_window.resize(*WINDOW)
        second.open(str(NO_MPP_SLIDE), plugin="napari-dfl")
        second.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
        shoot(second, "panel_no_mpp.png")
        second.close()
    return 0


def explorer_screenshots(viewer, widget) -> None:
    """Open the explorer on PCA, show its clusters, and the embedding colours on the slide."""
    explorer = widget.explorer
    if not explorer.open("pca"):
        raise SystemExit("the explorer found no embeddings")
    explorer.viewer.window._qt_window.resize(*WINDOW)
    if explorer.show_clusters(6) is None:  # the largest cluster picked, its examples shown
        raise SystemExit("the explorer found no clusters")
    settle(1.0)
    shoot(explorer.viewer, "explorer.png")
    widget.overlay_controls.choose("Nothing")
    shoot(viewer, "explorer_selection.png", canvas_only=True)  # the cluster, outlined
    if explorer.false_colour_layer() is None:  # computed in a thread the first time
        explorer.tasks.wait(300)
        explorer.false_colour_layer()
    shoot(viewer, "embedding_colours.png", canvas_only=True)
    explorer.close()


def suggest_screenshots() -> int:
    """Suggest settings on the demo annotations, Apply suggestion, Suggest settings again."""
    os.environ["NAPARI_DFL_CONFIG"] = tempfile.mkdtemp(prefix="dfl-shots-config-")
    import napari

    from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS

    viewer = napari.Viewer(show=True, title="napari-dfl")
    viewer.window._qt_window.resize(WINDOW[0], TALL)  # the whole ranking table in view
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    stores = ROOT / "out" / "screenshots" / "stores"
    widget.form.store_edit.setText(str(stores))
    widget.form.store_edit.editingFinished.emit()
    widget.project.import_geojson(SAMPLE_ANNOTATIONS)
    viewer.reset_view()
    section = widget.suggest
    for name in ("suggest_settings_panel.png", "suggest_settings_kept.png"):
        start = time.monotonic()
        section.button.click()
        wait_idle(widget, timeout=3600)
        if section.suggestion is None:
            raise SystemExit(f"Suggest settings failed: {widget.status.text()}")
        print(f"ranking in {time.monotonic() - start:.0f} s: {section.suggestion.pick.reason()}")
        settle()
        # the panel alone, whole; then the section alone (the rest is as before)
        (widget if name == "suggest_settings_panel.png" else section).grab().save(
            str(IMAGES / name))
        print(IMAGES / name)
        if section.suggestion.pick.keeps_current or not section.apply():
            break
    widget.close()
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
