"""QuPath GeoJSON annotations: reading, writing, validation, and the samples they yield."""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shapely.geometry import MultiPoint, MultiPolygon, Point, Polygon

from napari_dfl.core.annotations.annotation import (
    Annotation,
    AnnotationError,
    AnnotationWarning,
    annotations_from_geojson,
    check_within,
    read_geojson,
    write_geojson,
)
from napari_dfl.core.annotations.samples import SampleSet, samples_from_annotations
from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.sampling import Composition

# A 100 px tile grid: patch 100 px at 1 um/px on a 1 um/px slide, 6 x 6 tiles.
GRID_COMPOSITION = Composition(patch_size=100, zooms=(1.0,), variants=("rgb",))
GRID = np.array([(x, y) for y in range(0, 600, 100) for x in range(0, 600, 100)], np.int64)


def _ring(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def _feature(geometry, cls=None, **extra):
    properties = {"objectType": "annotation"}
    if cls is not None:
        properties["classification"] = {"name": cls, "color": [200, 0, 0]}
    properties.update(extra)
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def _write(tmp_path, obj, name="a.geojson") -> Path:
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# -- reading and writing ----------------------------------------------------------------
def test_round_trip(tmp_path):
    hole = Polygon(_ring(0, 0, 400, 400)[:-1], [_ring(100, 100, 200, 200)[:-1]])
    annotations = [
        Annotation(hole, "Tumor", properties={"name": "big one", "isLocked": False}),
        Annotation(MultiPolygon([shapely.box(500, 500, 600, 650),
                                 shapely.box(700, 0, 720.5, 30.25)]), "Stroma"),
        Annotation(Point(12.5, 40), "Immune cells", id="not-a-uuid"),
        Annotation(MultiPoint([(1, 2), (3, 4), (5.75, 6)]), "Tumor",
                   properties={"measurements": {"area": 1.5}}),
    ]
    path = write_geojson(annotations, tmp_path / "sub" / "out.geojson",
                         colors={"Tumor": "#ff0000", "Stroma": (0, 128, 0)})
    assert read_geojson(path) == annotations
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection"
    first = data["features"][0]
    assert uuid.UUID(first["id"]) and first["properties"]["objectType"] == "annotation"
    assert first["properties"]["classification"] == {"name": "Tumor", "color": [255, 0, 0]}
    assert data["features"][1]["properties"]["classification"]["color"] == [0, 128, 0]
    # QuPath's own colour for a standard class when none is given.
    assert data["features"][2]["properties"]["classification"]["color"] == [160, 90, 160]
    assert not list(tmp_path.glob("sub/.*tmp"))  # atomic: no temporary file left behind


def test_numpy_properties_are_written_as_json(tmp_path):
    ann = Annotation(Point(1, 2), "a", properties={
        "measurements": {"p(a)": np.float32(0.25), "probabilities": np.array([0.25, 0.75])}})
    measurements = read_geojson(write_geojson([ann], tmp_path / "p.geojson"))[0].properties[
        "measurements"]
    assert measurements == {"p(a)": 0.25, "probabilities": [0.25, 0.75]}


def test_write_refuses_bad_colour(tmp_path):
    with pytest.raises(AnnotationError, match="colour"):
        write_geojson([Annotation(Point(1, 1), "a")], tmp_path / "x.geojson",
                      colors={"a": "red"})
    assert not (tmp_path / "x.geojson").exists()


QUPATH_EXPORT = """{
  "type": "FeatureCollection",
  "features": [
    {
      "type": "Feature",
      "id": "5b0bd2a8-3b5d-4c51-9a5e-0d5e0e2b9a11",
      "geometry": {"type": "Polygon",
                   "coordinates": [[[100, 100], [300, 100], [300, 250], [100, 250], [100, 100]]]},
      "properties": {"objectType": "annotation", "name": "rim",
                     "classification": {"name": "Tumor", "color": [200, 0, 0]},
                     "measurements": {"Area px^2": NaN}}
    },
    {
      "type": "Feature",
      "id": "0a7f3c55-8d1e-4e0b-b7b4-19f1b2a0c9de",
      "geometry": {"type": "MultiPolygon", "coordinates": [
          [[[0, 0], [50, 0], [50, 50], [0, 50], [0, 0]]],
          [[[60, 60], [90, 60], [90, 90], [60, 90], [60, 60]]]]},
      "properties": {"objectType": "annotation",
                     "classification": {"names": ["Tumor", "Positive"], "color": [1, 2, 3]}}
    },
    {
      "type": "Feature",
      "id": "d1a4f1f0-4e8f-4f8e-9a57-3c1f2d9f0b77",
      "geometry": {"type": "MultiPoint", "coordinates": [[10, 20], [30, 40]]},
      "properties": {"objectType": "annotation", "classification": "Stroma"}
    }
  ]
}"""


def test_qupath_export(tmp_path):
    annotations = read_geojson(_write(tmp_path, QUPATH_EXPORT))
    assert [a.kind for a in annotations] == ["region", "region", "point"]
    assert [a.label for a in annotations] == ["Tumor", "Tumor: Positive", "Stroma"]
    assert annotations[0].id == "5b0bd2a8-3b5d-4c51-9a5e-0d5e0e2b9a11"
    assert annotations[0].geometry.area == 200 * 150
    assert annotations[0].properties["name"] == "rim"
    assert "classification" not in annotations[0].properties
    assert "objectType" not in annotations[0].properties
    assert isinstance(annotations[1].geometry, MultiPolygon)
    assert annotations[2].points().tolist() == [[10, 20], [30, 40]]


def test_bare_list_and_single_feature(tmp_path):
    features = [_feature({"type": "Point", "coordinates": [5, 6]}, "a"),
                _feature({"type": "Polygon", "coordinates": [_ring(0, 0, 10, 10)]}, "b")]
    from_list = read_geojson(_write(tmp_path, features, "list.geojson"))
    assert [(a.kind, a.label) for a in from_list] == [("point", "a"), ("region", "b")]
    single = read_geojson(_write(tmp_path, features[1], "one.geojson"))
    assert len(single) == 1 and single[0].geometry.area == 100
    # Features without ids get ids that are stable across reads and distinct.
    again = read_geojson(tmp_path / "list.geojson")
    assert [a.id for a in again] == [a.id for a in from_list]
    assert len({a.id for a in from_list}) == 2


def test_self_intersection_repaired_and_lines_skipped(tmp_path):
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    line = {"type": "LineString", "coordinates": [[0, 0], [5, 5]]}
    path = _write(tmp_path, [_feature(bowtie, "a"), _feature(line, "ruler")])
    with pytest.warns(AnnotationWarning) as caught:
        annotations = read_geojson(path)
    messages = " ".join(str(w.message) for w in caught)
    assert "1 self-intersecting polygon(s) were repaired: #1 'a'" in messages
    assert "skipped: #2 'ruler'" in messages
    assert len(annotations) == 1 and annotations[0].geometry.is_valid
    assert annotations[0].geometry.area == pytest.approx(50)


BAD_INPUT = [
    ('{"type": "FeatureCollection", "features": [',
     r"not valid JSON \(line 1, column 44: Expecting value\)"),
    ("[1, 2,\n  3,]", r"not valid JSON \(line 2, column"),
    ("42", "is not GeoJSON: it holds a JSON int"),
    ({"type": "Topology"}, "top-level type is 'Topology'"),
    ({"type": "FeatureCollection"}, "no 'features' list"),
    ({"type": "Polygon", "coordinates": [_ring(0, 0, 1, 1)]}, "bare Polygon without a class"),
    ([_feature({"type": "Point", "coordinates": [1, "2"]}, "a")],
     r"feature #1 'a' is invalid: coordinate '2' is not a number"),
    ([_feature({"type": "Point", "coordinates": [1, 2]}, "a"),
      _feature({"type": "Point", "coordinates": [float("nan"), 2]}, "b")],
     r"feature #2 'b' is invalid: coordinate nan is not a finite number"),
    ([_feature({"type": "Point", "coordinates": [1e300, 2]}, "a")], "far outside any slide"),
    ([_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}, "a")],
     "at least 3 distinct corners"),
    ([_feature({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}, "a")],
     r"no area \(all corners on one line\)"),
    ([_feature({"type": "Circle", "coordinates": [0, 0]}, "a")], "not a GeoJSON geometry"),
    ([_feature({"type": "Point", "coordinates": [0, 0]}, {"name": 3})], "class must be text"),
    (["not a feature"], "feature #1 is invalid: it is a JSON str"),
    ([_feature({"type": "Point", "coordinates": [0, 0]}, "a"),
      _feature({"type": "Point", "coordinates": [0, 0]}, name="Annotation 7")],
     r"1 feature\(s\) have no class \(#2 \(named 'Annotation 7'\)\)\. Classify them in QuPath"),
]


