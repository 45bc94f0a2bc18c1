"""Autosave, restore, project save/open and GeoJSON import/export of the panel."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_dfl._qt import layers as annotation_layers
from napari_dfl._qt.project import default_project_dir
from napari_dfl.core.annotations.annotation import Annotation, read_geojson
from napari_dfl.core.project import folder as core_project

pytestmark = pytest.mark.gui

PANEL = ("napari-dfl", "Deep Feature Learning")


@pytest.fixture
def slide_copy(sample_slide_path, tmp_path):
    """The sample slide copied into a writable folder of its own."""
    folder = tmp_path / "slides"
    folder.mkdir()
    target = folder / sample_slide_path.name
    shutil.copyfile(sample_slide_path, target)
    return target


def open_panel(make_napari_viewer, path):
    viewer = make_napari_viewer(show=True)
    viewer.open(str(path), plugin="napari-dfl")
    _, widget = viewer.window.add_plugin_dock_widget(*PANEL)
    return viewer, widget


def draw(widget) -> None:
    """Two classes, two rectangles and three points, as a user would."""
    widget.classes.add_class("tumour", "#ff0000")
    widget.classes.add_class("stroma", "#00ff00")
    widget.classes.set_active("tumour")
    widget.regions.add_rectangles(np.array([[100, 100], [400, 400]]))
    widget.classes.set_active("stroma")
    widget.regions.add_rectangles(np.array([[600, 600], [900, 1000]]))
    widget.points.add(np.array([[1000, 800], [1200, 900], [1300, 950]]))


def summary(annotations) -> list:
    return sorted((a.kind, a.label, tuple(round(v) for v in a.geometry.bounds))
                  for a in annotations)


def test_annotations_autosave_and_come_back(make_napari_viewer, slide_copy, qtbot):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    folder = default_project_dir(slide_copy)
    assert folder == slide_copy.parent / "CMU-1-Small-Region.dfl"
    path = folder / core_project.ANNOTATIONS_NAME
    draw(widget)
    drawn = summary(widget.annotations())

    def saved() -> None:
        assert path.is_file() and summary(read_geojson(path)) == drawn

    qtbot.waitUntil(saved, timeout=5000)
    assert core_project.geojson_colors(path) == {"tumour": "#ff0000", "stroma": "#00ff00"}
    widget.close()

    _viewer2, again = open_panel(make_napari_viewer, slide_copy)
    assert summary(again.annotations()) == drawn
    assert again.classes.colors == {"tumour": "#ff0000", "stroma": "#00ff00"}
    assert list(annotation_layers.labels_of(again.points)) == ["stroma"] * 3
    np.testing.assert_allclose(again.points.face_color[0], [0, 1, 0, 1])


def test_the_bundled_sample_is_never_written_to(make_napari_viewer, sample_slide_path):
    _viewer, widget = open_panel(make_napari_viewer, sample_slide_path)
    assert default_project_dir(sample_slide_path) is None
    assert widget.project.project_dir() is None
    widget.classes.add_class("tumour")
    widget.regions.add_rectangles(np.array([[100, 100], [400, 400]]))
    assert not widget.project.timer.isActive()
    assert widget.project.autosave() is None


def test_core_project_round_trip_and_damage(tmp_path):
    from shapely.geometry import Point, box

    anns = [Annotation(box(0, 0, 10, 10), "a"), Annotation(Point(5, 6), "b")]
    folder = tmp_path / "p.dfl"
    settings = {"slide": str(tmp_path / "nowhere.svs"), "mpp": 0.5, "backbone": "x",
                "store_dir": str(tmp_path / "gone")}
    core_project.save_project(folder, annotations=anns, settings=settings,
                              colors={"a": "#112233", "b": "#445566"})
    project = core_project.load_project(folder)
    assert summary(project.annotations) == summary(anns)
    assert project.colors == {"a": "#112233", "b": "#445566"}
    assert project.settings["mpp"] == 0.5 and project.head is None
    assert len(project.problems) == 2  # the store and the slide are not there
    assert any("Extract" in p for p in project.problems)

    (folder / core_project.SETTINGS_NAME).write_text("{not json")
    project = core_project.load_project(folder)
    assert len(project.annotations) == 2
    assert any("damaged" in p for p in project.problems)
    (folder / core_project.ANNOTATIONS_NAME).unlink()
    project = core_project.load_project(folder)
    assert project.annotations == [] and any("missing" in p for p in project.problems)
    with pytest.raises(core_project.ProjectError):
        core_project.load_project(tmp_path / "absent")


def test_save_and_open_project_through_the_panel(make_napari_viewer, slide_copy, tmp_path,
                                                  notes, qtbot):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    widget.zooms_edit.setText("1.0")
    widget.gray_check.setChecked(False)
    drawn = summary(widget.annotations())
    project = tmp_path / "my.dflproject"
    assert widget.save_project(project)
    settings = json.loads((project / core_project.SETTINGS_NAME).read_text())
    assert settings["zooms"] == "1.0" and settings["variants"] == ["rgb"]
    assert settings["classes"] == [{"name": "tumour", "color": "#ff0000"},
                                   {"name": "stroma", "color": "#00ff00"}]
    widget.close()

    viewer2 = make_napari_viewer(show=True)
    viewer2.open(str(slide_copy), plugin="napari-dfl")
    _, fresh = viewer2.window.add_plugin_dock_widget(*PANEL)
    fresh.regions.add_rectangles(np.array([[5, 5], [50, 50]]))  # replaced by the project
    assert fresh.open_project(project)
    assert summary(fresh.annotations()) == drawn
    assert fresh.zooms_edit.text() == "1.0" and not fresh.gray_check.isChecked()
    assert fresh.project.folder == project
    fresh.points.add(np.array([[10.0, 20.0]]))  # autosave now goes to the project
    qtbot.waitUntil(lambda: len(read_geojson(project / "annotations.geojson")) == 6,
                    timeout=5000)


def test_a_half_deleted_project_notifies_and_keeps_annotations(make_napari_viewer, slide_copy,
                                                              tmp_path, notes):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    project = tmp_path / "moved.dflproject"
    assert widget.save_project(project)
    data = json.loads((project / core_project.SETTINGS_NAME).read_text())
    data["store_dir"] = str(tmp_path / "deleted-store")
    data["head"] = core_project.HEAD_NAME  # the head folder is gone
    (project / core_project.SETTINGS_NAME).write_text(json.dumps(data))
    notes.clear()
    assert widget.open_project(project)
    assert len(widget.annotations()) == 5
    message = " ".join(notes)
    assert "deleted-store" in message and "Extract" in message
    assert "head" in message and "Train" in message

    (project / core_project.SETTINGS_NAME).write_text("garbled {")
    notes.clear()
    assert widget.open_project(project)
    assert len(widget.annotations()) == 5
    assert "damaged" in " ".join(notes)
    notes.clear()
    assert not widget.open_project(tmp_path / "nowhere")
    assert "does not exist" in " ".join(notes)


def test_geojson_import_and_export(make_napari_viewer, slide_copy, sample_slide_path,
                                   tmp_path, notes):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    demo = sample_slide_path.with_suffix(".geojson")
    expected = read_geojson(demo)
    assert widget.project.import_geojson(demo) == len(expected)
    assert summary(widget.annotations()) == summary(expected)
    out = tmp_path / "export.geojson"
    assert widget.project.export_geojson(out)
    assert summary(read_geojson(out)) == summary(expected)
    notes.clear()
    assert not widget.project.export_predictions(tmp_path / "pred.geojson")
    assert "no prediction" in " ".join(notes)
    bad = tmp_path / "bad.geojson"
    bad.write_text("{")
    notes.clear()
    assert widget.project.import_geojson(bad) == 0
    assert "not valid JSON" in " ".join(notes)


def small_head(classes=("a", "b")):
    """A real head trained in a moment on separable random embeddings."""
    from napari_dfl.core.heads.training import TrainConfig, train_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x[20:] += 3.0
    labels = np.array([classes[0]] * 20 + [classes[1]] * 20)
    generator = train_head(x, labels, None, TrainConfig(max_epochs=3), classes=list(classes))
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


EXTRACTOR = {"kind": "test", "backbone": {"name": "fake", "weights_sha256": "0" * 64,
                                          "embed_dim": 8},
             "composition": {"patch_size": 112, "zooms": [1.0], "variants": ["rgb"]}}


def test_core_project_keeps_the_head(tmp_path):
    from shapely.geometry import box

    head = small_head()
    folder = tmp_path / "p.dfl"
    core_project.save_project(folder, annotations=[Annotation(box(0, 0, 9, 9), "a")],
                              settings={}, colors={"a": "#112233", "b": "#445566"},
                              head=head, extractor=EXTRACTOR)
    project = core_project.load_project(folder)
    assert project.head is not None and project.head.classes == ["a", "b"]
    assert project.card["colors"] == {"a": "#112233", "b": "#445566"}
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(project.head.predict_proba(x), head.predict_proba(x),
                               atol=1e-6)


def test_a_head_card_is_checked_against_the_project_settings():
    card = {"extractor": {"backbone": {"name": "efficientnet-lite0"},
                          "composition": {"patch_size": 224, "zooms": [0.5, 2.0],
                                          "variants": ["rgb", "gray"]}}}
    same = {"backbone": "efficientnet-lite0", "patch_size": 224, "zooms": "0.5, 2",
            "variants": ["rgb", "gray"]}
    assert core_project.extractor_mismatch(card, same) == []
    assert core_project.extractor_mismatch(card, {}) == []  # nothing said, nothing compared
    [problem] = core_project.extractor_mismatch(
        card, {**same, "backbone": "resnet50", "zooms": "0.5", "variants": ["rgb"]})
    assert "backbone efficientnet-lite0 (now: resnet50)" in problem
    assert "zooms [0.5, 2.0] (now: [0.5])" in problem and "variants" in problem
    assert "patch_size" not in problem and "Train again" in problem
    [garbled] = core_project.extractor_mismatch(card, {**same, "zooms": "half"})
    assert "zooms" in garbled


def test_prediction_exports_as_detections(make_napari_viewer, slide_copy, tmp_path):
    from napari_dfl._qt.overlays import PredictionOverlay
    from napari_dfl.core.slides.tissue import TileGrid

    viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    coords = np.array([[0, 0], [224, 0]], np.int64)
    grid = TileGrid(coords, np.array([[0, 0], [0, 1]]), (1, 2), 224.0, 112, 1.0,
                    np.ones(2))
    widget.overlay = PredictionOverlay(viewer, grid, ["tumour", "stroma"],
                                       widget.classes.colors, widget.slide_layer)
    widget.overlay.update(coords, np.array([[0.9, 0.1], [0.2, 0.8]], np.float32))
    out = tmp_path / "pred.geojson"
    assert widget.project.export_predictions(out)
    features = json.loads(out.read_text())["features"]
    assert [f["properties"]["objectType"] for f in features] == ["detection"] * 2
    assert [f["properties"]["classification"]["name"] for f in features] == \
        ["tumour", "stroma"]
    assert features[0]["properties"]["classification"]["color"] == [255, 0, 0]


def test_a_saved_head_reopens_in_the_panel(make_napari_viewer, slide_copy, tmp_path,
                                           monkeypatch):
    from types import SimpleNamespace

    from napari_dfl.workflows import panel_jobs as pipeline

    monkeypatch.setattr(pipeline, "known_store", lambda _s: SimpleNamespace(identity=EXTRACTOR))
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    widget._on_trained(small_head(("tumour", "stroma")), None)
    project = tmp_path / "trained.dflproject"
    assert widget.save_project(project)
    assert (project / core_project.HEAD_NAME / "model_card.json").is_file()
    widget.close()

    viewer2 = make_napari_viewer(show=True)
    viewer2.open(str(slide_copy), plugin="napari-dfl")
    _, fresh = viewer2.window.add_plugin_dock_widget(*PANEL)
    assert fresh.open_project(project)
    assert fresh.head is not None and fresh.head.classes == ["tumour", "stroma"]
    assert fresh.predict_button.isEnabled()


def test_picking_another_slide_keeps_autosaving_to_the_first(make_napari_viewer, slide_copy,
                                                             tmp_path, qtbot):
    viewer, widget = open_panel(make_napari_viewer, slide_copy)
    other = tmp_path / "other" / "second.svs"
    other.parent.mkdir()
    shutil.copyfile(slide_copy, other)
    viewer.open(str(other), plugin="napari-dfl")
    draw(widget)
    widget.layer_combo.setCurrentText(viewer.layers[-1].name)
    assert widget.slide_layer.metadata["slide"].path == other
    widget.points.add(np.array([[10.0, 20.0]]))
    first = default_project_dir(slide_copy) / core_project.ANNOTATIONS_NAME
    qtbot.waitUntil(lambda: first.is_file() and len(read_geojson(first)) == 6, timeout=5000)
    assert not (default_project_dir(other) / core_project.ANNOTATIONS_NAME).exists()


def test_a_damaged_autosave_is_never_overwritten(make_napari_viewer, slide_copy, notes, qtbot):
    damaged = default_project_dir(slide_copy) / core_project.ANNOTATIONS_NAME
    damaged.parent.mkdir(parents=True)
    damaged.write_text('{"type": "FeatureCollection", "features": [')
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    assert "could not be read" in " ".join(notes)
    draw(widget)
    recovered = damaged.parent.with_name(damaged.parent.name + ".recovered")
    path = recovered / core_project.ANNOTATIONS_NAME
    qtbot.waitUntil(lambda: path.is_file() and len(read_geojson(path)) == 5, timeout=5000)
    assert damaged.read_text() == '{"type": "FeatureCollection", "features": ['


def press(keymap_provider, key: str) -> None:
    """Run what ``key`` is bound to on a layer or viewer, as napari's key dispatch would."""
    from app_model.types import KeyBinding

    keymap_provider.keymap[KeyBinding.from_str(key)](keymap_provider)


