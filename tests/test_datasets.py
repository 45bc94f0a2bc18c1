"""Datasets in the three forms (slide + GeoJSON, class folders, CSV) and their bad inputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import shapely
from PIL import Image

from conftest import shared_file
from napari_dfl import MissingMppWarning, Slide, SlideError, tile_grid
from napari_dfl.core.annotations.annotation import (
    Annotation,
    AnnotationError,
    AnnotationWarning,
    write_geojson,
)
from napari_dfl.core.annotations.datasets import (
    DatasetError,
    dataset_summary,
    load_dataset,
    load_datasets,
)
from napari_dfl.core.slides.image import ImageSlide
from napari_dfl.core.slides.sampling import Composition

ONE_ZOOM = Composition(224, (0.5,), ("rgb",))
TWO_ZOOMS = Composition(224, (0.5, 2.0), ("rgb", "gray"))
# On the sample slide (2220 x 2967, 0.499 um/px): tissue in the middle, glass top-left.
TISSUE = [(1100, 1900), (1300, 2100), (1500, 2300), (1200, 2500)]
GLASS = [(20, 20), (300, 20), (20, 300), (300, 300)]


@pytest.fixture(scope="module")
def patches(sample_slide_path) -> dict[str, list[np.ndarray]]:
    with Slide(sample_slide_path) as slide:
        return {"tissue": [slide.read_region(p, (224, 224)) for p in TISSUE],
                "glass": [slide.read_region(p, (224, 224)) for p in GLASS]}


def _save(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


def _class_folder(root: Path, patches, counts=None) -> Path:
    for label, images in patches.items():
        for i, pixels in enumerate(images[: (counts or {}).get(label, len(images))]):
            _save(root / label, f"{label}_{i}.png", pixels)
    return root


# -- form 2: class folders ----------------------------------------------------------------
def test_folder_of_class_subfolders(tmp_path, patches):
    root = _class_folder(tmp_path / "patches", patches)
    (root / "tissue" / "notes.txt").write_text("ignored")
    (root / ".hidden").mkdir()
    with pytest.warns(MissingMppWarning, match=r"8 of 8 images .* assuming 0\.5"):
        sources = load_dataset(root, composition=ONE_ZOOM)
    assert len(sources) == 8
    assert dataset_summary(sources) == {"sources": 8, "samples": 8, "groups": 8,
                                        "classes": {"glass": 4, "tissue": 4}, "mpp_assumed": 8}
    first = sources[0]
    assert first.path == root / "glass" / "glass_0.png"
    # One sample centred in the 224 px image: its 224 px x20 patch is the image itself.
    assert first.samples.coords.tolist() == [[0, 0]]
    assert first.samples.groups.tolist() == [str(first.path)]
    assert (first.mpp, first.mpp_assumed) == (0.5, True)
    with first.open() as image:
        assert isinstance(image, ImageSlide) and image.mpp == 0.5
        assert np.array_equal(image.read_region((0, 0), (224, 224), mpp=0.5),
                              patches["glass"][0])


def test_folder_with_given_mpp_and_context_warning(tmp_path, patches):
    root = _class_folder(tmp_path / "patches", patches)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources = load_dataset(root, composition=TWO_ZOOMS, mpp=0.25)
    messages = [str(w.message) for w in caught]
    assert not any(issubclass(w.category, MissingMppWarning) for w in caught)
    assert any("white padding" in m and "--zooms 0.5" in m for m in messages)
    # At 0.25 um/px the 0.5 um/px patch spans 448 image pixels, centred on (112, 112).
    assert sources[0].samples.coords.tolist() == [[-112, -112]]
    assert (sources[0].mpp, sources[0].mpp_assumed) == (0.25, False)


@pytest.mark.parametrize(("layout", "message"), [
    ({}, "is empty: expected one subfolder per class"),
    ({".": 2}, "holds images but no class subfolders"),
    ({"tissue": 2, "glass": 0}, r"class folder\(s\) glass .* hold no images"),
    ({"tissue": 3}, r"only one class, 'tissue' \(3 samples\)"),
    ({"tissue": 3, "glass": 1}, r"class\(es\) 'glass' have only one sample"),
])
def test_folder_bad_input(tmp_path, patches, layout, message):
    root = tmp_path / "data"
    root.mkdir()
    for label, n in layout.items():
        (root / label).mkdir(exist_ok=True)
        for i in range(n):
            _save(root / label, f"{i}.png", patches["tissue"][i])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        with pytest.raises(DatasetError, match=message):
            load_dataset(root, composition=ONE_ZOOM)


# -- form 3: CSV ----------------------------------------------------------------------------
def _csv(tmp_path, patches, rows: str, header="image,x,y,label") -> Path:
    _save(tmp_path / "images", "a.png", patches["tissue"][0])
    _save(tmp_path / "images", "b.png", patches["tissue"][1])
    path = tmp_path / "labels.csv"
    path.write_text(header + "\n" + rows)
    return path


ROWS = """images/a.png,10.5,20,epithelial
images/a.png,100,120,stroma