@pytest.mark.parametrize(("content", "message"), BAD_INPUT)
def test_bad_input_messages(tmp_path, content, message):
    with pytest.raises(AnnotationError, match=message):
        read_geojson(_write(tmp_path, content))


def test_unreadable_files(tmp_path):
    binary = tmp_path / "b.geojson"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(AnnotationError, match="not a GeoJSON text file"):
        read_geojson(binary)
    with pytest.raises(AnnotationError, match="does not exist"):
        read_geojson(tmp_path / "absent.geojson")


def test_unknown_class_named_with_known_list(tmp_path):
    path = _write(tmp_path, [_feature({"type": "Point", "coordinates": [0, 0]}, "Tumour"),
                             _feature({"type": "Point", "coordinates": [1, 0]}, "Stroma")])
    with pytest.raises(AnnotationError, match=r"unknown class\(es\) 'Tumour' \(1 feature\(s\), "
                       r"first #1 'Tumour', did you mean 'Tumor'\?\)\. Known classes: "
                       r"Tumor, Stroma"):
        read_geojson(path, known_classes=["Tumor", "Stroma"])
    assert len(read_geojson(path, known_classes=["Tumour", "Stroma"])) == 2


def test_check_within(tmp_path):
    inside = Annotation(shapely.box(2000, 2900, 2500, 3100), "a")  # crosses the border: fine
    outside = Annotation(shapely.box(5000, 100, 6000, 400), "b", properties={"name": "far"})
    check_within([inside], (2220, 2967))
    with pytest.raises(AnnotationError, match=r"1 of 2 annotations in x.geojson lie entirely "
                       r"outside the slide \(2220 x 2967 px\): #2 'b' \(named 'far'\) at "
                       r"x 5000-6000, y 100-400\. The file is probably for another slide"):
        check_within([inside, outside], (2220, 2967), "x.geojson")


