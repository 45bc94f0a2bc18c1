"""The "Deep Feature Learning" panel without the backbone: layers, classes, keys, errors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_dfl._qt import annotation_layers
from napari_dfl._qt.overlays import tile_placement
from napari_dfl.core.annotations.annotation import read_geojson

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, sample_slide_path):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    return viewer, widget


def test_panel_docks_and_picks_the_slide(panel):
    viewer, widget = panel
    assert widget.slide_layer.name == "CMU-1-Small-Region.svs"
    assert widget.slide_section.mpp_spin.value() == pytest.approx(0.499, abs=1e-3)
    assert annotation_layers.REGIONS_NAME in viewer.layers
    assert annotation_layers.POINTS_NAME in viewer.layers


def test_classes_colour_annotations_and_count_them(panel, qtbot):
    from napari_dfl.core.annotations.samples import preview_samples
    from napari_dfl.core.slides.sample_slide import SAMPLE_COMPOSITION

    _viewer, widget = panel
    # The sample slide gets the demo's composition, as napari-dfl demo uses.
    assert widget.session.settings.composition == SAMPLE_COMPOSITION
    assert widget.form.patch_spin.value() == 112
    widget.session.add_class("tumour")
    widget.session.add_class("stroma")
    regions, points = widget.regions, widget.points
    widget.session.set_active("tumour")
    regions.add_rectangles(np.array([[100, 100], [400, 400]]))
    widget.session.set_active("stroma")
    points.add(np.array([[1000, 800], [1200, 900]]))
    assert list(annotation_layers.labels_of(regions)) == ["tumour"]
    assert list(annotation_layers.labels_of(points)) == ["stroma", "stroma"]
    stroma = annotation_layers.rgba(widget.session.colors["stroma"])
    np.testing.assert_allclose(points.face_color[0], stroma)
    # Counts per class as they are drawn: regions, points and the samples they give.
    qtbot.waitUntil(lambda: "→" in widget.classes.list.item(0).text(), timeout=3000)
    preview = preview_samples(widget.session.working_slide(), widget.session.annotations,
                              SAMPLE_COMPOSITION)
    assert preview.counts == {"tumour": 8, "stroma": 2}  # 4 whole tiles, 4 more than half in
    assert widget.classes.list.item(0).text() == "1: tumour  (1 region, 0 points → 8 samples)"
    assert widget.classes.list.item(1).text() == "2: stroma  (0 regions, 2 points → 2 samples)"
    advice = widget.classes.advice
    assert advice.isVisibleTo(widget.classes)
    assert "Too few samples to judge a head (stroma 2)" in advice.text()
    assert "10 samples in all: a validation figure needs 30 or more." in advice.text()
    # A region smaller than half a tile: it gives nothing, and the panel says why.
    widget.session.set_active("tumour")
    regions.add_rectangles(np.array([[1500, 1500], [1530, 1530]]))
    qtbot.waitUntil(lambda: "smaller than half a tile" in advice.text(), timeout=3000)
    assert "1 region is smaller than half a tile (56 µm a side) and gives no sample " \
        "(tumour)" in advice.text()
    assert widget.classes.list.item(0).text() == "1: tumour  (2 regions, 0 points → 8 samples)"
    regions.selected_data = {1}
    regions.remove_selected()

    anns = widget.session.annotations
    assert sorted(a.kind for a in anns) == ["point", "point", "region"]
    region = next(a for a in anns if a.kind == "region")
    assert region.geometry.bounds == (100, 100, 400, 400)
    point = next(a for a in anns if a.kind == "point")
    assert tuple(point.points()[0]) in {(800.0, 1000.0), (900.0, 1200.0)}  # (x, y)

    widget.session.rename_class("stroma", "dermis")
    assert list(annotation_layers.labels_of(points)) == ["dermis", "dermis"]
    widget.session.set_color("dermis", "#00ff00")
    np.testing.assert_allclose(points.face_color[1], [0, 1, 0, 1])
    widget.session.remove_class("dermis")
    assert len(points.data) == 0 and len(regions.data) == 1
    assert [a.kind for a in widget.session.annotations] == ["region"]


def press(viewer, qtbot, key: str) -> None:
    """Press and release a key through napari's keymap handler (active layer first)."""
    handler = viewer.window._qt_viewer._key_map_handler
    handler.press_key(key)
    handler.release_key(key)
    qtbot.wait(10)