def test_suggestions_keys_and_a_saved_prediction(make_napari_viewer, slide_copy, tmp_path):
    from napari_dfl._qt.overlays import CLASS_MAP_NAME
    from napari_dfl._qt.suggestions import SUGGESTIONS_NAME
    from napari_dfl.core.heads.suggest import annotated_tiles, margins
    from napari_dfl.core.heads.tile_prediction import SlidePrediction
    from napari_dfl.core.slides.tissue import tile_grid

    viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    grid = tile_grid(widget.current_slide(), 224, 0.5, min_tissue=0)
    p = np.random.default_rng(3).uniform(0.5, 1.0, len(grid))
    prediction = SlidePrediction(grid, ["tumour", "stroma"],
                                 np.stack([p, 1 - p], axis=1).astype(np.float32))
    widget.show_prediction(prediction)
    assert SUGGESTIONS_NAME in viewer.layers and len(widget.suggestions) == 20
    annotated = annotated_tiles(grid, widget.annotations())
    assert annotated.any()
    chosen = [np.flatnonzero((grid.centers() == c).all(axis=1))[0]
              for c in widget.suggestions.centres]
    assert not annotated[chosen].any(), "annotated tiles must not be suggested"
    shown = margins(prediction.proba[chosen])
    assert np.all(np.diff(shown) >= 0), "least certain first"
    assert shown[0] == margins(prediction.proba)[~annotated].min()

    press(widget.points, "N")  # the key, on the annotation layer a user has selected
    x, y = widget.suggestions.current
    np.testing.assert_allclose(viewer.scene.camera.center[-2:], (y, x))
    widget.classes.set_active("stroma")
    before = len(widget.points.data)
    press(viewer, "K")
    assert len(widget.points.data) == before + 1
    np.testing.assert_allclose(widget.points.data[-1], (y, x))
    assert annotation_layers.labels_of(widget.points)[-1] == "stroma"
    assert len(widget.suggestions) == 19 and widget.suggestions.current != (x, y)

    project = tmp_path / "with_prediction"
    assert widget.save_project(project)
    assert (project / core_project.PREDICTION_NAME).is_file()
    widget.close()
    viewer2 = make_napari_viewer(show=True)
    viewer2.open(str(slide_copy), plugin="napari-dfl")
    _, fresh = viewer2.window.add_plugin_dock_widget(*PANEL)
    assert fresh.open_project(project)
    assert fresh.overlay is not None and CLASS_MAP_NAME in viewer2.layers
    np.testing.assert_array_equal(fresh.overlay.prediction.proba, prediction.proba)
    np.testing.assert_array_equal(viewer2.layers[CLASS_MAP_NAME].data,
                                  fresh.overlay.lut[prediction.class_map() + 1])
    assert len(fresh.suggestions) == 20 and SUGGESTIONS_NAME in viewer2.layers


def test_a_head_of_another_extractor_is_refused_before_any_work(make_napari_viewer, slide_copy,
                                                                notes):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    widget._on_trained(small_head(("tumour", "stroma")),
                       extractor={"backbone": "resnet50",
                                  "composition": {"patch_size": 224, "zooms": [0.5, 2.0],
                                                  "variants": ["rgb", "gray"]}})
    assert not widget.predict()
    assert not widget.jobs.busy
    assert any("backbone resnet50" in m and "Train again" in m for m in notes), notes
