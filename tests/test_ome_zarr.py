"""OME-Zarr (NGFF 0.4) output of a real prediction: metadata, placement, arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interchange_world import MPP, world_for
from napari_dfl.core.heads.prediction_files import load_arrays

# the shared world embeds, trains and predicts a slide crop once (10-25 s)
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def world(tmp_path_factory, backbone):
    return world_for(tmp_path_factory, backbone)


def zattrs(path):
    return json.loads((path / ".zattrs").read_text())


def check_ngff_04_image(attrs: dict, n_channels_axis: bool = True) -> dict:
    """The NGFF 0.4 rules for one multiscales image; returns its single dataset."""
    (multiscale,) = attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    axes = multiscale["axes"]
    assert [a["name"] for a in axes] == ["c", "y", "x"]
    assert [a["type"] for a in axes] == ["channel", "space", "space"]
    assert all(a["unit"] == "micrometer" for a in axes[1:]) and "unit" not in axes[0]
    (dataset,) = multiscale["datasets"]
    transforms = dataset["coordinateTransformations"]
    # exactly one scale, first; at most one translation, after it; one value per axis
    assert transforms[0]["type"] == "scale" and len(transforms[0]["scale"]) == 3
    assert [t["type"] for t in transforms[1:]] == ["translation"]
    assert len(transforms[1]["translation"]) == 3
    return dataset


def test_metadata_is_ngff_04_at_the_slide_scale(world):
    root = world.ome_zarr
    assert json.loads((root / ".zgroup").read_text()) == {"zarr_format": 2}
    dataset = check_ngff_04_image(zattrs(root))
    prediction = load_arrays(world.prediction)
    # one pixel per tile: 64 px at 0.5 µm/px = 32 µm, which is the level-0 tile x slide µm/px
    scale = dataset["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, 32.0, 32.0]
    assert scale[1] == pytest.approx(prediction.grid.tile_size * MPP)
    # the first tile's centre sits where napari puts the slide's pixel at that centre
    offset = dataset["coordinateTransformations"][1]["translation"]
    assert offset[1] == offset[2] == pytest.approx((prediction.grid.tile_size / 2 - 0.5) * MPP)
    channels = zattrs(root)["omero"]["channels"]
    assert [c["label"] for c in channels] == ["left", "right"]
    assert [c["color"] for c in channels] == ["FF0000", "0000FF"]  # the head's colours
    array = json.loads((root / "0" / ".zarray").read_text())
    assert array["dimension_separator"] == "/" and array["zarr_format"] == 2


def test_arrays_equal_the_prediction(world):
    import zarr

    prediction = load_arrays(world.prediction)
    root = zarr.open_group(world.ome_zarr, mode="r")
    proba = root["0"][...]
    assert proba.shape == (2, *prediction.grid.grid_shape) == (2, 5, 5)
    for i in range(2):
        np.testing.assert_array_equal(proba[i], prediction.probability_map(i))
    assert np.isfinite(proba).all()  # the crop is predicted whole (--min-tissue 0)
    labels = root["labels/class_map/0"][...]
    np.testing.assert_array_equal(labels[0].astype(np.int32), prediction.class_map() + 1)
    assert set(np.unique(labels)) == {1, 2}


def test_class_map_is_an_ngff_label_image(world):
    assert zattrs(world.ome_zarr / "labels") == {"labels": ["class_map"]}
    label_attrs = zattrs(world.ome_zarr / "labels" / "class_map")
    check_ngff_04_image(label_attrs)
    image = check_ngff_04_image(zattrs(world.ome_zarr))
    labels = label_attrs["multiscales"][0]["datasets"][0]
    assert labels["coordinateTransformations"] == image["coordinateTransformations"]
    meta = label_attrs["image-label"]
    assert meta["version"] == "0.4" and meta["source"] == {"image": "../../"}
    assert meta["colors"] == [{"label-value": 1, "rgba": [255, 0, 0, 255]},
                              {"label-value": 2, "rgba": [0, 0, 255, 255]}]
    assert [p["class"] for p in meta["properties"]] == ["left", "right"]


def test_rewrite_replaces_ours_and_refuses_other_folders(world, tmp_path):
    from napari_dfl.core.heads.ome_zarr import OmeZarrError, write_ome_zarr

    prediction = load_arrays(world.prediction)
    path = write_ome_zarr(prediction, tmp_path / "p.ome.zarr")
    write_ome_zarr(prediction, path)  # an earlier napari-dfl output is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.ome.zarr"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(OmeZarrError, match="not an OME-Zarr prediction written by napari-dfl"):
        write_ome_zarr(prediction, tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_napari_ome_zarr_opens_it(world):
    pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr is not installed: the "
                        "metadata and arrays are checked against NGFF 0.4 above instead")
    from napari_ome_zarr._reader import napari_get_reader

    layers = napari_get_reader(str(world.ome_zarr))(str(world.ome_zarr))
    kinds = {kind: (data, meta) for data, meta, kind in layers}
    assert set(kinds) == {"image", "labels"}
    data, meta = kinds["image"]
    assert data[0].shape == (2, 5, 5) and meta["channel_axis"] == 0
    assert list(meta["scale"]) == [32.0, 32.0]
    assert meta["name"] == ["crop.prediction class probabilities: left",
                            "crop.prediction class probabilities: right"]
    labels, _ = kinds["labels"]
    np.testing.assert_array_equal(np.asarray(labels[0])[0],
                                  load_arrays(world.prediction).class_map() + 1)
