"""TRIDENT/CLAM h5 export of a real store: the attributes TRIDENT reads, parts, CLAM's .pt."""

from __future__ import annotations

import numpy as np
import pytest

from interchange_world import COMPOSITION, MPP, world_for
from napari_dfl.cli import main
from napari_dfl.core.features.store import EmbeddingStore

h5py = pytest.importorskip("h5py")


# the shared world embeds, trains and predicts a slide crop once (10-25 s)
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def world(tmp_path_factory, backbone):
    return world_for(tmp_path_factory, backbone)


def trident_patch_size_level0(attrs) -> int:
    """What TRIDENT's WSIPatcher computes from the attributes: round(size * dst/src px)."""
    src_pixel = 10 / attrs["level0_magnification"]
    dst_pixel = 10 / attrs["target_magnification"]
    return round(attrs["patch_size"] * dst_pixel / src_pixel)


def test_export_writes_the_attributes_trident_reads(world, tmp_path):
    from napari_dfl.core.features.h5 import export_h5

    out = export_h5(world.store, tmp_path / "crop.h5")
    with h5py.File(out, "r") as f:
        attrs = dict(f["coords"].attrs)
        feature_attrs = dict(f["features"].attrs)
        np.testing.assert_array_equal(f["coords"][:], world.store.coords)
        np.testing.assert_array_equal(f["features"][:], world.store.embeddings())
    # TRIDENT's readers take the Trident path only when none of these is missing
    assert None not in (attrs.get("patch_size"), attrs.get("level0_magnification"),
                        attrs.get("target_magnification"))
    assert attrs["patch_size"] == COMPOSITION.patch_size == 64
    assert attrs["target_magnification"] == pytest.approx(20.0)
    assert attrs["level0_magnification"] == pytest.approx(10 / MPP)
    # its slide encoders cast patch_size_level0 to int; its patcher must agree with it
    assert attrs["patch_size_level0"] == round(64 * 0.5 / MPP) == 64
    assert isinstance(attrs["patch_size_level0"], np.integer)
    assert trident_patch_size_level0(attrs) == attrs["patch_size_level0"]
    assert attrs["name"] == "crop"  # TRIDENT's name: the file name without its extension
    assert (attrs["level0_width"], attrs["level0_height"]) == (384, 384)
    assert attrs["savetodir"] == str(tmp_path.resolve())
    # what TRIDENT's patch encoders put on the features dataset
    assert feature_attrs == {"name": "crop", "savetodir": str(tmp_path.resolve()),
                             "encoder": "efficientnet-lite0"}


def test_one_part_is_its_columns(world, tmp_path):
    from napari_dfl.core.features.h5 import PART_ATTR, export_h5, part_names

    names = part_names(world.store)
    assert names == ["0.5um/px rgb", "0.5um/px gray", "2um/px rgb", "2um/px gray"]
    width = world.store.dim // 4
    full = world.store.embeddings()
    for spelling, index in (("2um/px rgb", 2), ("x5 gray", 3), ("X20_RGB", 0), ("1", 1)):
        out = export_h5(world.store, tmp_path / f"{index}.h5", part=spelling)
        with h5py.File(out, "r") as f:
            assert f["features"].shape == (len(world.store), width)
            np.testing.assert_array_equal(f["features"][:],
                                          full[:, index * width:(index + 1) * width])
            assert f.attrs[PART_ATTR] == names[index]
            assert f["coords"].attrs["patch_size"] == 64


def test_an_unknown_part_names_the_parts(world, tmp_path):
    from napari_dfl.core.features.h5 import H5FormatError, export_h5

    with pytest.raises(H5FormatError, match=r"'2um/px rgb'.*positions 0-3"):
        export_h5(world.store, tmp_path / "x.h5", part="x40 rgb")
    assert not list(tmp_path.iterdir())


def test_clam_layout_holds_the_bare_tensor(world, tmp_path):
    import torch

    from napari_dfl.core.features.h5 import export_clam

    paths = export_clam(world.store, tmp_path / "features", part="0.5um/px rgb")
    assert paths["h5"] == tmp_path / "features" / "h5_files" / "crop.h5"
    assert paths["pt"] == tmp_path / "features" / "pt_files" / "crop.pt"
    features = torch.load(paths["pt"], weights_only=True)  # tensors only: no pickled code
    assert isinstance(features, torch.Tensor) and features.dtype == torch.float32
    with h5py.File(paths["h5"], "r") as f:
        np.testing.assert_array_equal(features.numpy(), f["features"][:])
    assert features.shape == (len(world.store), world.store.dim // 4)


def test_a_store_without_geometry_exports_and_says_what_is_missing(world, tmp_path):
    from napari_dfl.core.features.h5 import export_h5, import_h5

    bare = tmp_path / "bare.h5"
    with h5py.File(bare, "w") as f:  # what an older exporter wrote: no attributes at all
        f["features"] = world.store.embeddings()[:5]
        f["coords"] = world.store.coords[:5]
    store = import_h5(bare, tmp_path / "bare.dfl.zarr")
    with pytest.warns(UserWarning, match=r"patch_size, level0_magnification, "
                                         r"target_magnification, patch_size_level0, name"):
        out = export_h5(store, tmp_path / "again.h5")
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["features"][:], world.store.embeddings()[:5])
        assert set(f["coords"].attrs) == {"savetodir"}
    with pytest.warns(UserWarning, match="patch_size, level0"):
        out = export_h5(store, tmp_path / "sized.h5", patch_size_level0=256)
    with h5py.File(out, "r") as f:
        assert f["coords"].attrs["patch_size_level0"] == 256


def test_trident_attributes_survive_import_and_export(world, tmp_path):
    from napari_dfl.core.features.h5 import export_h5, import_h5

    first = export_h5(world.store, tmp_path / "crop.h5", part="x20 rgb")
    back = import_h5(first, tmp_path / "back.dfl.zarr")
    second = export_h5(back, tmp_path / "out" / "crop.h5")
    with h5py.File(first, "r") as a, h5py.File(second, "r") as b:
        keep = ("patch_size", "patch_size_level0", "level0_magnification",
                "target_magnification", "name", "level0_width", "level0_height")
        assert {k: a["coords"].attrs[k] for k in keep} == {k: b["coords"].attrs[k]
                                                           for k in keep}


def test_cli_part_and_clam(world, tmp_path, capsys):
    import torch

    code = main(["export-h5", str(world.store.path), str(tmp_path / "clam"), "--clam",
                 "--part", "x5 rgb"])
    assert code == 0
    said = capsys.readouterr().out
    assert f"{len(world.store)} features of dimension 1280 (part 'x5 rgb' of 5120)" in said
    pt = torch.load(tmp_path / "clam" / "pt_files" / "crop.pt", weights_only=True)
    np.testing.assert_array_equal(pt.numpy(), world.store.embeddings()[:, 2560:3840])
    assert main(["export-h5", str(world.store.path), str(tmp_path / "x.h5"), "--part",
                 "nope"]) == 2
    assert "has no part 'nope'" in capsys.readouterr().err
    assert EmbeddingStore.open(world.store.path).dim == 5120