images/b.png,200,30.25,epithelial
images/b.png,50,60,stroma
"""


def test_csv_points(tmp_path, patches):
    path = _csv(tmp_path, patches, ROWS)
    with pytest.warns(MissingMppWarning, match="2 of 2 images in labels.csv"):
        sources = load_dataset(path, composition=TWO_ZOOMS)
    assert [s.path.name for s in sources] == ["a.png", "b.png"]
    a = sources[0].samples
    assert a.labels.tolist() == ["epithelial", "stroma"]
    assert a.groups.tolist() == [str(tmp_path / "images" / "a.png")] * 2
    # Anchors put the 224 px x20 patch's centre on the point (extent 224 at 0.5 um/px).
    assert a.coords.tolist() == [[-102, -92], [-12, 8]]
    assert dataset_summary(sources)["classes"] == {"epithelial": 2, "stroma": 2}


def test_csv_accepts_semicolons_extra_columns_and_slides(tmp_path, patches, sample_slide_path):
    rows = (f"images/a.png;1;2;x;note\n{sample_slide_path};1000;1500;y;\n"
            f"{sample_slide_path};1200.5;1600;x;\nimages/b.png;3;4;y;\n")
    path = _csv(tmp_path, patches, rows, header="Image;X;Y;Label;comment")
    with pytest.warns(MissingMppWarning):
        sources = load_dataset(path, composition=ONE_ZOOM)
    slide = next(s for s in sources if s.path == sample_slide_path)
    assert slide.mpp is None and not slide.mpp_assumed  # the slide's own 0.499 um/px
    extent = ONE_ZOOM.anchor_extent(0.499)
    assert slide.samples.coords.tolist() == np.round(
        np.array([[1000, 1500], [1200.5, 1600]]) - extent / 2).astype(int).tolist()


@pytest.mark.parametrize(("rows", "header", "message"), [
    (ROWS, "image,x,label", r"lacks column\(s\) y; found: image, x, label; required: "
                            r"image, x, y, label"),
    ("", "", "is empty; expected a header image,x,y,label"),
    ("", "image,x,y,label", "has a header but no rows"),
    ("images/a.png,10,abc,t\n", "image,x,y,label", r"line 2: y 'abc' is not a number"),
    ("images/a.png,10,20,t\nimages/a.png,nan,20,t\n", "image,x,y,label",
     r"line 3: x 'nan' is not a number"),
    ("images/a.png,10,20,\n", "image,x,y,label", "line 2: the label is empty"),
    ("images/a.png,10,20,t\nimages/a.png,600,20,t\nimages/b.png,10,-1,u\n", "image,x,y,label",
     r"line 3: point \(600, 20\) lies outside images/a.png \(224 x 224 px\)"),
    ("images/a.png,10,20,t\nimages/a.png,11,20,t\n", "image,x,y,label",
     r"only one class, 't' \(2 samples\)"),
    ("images/a.png,10,20,t\nimages/a.png,11,20,t\nimages/b.png,1,1,u\n", "image,x,y,label",
     r"class\(es\) 'u' have only one sample"),
])
def test_csv_bad_input(tmp_path, patches, rows, header, message):
    path = _csv(tmp_path, patches, rows, header=header)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingMppWarning)
        with pytest.raises(DatasetError, match=message):
            load_dataset(path, composition=ONE_ZOOM)


def test_csv_missing_images_refused_or_skipped(tmp_path, patches):
    rows = ROWS + "images/gone1.png,1,1,stroma\nimages/gone2.png,1,1,epithelial\n"
    path = _csv(tmp_path, patches, rows)
    with pytest.raises(DatasetError, match=r"2 of 4 images listed in labels.csv do not exist "
                       r"\(paths are relative to .*\): images/gone1.png, images/gone2.png\. "
                       r"Fix the paths, or skip their 2 rows with missing_images='skip'"):
        load_dataset(path, composition=ONE_ZOOM)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources = load_dataset(path, composition=ONE_ZOOM, missing_images="skip")
    assert any("their 2 rows are skipped" in str(w.message) for w in caught)
    assert len(sources) == 2


def test_real_crc_nuclei_csv():
    path = shared_file("crchisto/nuclei_labels.csv")
    with pytest.warns(MissingMppWarning, match="100 of 100 images"):
        sources = load_dataset(path, composition=TWO_ZOOMS)
    summary = dataset_summary(sources)
    assert summary["classes"] == {"epithelial": 7722, "fibroblast": 5712,
                                  "inflammatory": 6971, "others": 2039}
    assert summary["sources"] == summary["groups"] == 100
    assert all(s.path.is_file() and s.path.parent == path.parent / "images" for s in sources)


# -- form 1: slide + GeoJSON ----------------------------------------------------------------
@pytest.fixture(scope="module")
def sample_grid(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        return tile_grid(slide, TWO_ZOOMS.patch_size, TWO_ZOOMS.zooms[0], min_tissue=0.5)


def _annotations() -> list[Annotation]:
    return [
        Annotation(shapely.box(1000, 1800, 1700, 2400), "upper"),
        Annotation(shapely.box(1000, 2400, 1900, 2960), "lower"),
        Annotation(shapely.MultiPoint([(1200, 1300), (1500, 2200)]), "point"),
        Annotation(shapely.Point(1400, 2600), "point"),
    ]


def test_slide_with_geojson_pair(tmp_path, sample_slide_path, sample_grid):
    annotations = _annotations()
    geojson = write_geojson(annotations, tmp_path / "labels.geojson")
    sources = load_dataset(f"{sample_slide_path}:{geojson}", composition=TWO_ZOOMS)
    assert len(sources) == 1 and sources[0].path == sample_slide_path
    assert sources[0].mpp is None
    samples = sources[0].samples
    counts = samples.counts()
    assert counts["point"] == 3 and counts["upper"] >= 4 and counts["lower"] >= 4
    # Region samples are tissue tiles of the slide's grid (embeddings are shared with it).
    grid = {tuple(c) for c in sample_grid.coords.tolist()}
    tiles = samples.subset(samples.labels != "point")
    assert {tuple(c) for c in tiles.coords.tolist()} <= grid
    for coord, label in zip(tiles.coords, tiles.labels, strict=True):
        box = shapely.box(*coord, *(coord + sample_grid.tile_size))
        region = next(a.geometry for a in annotations if a.label == label)
        assert box.intersection(region).area >= 0.5 * box.area
    # Each sample is grouped by the annotation it came from (ids survive the GeoJSON).
    assert set(samples.groups) == {a.id for a in annotations}
    assert set(tiles.groups) == {annotations[0].id, annotations[1].id}


def test_slide_with_sibling_geojson(tmp_path, sample_slide_path):
    slide = tmp_path / "case.svs"
    slide.symlink_to(sample_slide_path)
    write_geojson(_annotations(), tmp_path / "case.geojson")
    sources = load_datasets([slide], composition=TWO_ZOOMS)
    assert sources[0].samples.counts()["point"] == 3


def test_plain_image_with_geojson(tmp_path, patches):
    image = _save(tmp_path, "crop.png", patches["tissue"][0])
    geojson = write_geojson([Annotation(shapely.Point(50, 50), "a"),
                             Annotation(shapely.Point(150, 150), "b"),
                             Annotation(shapely.Point(100, 20), "b"),
                             Annotation(shapely.Point(20, 100), "a")], tmp_path / "crop.geojson")
    with pytest.warns(MissingMppWarning, match=r"crop.png .* assuming 0\.5"):
        sources = load_dataset(f"{image}:{geojson}", composition=ONE_ZOOM)
    assert (sources[0].mpp, sources[0].mpp_assumed) == (0.5, True)
    assert sources[0].samples.coords.tolist()[0] == [-62, -62]


def test_annotated_slide_bad_input(tmp_path, sample_slide_path):
    far = write_geojson([Annotation(shapely.box(5000, 6000, 5500, 6500), "a"),
                         Annotation(shapely.Point(100, 100), "b")], tmp_path / "far.geojson")
    with pytest.raises(AnnotationError, match=r"1 of 2 annotations in far.geojson \(for "
                       r"CMU-1-Small-Region.svs\) lie entirely outside the slide \(2220 x 2967"):
        load_dataset(f"{sample_slide_path}:{far}", composition=TWO_ZOOMS)
    with pytest.raises(DatasetError, match=r"slide .*missing\.svs does not exist"):
        load_dataset(f"{tmp_path / 'missing.svs'}:{far}", composition=TWO_ZOOMS)
    with pytest.raises(DatasetError, match="give its slide too"):
        load_dataset(far, composition=TWO_ZOOMS)
    lonely = tmp_path / "lonely.svs"
    lonely.symlink_to(sample_slide_path)
    with pytest.raises(DatasetError, match=r"expected lonely\.geojson beside it"):
        load_dataset(lonely, composition=TWO_ZOOMS)
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "nothing", composition=TWO_ZOOMS)
    empty = tmp_path / "empty.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(DatasetError, match="holds no annotations"):
        load_dataset(f"{sample_slide_path}:{empty}", composition=TWO_ZOOMS)
    with pytest.raises(AnnotationError, match="unknown class"):
        load_dataset(f"{sample_slide_path}:{far}", composition=TWO_ZOOMS, classes=["x", "y"])


def test_glass_region_needs_min_tissue_zero(tmp_path, sample_slide_path):
    geojson = write_geojson([Annotation(shapely.box(0, 0, 700, 700), "glass"),
                             Annotation(shapely.box(1000, 1800, 1700, 2400), "tissue")],
                            tmp_path / "g.geojson")
    spec = f"{sample_slide_path}:{geojson}"
    with pytest.warns(AnnotationWarning, match="lower min_tissue"), \
            pytest.raises(DatasetError, match="only one class, 'tissue'"):
        load_dataset(spec, composition=TWO_ZOOMS)
    counts = load_dataset(spec, composition=TWO_ZOOMS, min_tissue=0)[0].samples.counts()
    assert counts["glass"] == 9  # the 3 x 3 tiles fully inside the 700 px square


def test_slide_without_mpp_needs_one(tmp_path):
    import tifffile

    points = [Annotation(shapely.Point(x, 4), label) for x, label in
              ((10, "a"), (20, "a"), (30, "b"), (40, "b"))]
    # A strip wider than a patch is a slide: no mpp is assumed for it.
    path = tmp_path / "nompp.tif"
    tifffile.imwrite(path, np.full((8, 4200, 3), 180, np.uint8), photometric="rgb")
    write_geojson(points, tmp_path / "nompp.geojson")
    with pytest.raises(SlideError, match="--mpp"):
        load_dataset(path, composition=ONE_ZOOM)
    sources = load_dataset(path, composition=ONE_ZOOM, mpp=0.25)
    assert (sources[0].mpp, sources[0].mpp_assumed) == (0.25, False)
    with pytest.raises(DatasetError, match="positive"):
        load_dataset(path, composition=ONE_ZOOM, mpp=0)
    # A patch-sized one-level TIFF is treated like a PNG: 0.5 um/px assumed, said so.
    patch = tmp_path / "patch.tif"
    tifffile.imwrite(patch, np.full((64, 64, 3), 180, np.uint8), photometric="rgb")
    write_geojson(points, tmp_path / "patch.geojson")
    with pytest.warns(MissingMppWarning, match=r"assuming 0\.5"):
        sources = load_dataset(patch, composition=ONE_ZOOM)
    assert (sources[0].mpp, sources[0].mpp_assumed) == (0.5, True)
    with sources[0].open() as slide:
        assert isinstance(slide, Slide) and slide.mpp == 0.5