def test_keys_1_to_9_pick_the_active_class(panel, qtbot):
    viewer, widget = panel
    for name in ("a", "b", "c"):
        widget.session.add_class(name)
    viewer.layers.selection.active = widget.slide_layer
    press(viewer, qtbot, "2")
    assert widget.session.active == "b"
    viewer.layers.selection.active = widget.points
    press(viewer, qtbot, "3")
    assert widget.session.active == "c"
    press(viewer, qtbot, "1")
    assert widget.session.active == "a"
    widget.points.add(np.array([[10, 10]]))
    assert annotation_layers.labels_of(widget.points)[-1] == "a"


def test_geojson_annotations_load_into_the_layers(panel, sample_slide_path):
    _viewer, widget = panel
    anns = read_geojson(sample_slide_path.with_suffix(".geojson"))
    widget.session.add_annotations(anns)
    assert set(widget.session.classes) == {"epidermis", "dermis", "background"}
    assert len(widget.regions.data) == 10
    back = widget.session.annotations
    assert sorted(a.label for a in back) == sorted(a.label for a in anns)
    areas = sorted(round(a.geometry.area) for a in back)
    assert areas == sorted(round(a.geometry.area) for a in anns)


def test_errors_notify_instead_of_raising(panel, notes, qtbot, tmp_path):
    _viewer, widget = panel
    assert widget.predict() is False
    assert any("no trained head" in n for n in notes)

    widget.session.add_class("only")
    widget.regions.add_rectangles(np.array([[1200, 800], [1600, 1200]]))
    widget.form.store_edit.setText(str(tmp_path))
    widget.form.store_edit.editingFinished.emit()
    assert widget.train() is True  # the check runs in the worker, before any extraction
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=30000)
    assert any("at least two classes" in n for n in notes), notes

    # the file records its pixel size: clearing the field shows the file's value again
    widget.slide_section.mpp_spin.setValue(0.0)
    assert widget.slide_section.mpp_spin.value() == pytest.approx(0.499, abs=1e-3)
    assert widget.session.settings.mpp is None


def test_a_slide_without_mpp_warns_when_picked(make_napari_viewer, no_mpp_svs_path, notes):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(no_mpp_svs_path), plugin="napari-dfl")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    assert widget.slide_section.mpp_spin.value() == 0.0
    assert any("pixel size" in n for n in notes)
    assert widget.slide_section.mpp_spin.styleSheet(), "the missing µm/px is highlighted"
    widget.slide_section.mpp_spin.setValue(0.25)
    assert widget.session.working_slide().mpp == 0.25
    assert widget.session.settings.mpp == 0.25
    assert not widget.slide_section.mpp_spin.styleSheet()
    widget.close()
    viewer.close()

    # The µm/px typed is remembered for this slide: opened again, it is not asked again.
    notes.clear()
    viewer = make_napari_viewer(show=True)
    viewer.open(str(no_mpp_svs_path), plugin="napari-dfl")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    assert widget.session.settings.mpp == 0.25
    assert widget.slide_section.mpp_spin.value() == 0.25
    assert not widget.slide_section.mpp_spin.styleSheet()
    assert "using the 0.25 µm/px you gave it before" in widget.status.text()
    assert not any("does not record its pixel size" in n for n in notes)


def test_tile_overlay_is_centred_on_its_tiles():
    place = tile_placement(100.0)
    assert place["scale"] == (100.0, 100.0)
    # tile (0, 0) spans level-0 pixels 0..99, whose centres average 49.5
    assert place["translate"] == (49.5, 49.5)


