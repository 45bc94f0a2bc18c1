"""The whole loop in a real viewer with the real backbone (in its child process).

Open the sample, load the demo annotations (epidermis / dermis / background), extract,
train, predict; the overlays line up with the slide: background where the glass is white.
"""

from __future__ import annotations

import numpy as np
import pytest

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
    from napari_dfl.core.heads.config import TrainConfig

    viewer, widget = loop_panel
    assert widget.extract()
    assert not widget.extract(), "a second click while busy must not start a second job"
    wait_idle(widget, qtbot)
    samples = widget.session.samples
    assert set(samples.counts()) == {"epidermis", "dermis", "background"}
    [store_path] = list(widget.session.settings.stores.glob("*.zarr"))
    store = EmbeddingStore.open(store_path)
    assert not store.missing(samples.coords).any()

    assert widget.train(TrainConfig(max_epochs=40, patience=8))
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

    fills = []
    widget.session.prediction_updated.connect(
        lambda *_: fills.append(widget.overlay.n_predicted))
    assert widget.predict()
    wait_idle(widget, qtbot)
    overlay = widget.overlay
    grid = overlay.prediction.grid
    assert overlay.n_predicted == len(grid)
    assert len(set(fills)) >= 2, "the overlay should fill in progressively"
    assert CLASS_MAP_NAME in viewer.layers and PROBABILITY_NAME in viewer.layers
    class_layer = viewer.layers[CLASS_MAP_NAME]
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


def test_cancel_stops_an_extraction(loop_panel, qtbot):
    from napari.utils.notifications import notification_manager

    _viewer, widget = loop_panel
    seen: list[str] = []
    notification_manager.notification_ready.connect(lambda n: seen.append(str(n.message)))
    assert widget.extract()
    qtbot.waitUntil(lambda: widget.status.text().startswith("Embedded"), timeout=120000)
    widget.cancel_button.click()
    wait_idle(widget, qtbot, 60)
    assert any("Extract cancelled" in m for m in seen), seen
    assert widget.extract_button.isEnabled() and not widget.cancel_button.isEnabled()
    [store_path] = list(widget.session.settings.stores.glob("*.zarr"))
    assert len(EmbeddingStore.open(store_path)) < len(widget.session.samples)


def test_auto_mode_retrains_and_predicts_after_a_new_annotation(loop_panel, qtbot):
    from shapely.geometry import Point

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

    widget.auto_check.setChecked(False)
    widget.session.add_annotations([Annotation(Point(1200.0, 1500.0), "dermis")])
    qtbot.wait(1500)
    assert widget.auto.runs == 2 and not widget.session.busy, "auto mode is off"
