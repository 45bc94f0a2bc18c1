"""File > Open and File > Save in a real napari viewer (under Xvfb): slides opened by path,
QuPath GeoJSON read into the panel's layers and written back with classes and colours."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def test_the_panel_opens_the_slide_from_the_layers_path(make_napari_viewer, pyramid_tiff_path,
                                                        sample_slide_path):
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(pyramid_tiff_path), plugin="napari-dfl")
    json.dumps(layer.metadata)  # plain values only: no open slide in the layer
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    slide = widget.session.slide
    assert slide is not None and str(slide.path) == str(pyramid_tiff_path)
    assert slide.dimensions == (layer.metadata["width"], layer.metadata["height"])
    assert slide.read_region((0, 0), (64, 64)).shape == (64, 64, 3)

    # A second slide, picked and picked back: the first is opened once, not per pick.
    viewer.open(str(sample_slide_path), plugin="napari-dfl")
    combo = widget.slide_section.layer_combo
    combo.setCurrentText(sample_slide_path.name)
    assert str(widget.session.slide.path) == str(sample_slide_path)
    combo.setCurrentText(pyramid_tiff_path.name)
    assert widget.session.slide is slide

    # Its layer removed, the panel forgets it and works on the slide still shown.
    viewer.layers.remove(pyramid_tiff_path.name)
    assert str(widget.session.slide.path) == str(sample_slide_path)
    assert [combo.itemText(i) for i in range(combo.count())] == [sample_slide_path.name]


def _written(path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def test_a_dropped_geojson_opens_as_classed_layers_and_saves_back(make_napari_viewer,
                                                                  tmp_path):
    """Without the panel: a QuPath file opens as a Shapes and a Points layer with classes
    and QuPath's colours; File > Save writes them back with ids, classes and types."""
    from test_qupath_objects import write_qupath_export

    path, features = write_qupath_export(tmp_path)
    viewer = make_napari_viewer(show=True)
    layers = viewer.open(str(path), plugin="napari-dfl")
    regions, points = layers
    assert type(regions).__name__ == "Shapes" and type(points).__name__ == "Points"
    assert list(regions.features["class"]) == ["Tumor", "Stroma"]
    assert list(points.features["class"]) == ["Lymphocyte", "Lymphocyte", "Stroma", "Stroma",
                                              "Lymphocyte"]
    assert tuple(points.data[0]) == (1005.0, 1005.0)  # (row, col) of the nucleus centroid
    assert np.round(regions.face_color[0][:3] * 255).tolist() == [200, 0, 0]
    json.dumps(points.metadata)  # plain values

    out = tmp_path / "saved.geojson"
    written = viewer.layers.save(str(out), selected=False, plugin="napari-dfl")
    assert written == [str(out)]
    back = {f.get("id"): f for f in _written(out)}
    for feature in features[:5]:
        again = back[feature["id"]]
        assert again["properties"]["objectType"] == feature["properties"]["objectType"]
        assert again["properties"]["classification"] == feature["properties"]["classification"]
        assert again["geometry"]["type"] == feature["geometry"]["type"]
    assert back[features[1]["id"]]["nucleusGeometry"] == features[1]["nucleusGeometry"]


def test_the_panel_takes_a_dropped_geojson_and_saves_its_classes(make_napari_viewer, qtbot,
                                                                 tmp_path):
    """With the panel: the file's objects join the panel's layers and classes (in the file's
    colours); saving the panel's layers writes QuPath GeoJSON with every class and colour."""
    from napari_dfl._qt import annotation_layers
    from test_qupath_objects import write_qupath_export

    path, features = write_qupath_export(tmp_path)
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    widget.session.add_class("dermis", "#00aa00")
    widget.session.set_active(widget.session.classes.index("dermis"))
    widget.regions.add_rectangles(np.array([[1200, 800], [1600, 1200]]))

    viewer.open(str(path), plugin="napari-dfl")
    qtbot.waitUntil(lambda: all(not annotation_layers.is_dropped_geojson(layer)
                                for layer in viewer.layers), timeout=10000)
    session = widget.session
    assert {"dermis", "Tumor", "Lymphocyte", "Stroma"} <= set(session.classes)
    assert session.colors["Tumor"] == "#c80000"
    cells = [a for a in session.annotations if a.properties.get("objectType") == "cell"]
    assert len(cells) == 3 and all(a.kind == "point" for a in cells)
    assert len(widget.regions.data) == 3 and len(widget.points.data) == 5

    # An edit on the layers keeps the cells' types (the properties live in the layers).
    widget.points.add(np.array([[100.0, 100.0]]))
    cells = [a for a in session.annotations if a.properties.get("objectType") == "cell"]
    assert len(cells) == 3

    out = tmp_path / "panel.geojson"
    viewer.layers.selection = {widget.regions, widget.points}
    assert viewer.layers.save(str(out), selected=True, plugin="napari-dfl") == [str(out)]
    written = _written(out)
    by_class = {}
    for feature in written:
        cls = feature["properties"]["classification"]
        by_class.setdefault(cls["name"], set()).add(tuple(cls["color"]))
    assert by_class["dermis"] == {(0, 170, 0)} and by_class["Tumor"] == {(200, 0, 0)}
    back = {f.get("id"): f for f in written}
    cell = back[features[1]["id"]]
    assert cell["properties"]["objectType"] == "cell" and "nucleusGeometry" in cell
    assert len(written) == len(session.annotations) == 9