def test_fine_tuned_backbones_are_offered(make_napari_viewer, tmp_path, monkeypatch):
    import json

    from napari_dfl.core.backbones.finetuned import CARD_FILE, CARD_FORMAT, FOLDER_ENV, WEIGHTS_FILE

    tuned = tmp_path / "backbones" / "crc-lite0"
    tuned.mkdir(parents=True)
    (tuned / WEIGHTS_FILE).write_bytes(b"weights")
    card = {"format": CARD_FORMAT, "version": 1, "name": "crc-lite0", "weights_sha256": "0",
            "base": {"name": "efficientnet-lite0", "timm_name": "efficientnet_lite0"},
            "classes": ["a", "b"], "created": "2026-11-22"}
    (tuned / CARD_FILE).write_text(json.dumps(card))
    broken = tmp_path / "backbones" / "broken"
    broken.mkdir()
    (broken / CARD_FILE).write_text("{")
    monkeypatch.setenv(FOLDER_ENV, str(tmp_path / "backbones"))
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    combo = widget.form.backbone_combo
    items = [combo.itemText(i) for i in range(combo.count())]
    assert items[0] == "efficientnet-lite0" and items[-1] == "finetuned:crc-lite0"
    assert not any("broken" in item for item in items)
    # picking from the list sets the backbone; so does typing any timm name or hub id
    combo.setCurrentIndex(items.index("finetuned:crc-lite0"))
    combo.activated.emit(combo.currentIndex())
    assert widget.session.settings.backbone == "finetuned:crc-lite0"
    combo.lineEdit().setText("hf-hub:org/some-model")
    assert widget.session.settings.backbone == "finetuned:crc-lite0"  # not while typing
    combo.lineEdit().editingFinished.emit()
    assert widget.session.settings.backbone == "hf-hub:org/some-model"


def test_opening_the_panel_module_leaves_torch_to_the_background():
    """torch takes ~1.5 s to import: the warm-up thread imports it, not the GUI thread."""
    import subprocess
    import sys

    code = "import sys, napari_dfl._qt.panel; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_drawing_without_a_class_says_what_to_do(panel):
    _viewer, widget = panel
    widget.points.add(np.array([[500.0, 600.0]]))
    assert widget.session.annotations == []
    assert "1 drawn item(s) have no class and are not kept: add a class" in \
        widget.status.text()


def test_the_context_box_shows_the_default_and_sets_another(panel, qtbot):
    """The sample's centred context shows; the keyboard picks another; other edits keep it."""
    _viewer, widget = panel
    form = widget.form
    combo = form.context_combo
    assert widget.session.settings.composition.context == "centred"  # the small sample's
    assert combo.currentData() == "centred"
    combo.setFocus()
    qtbot.keyClick(combo, Qt.Key.Key_Down)  # the next choice: nearest, the tissue default
    assert widget.session.settings.composition.context == "nearest"
    form.gray_check.setChecked(not form.gray_check.isChecked())  # another field changes...
    assert widget.session.settings.composition.context == "nearest"  # ...the context stays
    for zooms, enabled in (("0.5", False), ("0.5, 2", True)):  # x20 alone has no context...
        form.zooms_edit.selectAll()
        qtbot.keyClicks(form.zooms_edit, zooms)
        qtbot.keyClick(form.zooms_edit, Qt.Key.Key_Return)
        assert len(widget.session.settings.composition.zooms) == len(zooms.split(","))
        assert combo.isEnabled() is enabled
    assert widget.session.settings.composition.context == "nearest"  # ...and it comes back
    settings = widget.session.settings
    widget.session.set_settings(replace(settings, composition=replace(
        settings.composition, context="centred")))
    assert combo.currentData() == "centred"  # the form shows what the session holds


def test_a_short_window_scrolls_the_panel_instead_of_squeezing_it(panel, qtbot):
    viewer, widget = panel
    window = viewer.window._qt_window
    window.resize(1200, 650)  # a laptop's window, the settings open
    widget.advanced.expand(animate=False)
    content = widget.scroll_area.widget()
    qtbot.waitUntil(lambda: widget.scroll_area.verticalScrollBar().maximum() > 0,
                    timeout=3000)
    # every section keeps at least its minimum height: the panel scrolls instead
    assert content.height() >= content.minimumSizeHint().height()
    assert widget.scroll_area.viewport().height() < content.height()