# -- samples ----------------------------------------------------------------------------
def _samples(annotations, tiles=GRID, **kwargs):
    return samples_from_annotations(annotations, tiles, GRID_COMPOSITION, 1.0, **kwargs)


def test_tile_selection_inside_edge_outside():
    region = Annotation(shapely.box(50, 0, 250, 100), "a")  # tiles at x 0, 100, 200
    samples = _samples([region])
    # Tile 0 is half inside, tile 100 fully, tile 200 half; tile 300 outside.
    assert samples.coords.tolist() == [[0, 0], [100, 0], [200, 0]]
    assert _samples([region], min_overlap=0.6).coords.tolist() == [[100, 0]]
    # A region exactly on one tile does not take the neighbours it only touches.
    assert _samples([Annotation(shapely.box(100, 100, 200, 200), "a")]).coords.tolist() == [
        [100, 100]]
    # Only tiles of the given grid (the tissue tiles) are candidates.
    tissue = GRID[~((GRID[:, 0] == 100) & (GRID[:, 1] == 0))]
    assert _samples([region], tiles=tissue).coords.tolist() == [[0, 0], [200, 0]]
    assert set(samples.groups) == {region.id} and samples.source == ""


def test_tile_selection_matches_brute_force():
    rng = np.random.default_rng(0)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 12))
    radii = rng.uniform(120, 280, 12)
    polygon = Polygon(np.c_[300 + radii * np.cos(angles), 300 + radii * np.sin(angles)])
    samples = _samples([Annotation(polygon, "a")], min_overlap=0.5)
    expected = [c.tolist() for c in GRID
                if shapely.box(*c, *(c + 100)).intersection(polygon).area >= 0.5 * 100 * 100]
    assert sorted(samples.coords.tolist()) == sorted(expected) and len(expected) > 5


