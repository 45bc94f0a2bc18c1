"""Autosave, restore, project save/open and GeoJSON import/export of the panel."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from napari_dfl._qt import annotation_layers
from napari_dfl.core.annotations.annotation import Annotation, read_geojson
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.project import folder as core_project
from napari_dfl.core.project.autosave import autosave_folder, folder_slide
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.workflows.train import TrainingResult

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


def autosave_file(path):
    with Slide(path) as slide:
        return autosave_folder(slide) / core_project.ANNOTATIONS_NAME


def draw(widget) -> None:
    """Two classes, two rectangles and three points, as a user would."""
    widget.session.add_class("tumour", "#ff0000")
    widget.session.add_class("stroma", "#00ff00")
    widget.session.set_active("tumour")
    widget.regions.add_rectangles(np.array([[100, 100], [400, 400]]))
    widget.session.set_active("stroma")
    widget.regions.add_rectangles(np.array([[600, 600], [900, 1000]]))
    widget.points.add(np.array([[1000, 800], [1200, 900], [1300, 950]]))


def summary(annotations) -> list:
    return sorted((a.kind, a.label, tuple(round(v) for v in a.geometry.bounds))
                  for a in annotations)


def test_annotations_autosave_and_come_back_with_their_ids(make_napari_viewer, slide_copy,
                                                           qtbot):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    path = autosave_file(slide_copy)
    assert not str(path).startswith(str(slide_copy.parent)), "never next to the slide"
    draw(widget)
    drawn = summary(widget.session.annotations)
    ids = sorted(a.id for a in widget.session.annotations)
    assert len(set(ids)) == 5 and all(ids)

    def saved() -> None:
        assert path.is_file() and summary(read_geojson(path)) == drawn

    qtbot.waitUntil(saved, timeout=5000)
    assert core_project.geojson_colors(path) == {"tumour": "#ff0000", "stroma": "#00ff00"}
    assert folder_slide(path.parent)["path"] == str(slide_copy.resolve())
    widget.close()

    _viewer2, again = open_panel(make_napari_viewer, slide_copy)
    assert summary(again.session.annotations) == drawn
    assert sorted(a.id for a in again.session.annotations) == ids
    assert again.session.colors == {"tumour": "#ff0000", "stroma": "#00ff00"}
    assert list(annotation_layers.labels_of(again.points)) == ["stroma"] * 3
    np.testing.assert_allclose(again.points.face_color[0], [0, 1, 0, 1])


def test_the_bundled_sample_autosaves_to_the_user_folder(make_napari_viewer, sample_slide_path,
                                                         qtbot):
    _viewer, widget = open_panel(make_napari_viewer, sample_slide_path)
    folder = widget.project.project_dir()
    assert folder is not None and sample_slide_path.parent not in folder.parents
    widget.session.add_class("tumour")
    widget.regions.add_rectangles(np.array([[100, 100], [400, 400]]))
    qtbot.waitUntil(lambda: (folder / core_project.ANNOTATIONS_NAME).is_file(), timeout=5000)
    assert sorted(p.name for p in sample_slide_path.parent.iterdir()) == [
        "CMU-1-Small-Region.geojson", "CMU-1-Small-Region.svs"]


def test_core_project_round_trip_and_damage(tmp_path):
    from shapely.geometry import Point, box

    anns = [Annotation(box(0, 0, 10, 10), "a"), Annotation(Point(5, 6), "b")]
    folder = tmp_path / "p.dfl"
    settings = Settings(backbone="x", mpp=0.5, store_dir=str(tmp_path / "gone"))
    file = core_project.ProjectFile(str(tmp_path / "nowhere.svs"), settings,
                                    {"a": "#112233", "b": "#445566"})
    core_project.save_project(folder, annotations=anns, file=file)
    project = core_project.load_project(folder)
    assert summary(project.annotations) == summary(anns)
    assert project.file.colors == {"a": "#112233", "b": "#445566"}
    assert project.file.settings == settings and project.head is None
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


def test_a_version_1_project_file_still_opens(tmp_path):
    folder = tmp_path / "old.dfl"
    folder.mkdir()
    (folder / core_project.ANNOTATIONS_NAME).write_text(
        '{"type": "FeatureCollection", "features": []}')
    (folder / core_project.SETTINGS_NAME).write_text(json.dumps({
        "format": "napari-dfl project", "format_version": 1, "slide": None, "mpp": None,
        "backbone": "efficientnet-lite0", "patch_size": 112, "zooms": "0.5, 2",
        "variants": ["rgb"], "min_tissue": 0.3, "store_dir": None,
        "classes": [{"name": "a", "color": "#010203"}], "head": None, "prediction": None}))
    project = core_project.load_project(folder)
    settings = project.file.settings
    # version 1 read every part at its patch size: the project keeps that meaning
    assert settings.composition == Composition(112, (0.5, 2.0), ("rgb",), 112)
    assert settings.min_tissue == 0.3 and project.file.colors == {"a": "#010203"}
    assert project.problems == []


def test_save_and_open_project_through_the_panel(make_napari_viewer, slide_copy, tmp_path,
                                                  qtbot):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    widget.form.zooms_edit.setText("1.0")
    widget.form.zooms_edit.editingFinished.emit()
    widget.form.gray_check.setChecked(False)
    drawn = summary(widget.session.annotations)
    project = tmp_path / "my.dflproject"
    assert widget.project.save(project)
    saved = json.loads((project / core_project.SETTINGS_NAME).read_text())
    assert saved["settings"]["composition"] == {"patch_size": 224, "zooms": [1.0],
                                                "variants": ["rgb"], "input_size": None}
    assert saved["classes"] == [{"name": "tumour", "color": "#ff0000"},
                                {"name": "stroma", "color": "#00ff00"}]
    widget.close()

    viewer2 = make_napari_viewer(show=True)
    viewer2.open(str(slide_copy), plugin="napari-dfl")
    _, fresh = viewer2.window.add_plugin_dock_widget(*PANEL)
    assert summary(fresh.session.annotations) == drawn  # the autosave came back
    fresh.regions.add_rectangles(np.array([[5, 5], [50, 50]]))  # replaced by the project
    assert fresh.project.open(project)
    assert summary(fresh.session.annotations) == drawn
    assert fresh.form.zooms_edit.text() == "1" and not fresh.form.gray_check.isChecked()
    assert fresh.project.folder == project
    fresh.points.add(np.array([[10.0, 20.0]]))  # autosave now goes to the project
    qtbot.waitUntil(lambda: len(read_geojson(project / "annotations.geojson")) == 6,
                    timeout=5000)


def test_a_half_deleted_project_notifies_and_keeps_annotations(make_napari_viewer, slide_copy,
                                                              tmp_path, notes):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    project = tmp_path / "moved.dflproject"
    assert widget.project.save(project)
    data = json.loads((project / core_project.SETTINGS_NAME).read_text())
    data["settings"]["store_dir"] = str(tmp_path / "deleted-store")
    data["head"] = core_project.HEAD_NAME  # the head folder is gone
    (project / core_project.SETTINGS_NAME).write_text(json.dumps(data))
    notes.clear()
    assert widget.project.open(project)
    assert len(widget.session.annotations) == 5
    message = " ".join(notes)
    assert "deleted-store" in message and "Extract" in message
    assert "head" in message and "Train" in message

    (project / core_project.SETTINGS_NAME).write_text("garbled {")
    notes.clear()
    assert widget.project.open(project)
    assert len(widget.session.annotations) == 5
    assert "damaged" in " ".join(notes)
    notes.clear()
    assert not widget.project.open(tmp_path / "nowhere")
    assert "does not exist" in " ".join(notes)


def test_geojson_import_and_export(make_napari_viewer, slide_copy, sample_slide_path,
                                   tmp_path, notes):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    demo = sample_slide_path.with_suffix(".geojson")
    expected = read_geojson(demo)
    assert widget.project.import_geojson(demo) == len(expected)
    assert summary(widget.session.annotations) == summary(expected)
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
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.training import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x[20:] += 3.0
    labels = np.array([classes[0]] * 20 + [classes[1]] * 20)
    return fit(x, labels, None, TrainConfig(max_epochs=3), classes=list(classes))


EXTRACTOR = Extractor({"name": "efficientnet-lite0", "weights_sha256": "0" * 64,
                       "embed_dim": 8}, Composition(112, (1.0,), ("rgb",)))


def test_core_project_keeps_the_head(tmp_path):
    from shapely.geometry import box

    head = small_head()
    folder = tmp_path / "p.dfl"
    file = core_project.ProjectFile(None, Settings(composition=EXTRACTOR.composition),
                                    {"a": "#112233", "b": "#445566"})
    core_project.save_project(folder, annotations=[Annotation(box(0, 0, 9, 9), "a")],
                              file=file, head=head, extractor=EXTRACTOR)
    project = core_project.load_project(folder)
    assert project.head is not None and project.head.classes == ["a", "b"]
    assert project.card["colors"] == {"a": "#112233", "b": "#445566"}
    assert project.problems == []
    x = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)
    np.testing.assert_allclose(project.head.predict_proba(x), head.predict_proba(x),
                               atol=1e-6)


def test_a_head_card_is_checked_against_the_project_settings(tmp_path):
    from shapely.geometry import box

    folder = tmp_path / "p.dfl"
    other = Settings(backbone="resnet50", composition=Composition(112, (0.5,), ("rgb",)))
    core_project.save_project(folder, annotations=[Annotation(box(0, 0, 9, 9), "a")],
                              file=core_project.ProjectFile(None, other), head=small_head(),
                              extractor=EXTRACTOR)
    [problem] = core_project.load_project(folder).problems
    assert "backbone efficientnet-lite0 (now: resnet50)" in problem
    assert "zooms [1] (now: [0.5])" in problem and "Train again" in problem
    assert "patch_size" not in problem


def test_prediction_exports_as_detections(make_napari_viewer, slide_copy, tmp_path):
    from napari_dfl.core.heads.tile_prediction import TilePrediction
    from napari_dfl.core.slides.tissue import TileGrid

    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    coords = np.array([[0, 0], [224, 0]], np.int64)
    grid = TileGrid(coords, np.array([[0, 0], [0, 1]]), (1, 2), 224.0, 112, 1.0,
                    np.ones(2))
    widget.session.set_prediction(TilePrediction(
        grid, ["tumour", "stroma"], np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)))
    out = tmp_path / "pred.geojson"
    assert widget.project.export_predictions(out)
    features = json.loads(out.read_text())["features"]
    assert [f["properties"]["objectType"] for f in features] == ["detection"] * 2
    assert [f["properties"]["classification"]["name"] for f in features] == \
        ["tumour", "stroma"]
    assert features[0]["properties"]["classification"]["color"] == [255, 0, 0]


def test_a_saved_head_reopens_in_the_panel(make_napari_viewer, slide_copy, tmp_path):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    widget.session.set_result(TrainingResult(small_head(("tumour", "stroma")), EXTRACTOR))
    project = tmp_path / "trained.dflproject"
    assert widget.project.save(project)
    assert (project / core_project.HEAD_NAME / "model_card.json").is_file()
    widget.close()

    viewer2 = make_napari_viewer(show=True)
    viewer2.open(str(slide_copy), plugin="napari-dfl")
    _, fresh = viewer2.window.add_plugin_dock_widget(*PANEL)
    assert fresh.project.open(project)
    assert fresh.session.head is not None
    assert fresh.session.head.classes == ["tumour", "stroma"]
    assert fresh.session.result.extractor == EXTRACTOR
    assert fresh.predict_button.isEnabled()
    # This head was saved without an assessment: the panel says so instead of a figure.
    assert fresh.metrics.text().startswith("No assessment of this head")


def test_picking_another_slide_shows_its_own_annotations(make_napari_viewer, slide_copy,
                                                         tmp_path, qtbot):
    viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    first = autosave_file(slide_copy)
    other = tmp_path / "other" / "second.svs"
    other.parent.mkdir()
    shutil.copyfile(slide_copy, other)
    with open(other, "ab") as handle:  # the same pixels, another file: another slide
        handle.write(b"\0" * 16)
    viewer.open(str(other), plugin="napari-dfl")
    widget.slide_section.layer_combo.setCurrentText(viewer.layers[-1].name)
    assert widget.session.slide.path == other
    assert widget.session.annotations == [], "the first slide's annotations stay with it"
    qtbot.waitUntil(lambda: first.is_file() and len(read_geojson(first)) == 5, timeout=5000)
    widget.points.add(np.array([[10.0, 20.0]]))
    second = autosave_file(other)
    qtbot.waitUntil(lambda: second.is_file() and len(read_geojson(second)) == 1, timeout=5000)
    assert len(read_geojson(first)) == 5
    widget.slide_section.layer_combo.setCurrentText(slide_copy.name)
    assert len(widget.session.annotations) == 5


def test_a_damaged_autosave_is_never_overwritten(make_napari_viewer, slide_copy, notes, qtbot):
    damaged = autosave_file(slide_copy)
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


def test_suggestions_keys_and_a_saved_prediction(make_napari_viewer, slide_copy, tmp_path,
                                                 qtbot):
    from napari_dfl._qt.overlays import CLASS_MAP_NAME
    from napari_dfl._qt.suggestions import SUGGESTIONS_NAME
    from napari_dfl.core.heads.suggest import annotated_tiles, margins
    from napari_dfl.core.heads.tile_prediction import TilePrediction
    from napari_dfl.core.slides.tissue import tile_grid

    viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    grid = tile_grid(widget.session.working_slide(), 224, 0.5, min_tissue=0)
    p = np.random.default_rng(3).uniform(0.5, 1.0, len(grid))
    prediction = TilePrediction(grid, ["tumour", "stroma"],
                                np.stack([p, 1 - p], axis=1).astype(np.float32))
    widget.session.set_prediction(prediction)
    assert SUGGESTIONS_NAME in viewer.layers and len(widget.suggestions) == 20
    # Added hidden, shown on a later turn of the event loop (its first draw stalls apart).
    suggestions_layer = viewer.layers[SUGGESTIONS_NAME]
    assert not suggestions_layer.visible
    qtbot.waitUntil(lambda: suggestions_layer.visible, timeout=2000)
    annotated = annotated_tiles(grid, widget.session.annotations)
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
    widget.session.set_active("stroma")
    before = len(widget.points.data)
    press(viewer, "K")
    assert len(widget.points.data) == before + 1
    np.testing.assert_allclose(widget.points.data[-1], (y, x))
    assert annotation_layers.labels_of(widget.points)[-1] == "stroma"
    assert len(widget.suggestions) == 19 and widget.suggestions.current != (x, y)

    project = tmp_path / "with_prediction"
    assert widget.project.save(project)
    assert (project / core_project.PREDICTION_NAME).is_file()
    widget.close()
    viewer2 = make_napari_viewer(show=True)
    viewer2.open(str(slide_copy), plugin="napari-dfl")
    _, fresh = viewer2.window.add_plugin_dock_widget(*PANEL)
    assert fresh.project.open(project)
    assert fresh.overlay.prediction is not None and CLASS_MAP_NAME in viewer2.layers
    np.testing.assert_array_equal(fresh.overlay.prediction.proba, prediction.proba)
    np.testing.assert_array_equal(viewer2.layers[CLASS_MAP_NAME].data,
                                  fresh.overlay.lut[prediction.class_map() + 1])
    assert len(fresh.suggestions) == 20 and SUGGESTIONS_NAME in viewer2.layers


def test_a_head_of_another_extractor_is_refused_before_any_work(make_napari_viewer, slide_copy,
                                                                notes):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw(widget)
    other = Extractor({"name": "resnet50"}, Composition(224, (0.5, 2.0), ("rgb", "gray")))
    widget.session.set_result(TrainingResult(small_head(("tumour", "stroma")), other))
    assert not widget.predict()
    assert not widget.session.busy
    assert any("backbone resnet50" in m and "Train again" in m for m in notes), notes


def test_deleting_a_class_asks_keeps_a_copy_and_can_be_undone(make_napari_viewer, slide_copy,
                                                              qtbot):
    from napari_dfl._qt.overlays import CLASS_MAP_NAME, PROBABILITY_NAME
    from napari_dfl.core.heads.tile_prediction import TilePrediction
    from napari_dfl.core.slides.tissue import tile_grid

    viewer, widget = open_panel(make_napari_viewer, slide_copy)
    session, classes = widget.session, widget.classes
    draw(widget)  # tumour: 1 region; stroma: 1 region, 3 points
    result = TrainingResult(small_head(("tumour", "stroma")), EXTRACTOR)
    session.set_result(result)
    grid = tile_grid(session.working_slide(), 224, 0.5, min_tissue=0)
    p = np.random.default_rng(3).uniform(0.5, 1.0, len(grid))
    session.set_prediction(TilePrediction(grid, ["tumour", "stroma"],
                                          np.stack([p, 1 - p], axis=1).astype(np.float32)))
    assert CLASS_MAP_NAME in viewer.layers and widget.overlay_controls.isVisibleTo(widget)
    saved = autosave_file(slide_copy)
    qtbot.waitUntil(lambda: saved.is_file() and len(read_geojson(saved)) == 5, timeout=5000)
    stroma_ids = sorted(a.id for a in session.annotations if a.label == "stroma")

    # A first click asks, inline; Keep leaves everything as it was.
    session.set_active("stroma")
    classes.delete_button.click()
    assert classes.confirm_bar.isVisibleTo(classes)
    assert classes.confirm_label.text() == ("Delete 'stroma' and its 1 region, 3 points? "
                                            "Undo brings them back.")
    classes.keep_button.click()
    assert not classes.confirm_bar.isVisibleTo(classes)
    assert session.classes == ["tumour", "stroma"] and len(session.annotations) == 5

    # Delete: the class, its annotations, the head that knew it and its overlays go.
    classes.delete_button.click()
    classes.confirm_button.click()
    assert session.classes == ["tumour"]
    assert list(annotation_layers.labels_of(widget.regions)) == ["tumour"]
    assert len(widget.points.data) == 0
    assert session.head is None and widget.metrics.text() == ""
    assert CLASS_MAP_NAME not in viewer.layers
    assert not any(layer.name.startswith(PROBABILITY_NAME) for layer in viewer.layers)
    assert not widget.overlay_controls.isVisibleTo(widget)
    # ... a copy is on disk at once, and Undo is offered.
    [trashed] = list((saved.parent / core_project.TRASH_NAME).glob("*-stroma.geojson"))
    assert sorted(a.id for a in read_geojson(trashed)) == stroma_ids
    assert str(trashed) in widget.status.text()
    assert classes.undo_bar.isVisibleTo(classes)
    assert classes.undo_label.text() == "Deleted 'stroma' (1 region, 3 points)."
    qtbot.waitUntil(lambda: len(read_geojson(saved)) == 1, timeout=5000)

    # Undo: the class at its place with its colour, its annotations with their ids, the head
    # and its overlays.
    classes.undo_button.click()
    assert session.classes == ["tumour", "stroma"] and session.colors["stroma"] == "#00ff00"
    assert sorted(a.id for a in session.annotations if a.label == "stroma") == stroma_ids
    assert sorted(annotation_layers.labels_of(widget.points)) == ["stroma"] * 3
    assert session.result is result and CLASS_MAP_NAME in viewer.layers
    assert not classes.undo_bar.isVisibleTo(classes)
    qtbot.waitUntil(lambda: len(read_geojson(saved)) == 5, timeout=5000)


def draw_and_wait(widget, path, qtbot) -> None:
    """Draw the five annotations and wait for their autosave to ``path``."""
    draw(widget)
    qtbot.waitUntil(lambda: path.is_file() and len(read_geojson(path)) == 5, timeout=5000)


def test_x_svs_and_x_tiff_do_not_share_annotations(make_napari_viewer, slide_copy,
                                                    pyramid_tiff_path, qtbot):
    # Side by side in one folder: drawn on the first, the second opens empty.
    tiff = slide_copy.with_suffix(".tiff")
    shutil.copyfile(pyramid_tiff_path, tiff)
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw_and_wait(widget, autosave_file(slide_copy), qtbot)
    widget.close()
    _viewer, other = open_panel(make_napari_viewer, tiff)
    assert other.session.annotations == []
    assert autosave_file(tiff) != autosave_file(slide_copy)


def test_two_slides_named_alike_in_read_only_folders_do_not_share_annotations(
        make_napari_viewer, slide_copy, no_mpp_svs_path, tmp_path, qtbot):
    first, second = tmp_path / "patient1" / "ro.svs", tmp_path / "patient2" / "ro.svs"
    for source, target in ((slide_copy, first), (no_mpp_svs_path, second)):
        target.parent.mkdir()
        shutil.copyfile(source, target)
        target.parent.chmod(0o555)
    _viewer, widget = open_panel(make_napari_viewer, first)
    draw_and_wait(widget, autosave_file(first), qtbot)
    widget.close()
    _viewer, other = open_panel(make_napari_viewer, second)
    assert other.session.annotations == []
    assert sorted(p.name for p in second.parent.iterdir()) == ["ro.svs"]


def test_a_renamed_slide_finds_its_annotations_and_says_so(make_napari_viewer, slide_copy,
                                                           notes, qtbot):
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw_and_wait(widget, autosave_file(slide_copy), qtbot)
    drawn = summary(widget.session.annotations)
    widget.close()
    renamed = slide_copy.with_name("patient-42.svs")
    slide_copy.rename(renamed)
    _viewer, again = open_panel(make_napari_viewer, renamed)
    assert summary(again.session.annotations) == drawn
    told = " ".join(notes)
    assert f"when it was named {slide_copy.name} (same content)" in told
    # From now on they autosave under the new name.
    again.points.add(np.array([[10.0, 20.0]]))
    path = autosave_file(renamed)
    qtbot.waitUntil(lambda: path.is_file() and len(read_geojson(path)) == 6, timeout=5000)


def test_an_autosave_of_other_content_is_not_restored_silently(make_napari_viewer, slide_copy,
                                                               notes, qtbot):
    path = autosave_file(slide_copy)
    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    draw_and_wait(widget, path, qtbot)
    widget.close()
    # The folder's record names another slide (a folder copied by hand, say).
    record = json.loads((path.parent / "slide.json").read_text())
    record["path"] = "/elsewhere/other-patient.svs"
    record["fingerprint"]["bytes"] += 1
    (path.parent / "slide.json").write_text(json.dumps(record))
    _viewer, again = open_panel(make_napari_viewer, slide_copy)
    assert again.session.annotations == []
    told = " ".join(notes)
    assert "holds annotations of other-patient.svs, not of this slide" in told
    assert str(path) in told and "Import GeoJSON" in told
    # Its file is left alone; new annotations go beside it.
    again.session.add_class("tumour")
    again.points.add(np.array([[10.0, 20.0]]))
    beside = path.parent.with_name(path.parent.name + ".2") / core_project.ANNOTATIONS_NAME
    qtbot.waitUntil(lambda: beside.is_file() and len(read_geojson(beside)) == 1, timeout=5000)
    assert len(read_geojson(path)) == 5


CRASHING_PANEL = """
import sys, time
import numpy as np
import napari
from qtpy.QtWidgets import QApplication

