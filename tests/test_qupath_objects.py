"""QuPath's object types read right: cells and detections as points, annotations as regions,
and a round trip QuPath -> napari-dfl -> QuPath that keeps ids, classes, types and outlines.

The file is written here in QuPath's own export layout (``PathObjectTypeAdapters`` of QuPath
0.4+: a FeatureCollection of Features with a UUID ``id``, ``geometry``, a cell's
``nucleusGeometry`` beside it, and ``properties`` with ``objectType``, ``classification``
``{name, color}``, ``measurements`` and ``isLocked``), with coordinates on the sample slide.
"""

from __future__ import annotations

import json
import uuid

import pytest
from shapely.geometry import Point, shape

from napari_dfl.core.annotations.annotation import read_geojson, write_geojson
from napari_dfl.core.annotations.geojson import OUTLINE_KEY, object_type
from napari_dfl.core.project.folder import geojson_colors


def _square(x: float, y: float, side: float) -> dict:
    ring = [[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]
    return {"type": "Polygon", "coordinates": [ring]}


def _feature(kind: str, geometry: dict, name: str, color: list[int], **extra) -> dict:
    feature = {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry,
               "properties": {"objectType": kind,
                              "classification": {"name": name, "color": color}}}
    nucleus = extra.pop("nucleus", None)
    if nucleus is not None:
        feature["nucleusGeometry"] = nucleus
    feature["properties"].update(extra)
    return feature


def write_qupath_export(folder) -> tuple:
    """A QuPath export in ``folder``: a tumour annotation, two cells (one with a nucleus
    off-centre), a detection, a tile and two objects in older spellings of the type.

    Returns ``(path, features)``.
    """
    features = [
        _feature("annotation", _square(1200, 800, 400), "Tumor", [200, 0, 0],
                 isLocked=True),
        _feature("cell", _square(1000, 1000, 20), "Lymphocyte", [0, 0, 180],
                 nucleus=_square(1002, 1002, 6),
                 measurements={"Nucleus: Area": 36.0, "Cell: Area": 400.0}),
        _feature("cell", _square(1500, 1500, 10), "Lymphocyte", [0, 0, 180]),
        _feature("detection", _square(1700, 900, 12), "Stroma", [150, 200, 150],
                 measurements={"Area": 144.0}),
        _feature("tile", _square(0, 0, 224), "Stroma", [150, 200, 150]),
    ]
    legacy = _feature("detection", _square(400, 400, 8), "Stroma", [150, 200, 150])
    del legacy["properties"]["objectType"]
    legacy["properties"]["object_type"] = "detection"
    v02 = _feature("cell", _square(600, 600, 8), "Lymphocyte", [0, 0, 180])
    del v02["properties"]["objectType"]
    v02["id"] = "PathCellObject"
    features += [legacy, v02]
    path = folder / "qupath.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path, features


@pytest.fixture
def qupath_export(tmp_path):
    """:func:`write_qupath_export` in the test's folder."""
    return write_qupath_export(tmp_path)


def test_object_types_read_as_points_or_regions(qupath_export):
    path, features = qupath_export
    annotations = read_geojson(path)
    assert [a.kind for a in annotations] == ["region", "point", "point", "point", "region",
                                             "point", "point"]
    assert [a.label for a in annotations] == ["Tumor", "Lymphocyte", "Lymphocyte", "Stroma",
                                              "Stroma", "Stroma", "Lymphocyte"]
    assert [a.id for a in annotations[:5]] == [f["id"] for f in features[:5]]
    tumour, cell, bare_cell, detection, tile, legacy, v02 = annotations
    assert tumour.geometry.area == pytest.approx(400 * 400)
    assert "objectType" not in tumour.properties and tumour.properties["isLocked"] is True
    # A cell sits on its nucleus's centroid (1005, 1005), not its outline's (1010, 1010).
    assert (cell.geometry.x, cell.geometry.y) == (1005.0, 1005.0)
    assert cell.properties["objectType"] == "cell"
    assert cell.properties["measurements"]["Nucleus: Area"] == 36.0
    assert (bare_cell.geometry.x, bare_cell.geometry.y) == (1505.0, 1505.0)
    assert (detection.geometry.x, detection.geometry.y) == (1706.0, 906.0)
    assert tile.properties["objectType"] == "tile" and tile.geometry.area == 224 * 224
    assert legacy.properties["objectType"] == "detection"
    assert v02.properties["objectType"] == "cell" and v02.id != "PathCellObject"
    assert geojson_colors(path) == {"Tumor": "#c80000", "Lymphocyte": "#0000b4",
                                    "Stroma": "#96c896"}


def test_round_trip_keeps_ids_classes_types_and_outlines(qupath_export, tmp_path):
    path, features = qupath_export
    annotations = read_geojson(path)
    out = write_geojson(annotations, tmp_path / "back.geojson", colors=geojson_colors(path))
    written = json.loads(out.read_text())["features"]
    for before, after in zip(features[:5], written[:5], strict=True):
        assert after["id"] == before["id"]
        assert after["properties"]["objectType"] == before["properties"]["objectType"]
        assert after["properties"]["classification"] == before["properties"]["classification"]
        assert shape(after["geometry"]).equals(shape(before["geometry"]))
        assert ("nucleusGeometry" in after) == ("nucleusGeometry" in before)
        assert OUTLINE_KEY not in after["properties"]
    assert shape(written[1]["nucleusGeometry"]).equals(shape(features[1]["nucleusGeometry"]))
    assert written[1]["properties"]["measurements"] == features[1]["properties"]["measurements"]
    assert [f["properties"]["objectType"] for f in written[5:]] == ["detection", "cell"]
    # Read again: the same annotations (a second round trip changes nothing).
    again = read_geojson(out)
    assert [(a.id, a.label, a.kind, a.geometry.wkt) for a in again] == \
        [(a.id, a.label, a.kind, a.geometry.wkt) for a in annotations]


def test_a_moved_cell_is_written_as_a_point_cell(qupath_export, tmp_path):
    from dataclasses import replace

    path, _ = qupath_export
    cell = read_geojson(path)[1]
    moved = replace(cell, geometry=Point(1100.0, 1100.0))
    [feature] = json.loads(write_geojson([moved], tmp_path / "m.geojson").read_text())[
        "features"]
    assert feature["geometry"] == {"type": "Point", "coordinates": [1100.0, 1100.0]}
    assert feature["properties"]["objectType"] == "cell" and "nucleusGeometry" not in feature


def test_object_type_spellings():
    assert object_type({}, {"objectType": "cell"}) == "cell"
    assert object_type({}, {"object_type": "detection"}) == "detection"
    assert object_type({}, {"type": "tile"}) == "tile"
    assert object_type({"id": "PathDetectionObject"}, {}) == "detection"
    assert object_type({}, {"objectType": "tmaCore"}) == "annotation"
    assert object_type({}, {}) == "annotation"


def test_cells_yield_training_samples_on_the_slide(qupath_export, slide):
    """Read as regions, outlines a few microns across yield no tile; as points, each cell
    is a sample of its own."""
    from napari_dfl.core.annotations.samples import slide_samples
    from napari_dfl.core.slides.sampling import Composition

    path, features = qupath_export
    cells = [a for a in read_geojson(path) if a.properties.get("objectType") == "cell"]
    composition = Composition(112, (0.5,), ("rgb",))
    samples = slide_samples(slide, cells, composition)
    assert len(samples) == 3 and set(samples.labels) == {"Lymphocyte"}
    # The same outlines as regions (what reading ignored the type gave) yield nothing.
    from napari_dfl.core.annotations.annotation import Annotation

    outlines = [Annotation(shape(features[1]["geometry"]), "Lymphocyte")]
    with pytest.warns(UserWarning):
        assert len(slide_samples(slide, outlines, composition)) == 0


def test_the_writer_names_unclassed_items_by_their_layer_and_refuses_nothing(tmp_path):
    """napari's writer on plain layers: items without a class take the layer's name,
    ellipses become polygons, lines are left out, and only lines is a clear error."""
    import numpy as np

    from napari_dfl._writer import write_geojson_layers
    from napari_dfl.core.annotations.annotation import AnnotationError

    square = np.array([[0, 0], [0, 50], [50, 50], [50, 0]], float)
    shapes = ([square, square + 100, np.array([[0, 0], [10, 10]], float)],
              {"name": "necrosis", "shape_type": ["rectangle", "ellipse", "line"]}, "shapes")
    points = (np.array([[5.0, 7.0]]), {"name": "mitosis", "features": {"class": [None]}},
              "points")
    [written] = write_geojson_layers(str(tmp_path / "plain"), [shapes, points])
    assert written.endswith("plain.geojson")
    annotations = read_geojson(written)
    assert [(a.label, a.kind) for a in annotations] == [
        ("necrosis", "region"), ("necrosis", "region"), ("mitosis", "point")]
    assert annotations[1].geometry.area == pytest.approx(np.pi * 25 * 25, rel=0.01)
    assert (annotations[2].geometry.x, annotations[2].geometry.y) == (7.0, 5.0)
    lines = ([np.array([[0, 0], [10, 10]], float)], {"name": "ruler", "shape_type": ["line"]},
             "shapes")
    with pytest.raises(AnnotationError, match="nothing to write"):
        write_geojson_layers(str(tmp_path / "lines.geojson"), [lines])


def test_the_napari_reader_claims_geojson_by_name_and_says_when_it_is_empty(qupath_export,
                                                                           tmp_path):
    from napari_dfl._geojson_reader import napari_get_reader
    from napari_dfl.core.annotations.annotation import AnnotationError

    path, _ = qupath_export
    reader = napari_get_reader(str(path))
    [(polygons, regions, kind_a), (points, marks, kind_b)] = reader(str(path))
    assert (kind_a, kind_b) == ("shapes", "points")
    assert len(polygons) == 2 and len(points) == 5
    assert regions["metadata"]["colors"]["Tumor"] == "#c80000"
    assert json.loads(json.dumps(marks["metadata"])) == marks["metadata"]
    assert napari_get_reader(str(tmp_path / "absent.geojson")) is None
    assert napari_get_reader(str(tmp_path / "notes.json")) is None
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(AnnotationError, match="holds no object"):
        napari_get_reader(str(empty))(str(empty))