def test_points_are_centred():
    composition = Composition(224, (0.5, 2.0))
    points = Annotation(MultiPoint([(1000, 1500), (1200.4, 1300.6)]), "nucleus")
    samples = samples_from_annotations([points], GRID, composition, 0.499, source="s.svs")
    extent = composition.anchor_extent(0.499)
    centres = samples.coords + extent / 2
    assert np.abs(centres - points.points()).max() <= 0.5 + 1e-9
    assert samples.groups.tolist() == [points.id, points.id]
    assert samples.source == "s.svs" and samples.counts() == {"nucleus": 2}


def test_nested_region_takes_its_tiles():
    tumor = Annotation(shapely.box(0, 0, 600, 600), "tumor")
    necrosis = Annotation(shapely.box(100, 100, 300, 300), "necrosis")
    for order in ([tumor, necrosis], [necrosis, tumor]):  # file order does not matter
        samples = _samples(order)
        labels = dict(zip(map(tuple, samples.coords.tolist()), samples.labels, strict=True))
        assert len(samples) == 36
        assert {k for k, v in labels.items() if v == "necrosis"} == {
            (100, 100), (200, 100), (100, 200), (200, 200)}
        groups = dict(zip(map(tuple, samples.coords.tolist()), samples.groups, strict=True))
        assert groups[(100, 100)] == necrosis.id and groups[(0, 0)] == tumor.id


def test_partial_overlap_of_different_classes_is_dropped():
    a = Annotation(shapely.box(0, 0, 300, 100), "a")
    b = Annotation(shapely.box(200, 0, 500, 100), "b")
    with pytest.warns(AnnotationWarning, match="1 tile"):
        samples = _samples([a, b])
    assert dict(zip(samples.coords[:, 0].tolist(), samples.labels, strict=True)) == {
        0: "a", 100: "a", 300: "b", 400: "b"}
    # The same class overlapping itself yields each tile once.
    same = _samples([a, Annotation(shapely.box(200, 0, 500, 100), "a")])
    assert same.coords[:, 0].tolist() == [0, 100, 200, 300, 400]


def test_regions_without_tiles_warn_and_grid_mismatch_refused():
    with pytest.warns(AnnotationWarning, match=r"1 region\(s\) cover no candidate tile.*'tiny'"):
        samples = _samples([Annotation(shapely.box(10, 10, 20, 20), "tiny")])
    assert len(samples) == 0 and samples.coords.shape == (0, 2)

    class Grid:  # a TileGrid laid for another composition
        coords, tile_size = GRID, 224.0

    with pytest.raises(DFLError, match="tile_grid"):
        _samples([Annotation(shapely.box(0, 0, 100, 100), "a")], tiles=Grid())


