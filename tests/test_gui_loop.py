"""The whole loop in a real viewer with the real backbone (in its child process).

Open the sample, load the demo annotations (epidermis / dermis / background), extract,
train, predict; the overlays line up with the slide: background where the glass is white.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_dfl._qt.annotation_layers import labels_of
from napari_dfl.core.annotations.annotation import read_geojson
from napari_dfl.core.features.store import EmbeddingStore

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture
def loop_panel(make_napari_viewer, sample_slide_path, tmp_path, configure_fast):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    configure_fast(widget, tmp_path / "stores")
    widget.session.add_annotations(read_geojson(sample_slide_path.with_suffix(".geojson")))
    return viewer, widget


def wait_idle(widget, qtbot, timeout_s: float = 240) -> None:
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=int(timeout_s * 1000))


def test_extract_train_predict_fill_in_the_overlays(loop_panel, qtbot):
    from napari_dfl._qt.overlays import CLASS_MAP_NAME, PROBABILITY_NAME

    viewer, widget = loop_panel
    assert widget.extract()
    assert not widget.extract(), "a second click while busy must not start a second job"
    wait_idle(widget, qtbot)
    samples = widget.session.samples
    assert set(samples.counts()) == {"epidermis", "dermis", "background"}
    [store_path] = list(widget.session.settings.stores.glob("*.zarr"))
    store = EmbeddingStore.open(store_path)
    assert not store.missing(samples.coords).any()

    widget.train_button.click()
    wait_idle(widget, qtbot)
    head = widget.session.head
    assert head is not None and set(head.classes) == set(samples.counts())
    # The figure shown is the grouped cross-validation, with what it rests on.
    assessment = widget.session.result.assessment
    assert assessment["judgeable"], assessment["reason"]
    assert assessment["n"] == len(samples) and assessment["n_groups"] == 10
    text = widget.metrics.text()
    low, high = (round(100 * v) for v in assessment["ci"])
    assert f"Balanced accuracy <b>{round(100 * assessment['balanced_accuracy'])}%</b>" in text
    assert f"(95% interval {low}%–{high}%)" in text
    assert f"{len(samples)} samples in 10 regions" in text
    # The head's validation figure opens from the panel: confusion, PR, learning curve.
    assert widget.plots_button.isVisibleTo(widget)
    dialog = widget.show_plots()
    from qtpy.QtWidgets import QScrollArea

    shown = dialog.findChild(QScrollArea).widget().pixmap()
    assert dialog.isVisible() and shown.width() > 2.5 * shown.height()
    dialog.close()

    fills = []
    widget.session.prediction_updated.connect(
        lambda *_: fills.append(widget.overlay.n_predicted))
    viewer.layers.selection.active = widget.points  # the user was adding points
    assert widget.predict()
    wait_idle(widget, qtbot)
    overlay = widget.overlay
    grid = overlay.prediction.grid
    assert overlay.n_predicted == len(grid)
    assert len(set(fills)) >= 2, "the overlay should fill in progressively"
    class_layer = viewer.layers[CLASS_MAP_NAME]
    # Only the output shown has a layer: the heatmap's comes when the user picks it.
    assert overlay.probability_layer is None
    assert not any(layer.name.startswith(PROBABILITY_NAME) for layer in viewer.layers)
    # New output layers took neither the active layer nor the selection.
    # (== and not "is": the panel sees the viewer's layers through napari's plugin proxy)
    assert viewer.layers.selection.active == widget.points
    assert list(viewer.layers.selection) == [widget.points]
    # One output visible at a time: the class map.
    assert class_layer.visible
    assert class_layer.data.shape == (*grid.grid_shape, 4)

    # Line up: sample the class map at the world position of each tile's centre and
    # compare with the slide's brightness there.
    slide = widget.session.working_slide()
    thumb = slide.thumbnail(512)
    down = slide.dimensions[0] / thumb.shape[1]
    background = overlay.prediction.classes.index("background")
    centres = grid.centers()  # level-0 (x, y)
    world = np.stack([centres[:, 1], centres[:, 0]], axis=1)
    values = np.array([class_layer.get_value(w, world=True) for w in world])
    lut = overlay.lut  # one distinct RGBA per class; row 0 is "no tile"
    assert len({tuple(row) for row in lut}) == len(lut)
    labels = np.array([np.flatnonzero((lut == v).all(axis=1))[0] for v in values]) - 1
    assert (labels == overlay.prediction.labels).all()
    glass = thumb.min(axis=-1) > 215
    white = np.array([glass[int(y / down):int((y + grid.tile_size) / down) + 1,
                            int(x / down):int((x + grid.tile_size) / down) + 1].mean() > 0.97
                      for x, y in grid.coords])
    assert white.sum() > 20
    assert (labels[white] == background).mean() > 0.8
    assert (labels[~white] == background).mean() < 0.5

    # Keys pick the class with an output layer active, through Qt's key events on the canvas;
    # the image layer's own "2" (transform mode) does not fire.
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    classes = widget.session.classes
    viewer.layers.selection.active = class_layer
    canvas = viewer.window._qt_viewer.canvas.native
    QTest.keyClick(canvas, Qt.Key.Key_2)
    assert widget.session.active == classes[1]
    assert class_layer.mode == "pan_zoom"
    assert f"Class 2: {classes[1]}" in widget.caption.text.text
    assert f"<b>{classes[1]}</b> (key 2)" in widget.classes.active_label.text()
    QTest.keyClick(canvas, Qt.Key.Key_1)
    assert widget.session.active == classes[0]
    QTest.keyClick(canvas, Qt.Key.Key_3)
    viewer.layers.selection.active = widget.points
    n_before = len(widget.session.annotations)
    widget.points.add([[1500.0, 1100.0]])
    assert labels_of(widget.points)[-1] == classes[2]
    qtbot.waitUntil(lambda: len(widget.session.annotations) == n_before + 1, timeout=5000)
    assert widget.session.annotations[-1].label == classes[2]

    # The heatmap of a chosen class, alone, named, with its legend.
    controls = widget.overlay_controls
    assert controls.choices() == ["Class map", *(f"Probability: {c}"
                                                 for c in overlay.prediction.classes),
                                  "Nothing"]
    assert all(f"{c}: {n} tiles" in controls.legend.text()
               for c, n in overlay.prediction.counts().items())
    layers_before = len(viewer.layers)
    controls.choose("Probability: epidermis")
    heat_layer = overlay.probability_layer
    assert heat_layer in viewer.layers and len(viewer.layers) == layers_before + 1
    assert viewer.layers.selection.active == widget.points  # the user's layer stays active
    # Added hidden, shown on a later turn of the event loop (its first draw is a stall of
    # its own, not one with the insertion); the class map is hidden at once.
    assert not heat_layer.visible and not class_layer.visible
    qtbot.waitUntil(lambda: heat_layer.visible, timeout=2000)
    assert not class_layer.visible
    assert heat_layer.name == f"{PROBABILITY_NAME}: epidermis"
    assert "Probability of <b>epidermis</b>" in controls.legend.text()
    epidermis = overlay.prediction.classes.index("epidermis")
    expected = overlay.heat_lut[np.round(
        overlay.prediction.probability_map(epidermis) * 255).astype(int)]
    np.testing.assert_array_equal(heat_layer.data, expected)
    controls.choose("Nothing")
    assert not heat_layer.visible and not class_layer.visible


def test_cancel_stops_an_extraction(loop_panel, qtbot):
    from napari.utils.notifications import notification_manager

    _viewer, widget = loop_panel
    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    assert widget.extract()
    qtbot.waitUntil(lambda: widget.session.job is not None and widget.session.job.done > 0,
                    timeout=120000)
    # Progress shows in the panel itself: the job, its stage and its count (the bar shows the
    # latest event on the next turn of the event loop).
    bar = widget.status.progress
    qtbot.waitUntil(lambda: bar.value() > 0, timeout=5000)
    assert bar.isVisibleTo(widget)
    assert bar.format().startswith("Extract: embedding ") and " / " in bar.format()
    assert 0 < bar.value() < bar.maximum() == len(widget.session.samples)
    widget.cancel_button.click()
    wait_idle(widget, qtbot, 60)
    assert any("Extract cancelled" in m for m in seen), seen
    assert widget.extract_button.isEnabled() and not widget.cancel_button.isEnabled()
    [store_path] = list(widget.session.settings.stores.glob("*.zarr"))
    assert len(EmbeddingStore.open(store_path)) < len(widget.session.samples)


def test_auto_mode_retrains_and_predicts_after_a_new_annotation(loop_panel, qtbot):
    from shapely.geometry import Point

    from napari_dfl._qt.overlays import HEATMAP
    from napari_dfl.core.annotations.annotation import Annotation

    _viewer, widget = loop_panel
    widget.form.tissue_spin.setValue(0.5)  # tissue tiles only: a quicker whole-slide prediction
    assert widget.session.settings.min_tissue == 0.5
    widget.auto_check.setChecked(True)  # runs at once: the demo annotations hold 3 classes
    qtbot.waitUntil(lambda: widget.auto.runs == 1, timeout=10000)
    wait_idle(widget, qtbot)
    first_head, first_overlay = widget.session.head, widget.overlay
    assert first_head is not None and first_overlay.prediction is not None
    assert first_overlay.n_predicted == len(first_overlay.prediction.grid)
    class_layer = first_overlay.class_layer
    n_samples = len(widget.session.samples)

    # a new point of dermis in the middle of the tissue: auto mode trains a new head on it
    # and refreshes the same overlay layers (no layer is added or removed)
    layers_before = len(widget.viewer.layers)
    widget.session.set_active("dermis")
    widget.session.add_annotations([Annotation(Point(1100.0, 1500.0), "dermis")])
    qtbot.waitUntil(lambda: widget.auto.runs == 2, timeout=10000)
    wait_idle(widget, qtbot)
    assert widget.session.head is not first_head
    assert len(widget.session.samples) == n_samples + 1
    assert widget.overlay is first_overlay and widget.overlay.class_layer is class_layer
    assert len(widget.viewer.layers) == layers_before
    assert len(widget.suggestions) > 0
    # Tiles below the tissue threshold were not predicted: transparent in both outputs.
    unpredicted = first_overlay.prediction.class_map() < 0
    assert unpredicted.sum() > 20
    assert (class_layer.data[unpredicted, 3] == 0).all()
    first_overlay.show(HEATMAP, "dermis")  # its layer is made now, from the same prediction
    heat = first_overlay.probability_layer.data
    assert (heat[unpredicted, 3] == 0).all() and (heat[~unpredicted, 3] == 255).all()

    widget.auto_check.setChecked(False)
    widget.session.add_annotations([Annotation(Point(1200.0, 1500.0), "dermis")])
    qtbot.wait(1500)
    assert widget.auto.runs == 2 and not widget.session.busy, "auto mode is off"


def same_weights(a, b) -> bool:
    """Whether two heads are the same: weights, standardisation and classes."""
    import torch

    sa, sb = a.model.state_dict(), b.model.state_dict()
    return (a.classes == b.classes and sa.keys() == sb.keys()
            and all(torch.equal(sa[k], sb[k]) for k in sa)
            and np.array_equal(a.mean, b.mean) and np.array_equal(a.std, b.std))


def test_the_same_annotations_give_the_same_head_in_the_panel_and_the_cli(
        loop_panel, qtbot, tmp_path):
    import subprocess
    import sys

    from napari_dfl.core.heads.head_files import load_head
    from napari_dfl.core.slides.sample_slide import SAMPLE_SLIDE

    _viewer, widget = loop_panel
    # Annotations drawn in the layers as a user would (their ids come from the layers).
    widget.session.set_active("dermis")
    widget.regions.add_rectangles(np.array([[1400.0, 900.0], [1700.0, 1300.0]]))
    widget.session.set_active("background")
    widget.points.add(np.array([[150.0, 2000.0], [2800.0, 150.0]]))
    qtbot.waitUntil(lambda: len(widget.session.annotations) == 13, timeout=5000)

    widget.train_button.click()
    wait_idle(widget, qtbot)
    first = widget.session.result
    widget.train_button.click()
    wait_idle(widget, qtbot)
    second = widget.session.result
    assert second is not first
    assert same_weights(first.head, second.head), "trained twice, two different heads"
    assert second.assessment == first.assessment

    # The CLI on the panel's exported annotations and the same store: the same head.
    exported = tmp_path / "drawn.geojson"
    assert widget.project.export_geojson(exported)
    out = tmp_path / "cli.dflhead"
    command = [sys.executable, "-m", "napari_dfl", "train", f"{SAMPLE_SLIDE}:{exported}",
               "--out", str(out), "--patch-size", "112", "--zooms", "0.5", "--variants",
               "rgb", "--stores", str(widget.session.settings.stores)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cli_head, card = load_head(out)
    assert same_weights(cli_head, first.head), "the CLI trained another head"
    assert card["assessment"] == first.assessment