viewer = napari.Viewer(show=False)
viewer.open(sys.argv[1], plugin="napari-dfl")
_, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
widget.session.add_class("tumour", "#ff7f00")
widget.session.set_active("tumour")
for i in range(int(sys.argv[2])):  # one point at a time, as clicks add them
    widget.points.add(np.array([[100.0 + 5 * (i // 20), 100.0 + 5 * (i % 20)]]))
QApplication.processEvents()
print("drawn", flush=True)
while True:  # the event loop runs on until the kill (autosave would come at 500 ms)
    QApplication.processEvents()
    time.sleep(0.01)
"""


def test_annotations_drawn_a_moment_before_a_crash_come_back(make_napari_viewer, slide_copy):
    import signal
    import subprocess
    import sys
    import time

    from napari_dfl.core.project.journal import JOURNAL_NAME

    child = subprocess.Popen([sys.executable, "-c", CRASHING_PANEL, str(slide_copy), "205"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = child.stdout.readline()
        assert line.strip() == "drawn", child.stderr.read()[-3000:]
        time.sleep(0.1)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    saved = autosave_file(slide_copy)
    assert not saved.exists(), "killed before the debounced rewrite"
    assert (saved.parent / JOURNAL_NAME).is_file()

    _viewer, widget = open_panel(make_napari_viewer, slide_copy)
    assert len(widget.session.annotations) == 205
    assert len({a.id for a in widget.session.annotations}) == 205, "each point its own id"
    assert {a.label for a in widget.session.annotations} == {"tumour"}
    assert len(widget.points.data) == 205
    assert "Recovered" in widget.status.text() or "Restored 205" in widget.status.text()
    widget.project.autosave()  # compacted: the GeoJSON holds them, the journal is gone
    assert len(read_geojson(saved)) == 205 and not (saved.parent / JOURNAL_NAME).exists()