def test_sample_set_helpers():
    one = SampleSet([[0, 0], [1, 1]], ["a", "b"], ["g1", "g2"], "s1")
    two = SampleSet([[2, 2]], ["a"], ["g3"], "s1")
    both = SampleSet.concat([one, two])
    assert len(both) == 3 and both.counts() == {"a": 2, "b": 1} and both.source == "s1"
    assert both.coords.dtype == np.int64 and both.subset(both.labels == "a").groups.tolist() == [
        "g1", "g3"]
    assert len(SampleSet.concat([])) == 0
    with pytest.raises(ValueError, match="as many"):
        SampleSet([[0, 0]], ["a", "b"], ["g"])


def test_annotation_validation():
    with pytest.raises(AnnotationError, match="Polygon, MultiPolygon, Point or MultiPoint"):
        Annotation(shapely.LineString([(0, 0), (1, 1)]), "a")
    with pytest.raises(AnnotationError, match="label"):
        Annotation(Point(0, 0), " ")
    with pytest.raises(AnnotationError, match="not a region"):
        Annotation(Point(0, 0), "a", kind="region")


# -- fuzzing ------------------------------------------------------------------------------
_NUMBERS = st.one_of(st.integers(-10**6, 10**6), st.floats(), st.integers(-10**400, 10**400))
_NAMES = st.sampled_from(["Feature", "FeatureCollection", "Point", "MultiPoint", "Polygon",
                          "MultiPolygon", "LineString", "MultiLineString",
                          "GeometryCollection", "Tumor"])
_SCALARS = st.one_of(st.none(), st.booleans(), _NUMBERS, st.text(max_size=4), _NAMES)
_KEYS = st.one_of(st.sampled_from(["type", "features", "geometry", "coordinates", "properties",
                                   "classification", "name", "names", "id", "geometries",
                                   "napari_dfl_id"]), st.text(max_size=3))
_JSON = st.recursive(_SCALARS, lambda c: st.lists(c, max_size=4)
                     | st.dictionaries(_KEYS, c, max_size=4), max_leaves=25)
_POSITION = st.lists(_NUMBERS, max_size=3)
_RING = st.lists(st.one_of(_POSITION, st.sampled_from([[0, 0], [5, 0], [5, 5], [0, 5]])),
                 max_size=6)
_COORDS = st.one_of(_POSITION, _RING, st.lists(_RING, max_size=3),
                    st.lists(st.lists(_RING, max_size=2), max_size=2), _JSON)
_GEOMETRY = st.one_of(st.fixed_dictionaries({"type": _NAMES, "coordinates": _COORDS}), _JSON)
_GEOMETRY = st.one_of(_GEOMETRY, st.fixed_dictionaries(
    {"type": st.just("GeometryCollection"), "geometries": st.lists(_GEOMETRY, max_size=3)}))
_CLASS = st.one_of(st.fixed_dictionaries({"name": st.one_of(st.text(max_size=3), _SCALARS)}),
                   st.fixed_dictionaries({"names": _JSON}), _SCALARS)
_FEATURE = st.fixed_dictionaries(
    {"type": st.one_of(st.just("Feature"), _SCALARS), "geometry": _GEOMETRY,
     "properties": st.one_of(st.fixed_dictionaries({"classification": _CLASS}), _JSON)},
    optional={"id": _SCALARS})
_COORD = st.one_of(st.floats(-1e4, 1e4), st.integers(-10**4, 10**4), _NUMBERS)
_POS2 = st.tuples(_COORD, _COORD).map(list)
_GOOD_RING = st.lists(_POS2, min_size=3, max_size=7).map(lambda ring: [*ring, ring[0]])
_GOOD_GEOMETRY = st.one_of(
    st.builds(lambda p: {"type": "Point", "coordinates": p}, _POS2),
    st.builds(lambda p: {"type": "MultiPoint", "coordinates": p},
              st.lists(_POS2, min_size=1, max_size=4)),
    st.builds(lambda r: {"type": "Polygon", "coordinates": r},
              st.lists(_GOOD_RING, min_size=1, max_size=3)),
    st.builds(lambda r: {"type": "MultiPolygon", "coordinates": r},
              st.lists(st.lists(_GOOD_RING, min_size=1, max_size=2), min_size=1, max_size=3)),
)
_GOOD_FEATURE = st.builds(
    lambda g, name: {"type": "Feature", "geometry": g,
                     "properties": {"classification": {"name": name}}},
    _GOOD_GEOMETRY, st.sampled_from(["Tumor", "a", "Stroma"]))
