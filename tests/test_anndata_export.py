"""AnnData (.h5ad) export of a real store, read back with anndata."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from shapely.geometry import Point, box

from interchange_world import world_for
from napari_dfl.cli import main
from napari_dfl.core.annotations.annotation import Annotation, write_geojson
from napari_dfl.core.heads.head_files import load_head
from napari_dfl.core.heads.prediction_files import load_arrays

anndata = pytest.importorskip("anndata", reason="the anndata extra is not installed")


# the shared world embeds, trains and predicts a slide crop once (10-25 s)
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def world(tmp_path_factory, backbone):
    return world_for(tmp_path_factory, backbone)


def test_store_as_h5ad_reads_back(world, tmp_path):
    from napari_dfl.core.features.anndata_export import export_anndata

    store = world.store
    path = export_anndata(store, tmp_path / "crop.h5ad")
    adata = anndata.read_h5ad(path)
    assert adata.shape == (len(store), store.dim) == (25, 5120)
    np.testing.assert_array_equal(adata.X, store.embeddings())
    np.testing.assert_array_equal(adata.obsm["spatial"], store.coords)
    assert list(adata.obs_names[:2]) == [f"{x}_{y}" for x, y in store.coords[:2].tolist()]
    assert list(adata.var["part"].cat.categories) == sorted(
        ["0.5um/px rgb", "0.5um/px gray", "2um/px rgb", "2um/px gray"])
    assert adata.var_names[1280] == "0.5um/px gray:0"
    info = adata.uns["napari_dfl"]
    card = json.loads(info["card_json"])
    assert card["identity"] == store.identity and card["attrs"] == store.attrs
    assert card["extractor"]["backbone"]["name"] == "efficientnet-lite0"
    assert info["extractor"]["composition"]["patch_size"] == 64
    assert list(info["extractor"]["composition"]["zooms"]) == [0.5, 2.0]
    assert info["slide"] == "crop.tif"
    assert [p.name for p in tmp_path.iterdir()] == ["crop.h5ad"]  # no temporary file left


def test_predictions_and_annotations_in_obs(world, tmp_path):
    from napari_dfl.core.features.anndata_export import export_anndata
    from napari_dfl.core.heads.store_predictions import prediction_columns

    store = world.store
    x0, y0 = store.coords.min(axis=0).tolist()
    region = Annotation(box(x0, y0, x0 + 60, y0 + 60), "corner")  # tile 0's centre only
    far_x, far_y = store.coords.max(axis=0).tolist()
    point = Annotation(Point(far_x + 10, far_y + 10), "cell")  # inside the last tile
    obs = prediction_columns(store, head=world.head, prediction=world.prediction)
    path = export_anndata(store, tmp_path / "crop.h5ad", obs=obs, annotations=[region, point])
    adata = anndata.read_h5ad(path)
    head, _ = load_head(world.head)
    proba = head.predict_proba(store.embeddings())
    np.testing.assert_allclose(adata.obs["p_left"], proba[:, 0], rtol=1e-6)
    expected = np.array(["left", "right"])[proba.argmax(axis=1)]
    assert list(adata.obs["predicted_class"]) == expected.tolist()
    # the prediction file holds every tile of the crop: its columns agree with the head
    saved = load_arrays(world.prediction)
    order = {tuple(c): i for i, c in enumerate(saved.grid.coords.tolist())}
    rows = [order[tuple(c)] for c in store.coords.tolist()]
    np.testing.assert_array_equal(adata.obs["file_p_right"], saved.proba[rows, 1])
    assert list(adata.obs["file_predicted_class"]) == expected.tolist()
    labels = list(adata.obs["annotation"])
    last = int(np.flatnonzero((store.coords == [far_x, far_y]).all(axis=1))[0])
    first = int(np.flatnonzero((store.coords == [x0, y0]).all(axis=1))[0])
    assert labels[first] == "corner" and labels[last] == "cell"
    assert sum(label != "" for label in labels) == 2


def test_prediction_of_another_slide_is_refused(world, tmp_path):
    from napari_dfl.core.errors import DFLError
    from napari_dfl.core.heads.prediction_files import save_arrays
    from napari_dfl.core.heads.store_predictions import prediction_columns
    from napari_dfl.core.heads.tile_prediction import TilePrediction

    saved = load_arrays(world.prediction)
    moved = TilePrediction(
        type(saved.grid)(coords=saved.grid.coords + 7, grid_index=saved.grid.grid_index,
                         grid_shape=saved.grid.grid_shape, tile_size=saved.grid.tile_size,
                         patch_size=saved.grid.patch_size, mpp=saved.grid.mpp,
                         tissue_fraction=saved.grid.tissue_fraction),
        saved.classes, saved.proba)
    other = save_arrays(moved, tmp_path / "other.prediction.npz")
    with pytest.raises(DFLError, match=r"No sample of the store .* is a tile of other"):
        prediction_columns(world.store, prediction=other)


def test_cli_export_anndata(world, tmp_path, capsys):
    geojson = write_geojson([Annotation(box(0, 0, 200, 200), "topleft")],
                            tmp_path / "a.geojson")
    out = tmp_path / "x.h5ad"
    code = main(["export-anndata", str(world.store.path), "--out", str(out), "--head",
                 str(world.head), "--annotations", str(geojson)])
    assert code == 0
    said = capsys.readouterr().out
    assert "wrote 25 samples x 5120 features" in said and "annotation" in said
    adata = anndata.read_h5ad(out)
    assert {"predicted_class", "p_left", "p_right", "annotation"} <= set(adata.obs)
    assert "topleft" in set(adata.obs["annotation"])


def test_cli_says_how_to_install_anndata(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "anndata", None)
    code = main(["export-anndata", str(world.store.path), "--out", str(tmp_path / "x.h5ad")])
    assert code == 2
    assert "pip install napari-dfl[anndata]" in capsys.readouterr().err
    assert not (tmp_path / "x.h5ad").exists()