_ANY_FEATURE = st.one_of(_GOOD_FEATURE, _FEATURE)
_DOCUMENT = st.one_of(_JSON, st.lists(_ANY_FEATURE, max_size=4), _ANY_FEATURE,
                      st.fixed_dictionaries({"type": st.just("FeatureCollection"),
                                             "features": st.lists(st.one_of(_ANY_FEATURE, _JSON),
                                                                  max_size=4)}))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_DOCUMENT, known=st.one_of(st.none(), st.just(["Tumor", "a"])))
def test_fuzzed_geojson_only_raises_annotation_error(document, known):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        try:
            annotations = annotations_from_geojson(document, known_classes=known)
        except AnnotationError:
            return
    for annotation in annotations:
        assert annotation.kind in ("region", "point") and annotation.geometry.is_valid
        assert annotation.label and annotation.id


@settings(max_examples=150, deadline=None)
@given(content=st.one_of(st.binary(max_size=60), st.text(max_size=60),
                         _DOCUMENT.map(lambda d: json.dumps(d)[:-1])))
def test_fuzzed_files_only_raise_annotation_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.geojson"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AnnotationWarning)
            with contextlib.suppress(AnnotationError):
                read_geojson(path)


def test_regions_take_the_same_tiles_without_laying_the_whole_grid():
    from napari_dfl.core.annotations.annotation import read_geojson
    from napari_dfl.core.annotations.samples import preview_samples, slide_samples
    from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS, SAMPLE_SLIDE
    from napari_dfl.core.slides.tiff import Slide
    from napari_dfl.core.slides.tissue import grid_tiles_within, tile_grid

    annotations = read_geojson(SAMPLE_ANNOTATIONS)
    with Slide(SAMPLE_SLIDE) as slide:
        for patch in (112, 224):
            composition = Composition(patch)
            full = tile_grid(slide, patch, 0.5, min_tissue=0)
            # Bounded: a row-major subset of the whole grid, with every tile that meets the
            # bounds.
            bounds = (333.3, 901.0, 1207.5, 1444.0)
            near = grid_tiles_within(slide, patch, 0.5, bounds)
            position = {tuple(c): i for i, c in enumerate(full.coords.tolist())}
            order = [position[tuple(c)] for c in near.tolist()]
            assert order == sorted(order)
            x, y, size = full.coords[:, 0], full.coords[:, 1], full.tile_size
            meets = (x < bounds[2]) & (x + size > bounds[0]) & (y < bounds[3]) & \
                (y + size > bounds[1])
            assert set(np.flatnonzero(meets)) <= set(order)
            # The same samples, in the same order, as from the whole grid.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference = samples_from_annotations(annotations, full, composition,
                                                     slide.mpp)
                samples = slide_samples(slide, annotations, composition, min_tissue=0.0)
            np.testing.assert_array_equal(samples.coords, reference.coords)
            assert list(samples.labels) == list(reference.labels)
            assert list(samples.groups) == list(reference.groups)
            preview = preview_samples(slide, annotations, composition)
            assert preview.counts == reference.counts()
            assert preview.tile_um == patch * 0.5

        # A region smaller than half a tile gives no sample, and the preview names it.
        tiny = Annotation(shapely.box(1000, 1000, 1040, 1040), "dermis")
        preview = preview_samples(slide, [tiny], Composition(224))
        assert preview.counts == {"dermis": 0}
        assert preview.regions_without_samples == [tiny]
