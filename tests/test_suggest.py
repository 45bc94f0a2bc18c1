"""Active-learning suggestions and saved predictions (core, no GUI)."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import Point, box

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads.prediction_files import load_arrays, save_arrays
from napari_dfl.core.heads.suggest import annotated_tiles, margins, suggest_tiles
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.slides.tissue import TileGrid


def grid_of(rows: int, cols: int, size: float = 100.0) -> TileGrid:
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    index = np.stack([rr.ravel(), cc.ravel()], axis=1)
    return TileGrid(coords=np.round(index[:, ::-1] * size).astype(np.int64), grid_index=index,
                    grid_shape=(rows, cols), tile_size=size, patch_size=224, mpp=0.5,
                    tissue_fraction=np.linspace(0, 1, rows * cols))


def test_margins_rank_the_uncertain_first():
    proba = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(margins(proba)[:2], [0.85, 0.05])
    assert np.isnan(margins(proba)[2])
    np.testing.assert_allclose(margins(np.array([[1.0], [np.nan]])), [1.0, np.nan])


def test_suggestions_skip_annotated_tiles_and_keep_apart():
    grid = grid_of(4, 6)
    rng = np.random.default_rng(0)
    p = rng.uniform(0.7, 1.0, len(grid))
    p[[0, 1, 7, 20]] = [0.51, 0.52, 0.53, 0.55]  # 0, 1 and 7 are neighbours
    proba = np.stack([p, 1 - p], axis=1).astype(np.float32)
    proba[23] = np.nan  # not predicted: never suggested
    prediction = TilePrediction(grid, ["a", "b"], proba)
    chosen = suggest_tiles(prediction, n=3, min_distance=2.0)
    assert chosen.tolist()[:2] == [0, 20]  # 1 and 7 are within 2 tiles of 0
    assert len(chosen) == 3 and 23 not in chosen
    everything = suggest_tiles(prediction, n=100, min_distance=0)
    assert len(everything) == len(grid) - 1
    assert np.all(np.diff(margins(proba[everything])) >= 0)

    annotations = [Annotation(Point(50, 50), "a"),                # tile 0 holds a point
                   Annotation(box(1950, 0, 2000, 100), "b"),      # too small: no centre in it
                   Annotation(box(180, 0, 320, 100), "b")]        # tile 2's centre (250, 50)
    exclude = annotated_tiles(grid, annotations)
    assert np.flatnonzero(exclude).tolist() == [0, 2]
    assert 0 not in suggest_tiles(prediction, n=3, exclude=exclude).tolist()


def test_a_saved_prediction_loads_back_identical(tmp_path):
    grid = grid_of(3, 5, 112.5)
    proba = np.random.default_rng(2).dirichlet([1, 1, 1], len(grid)).astype(np.float32)
    proba[4] = np.nan
    prediction = TilePrediction(grid, ["x", "y", "z"], proba)
    path = save_arrays(prediction, tmp_path / "prediction.npz")
    back = load_arrays(path)
    assert back.classes == ["x", "y", "z"]
    np.testing.assert_array_equal(back.proba, proba)
    np.testing.assert_array_equal(back.grid.coords, grid.coords)
    assert back.grid.grid_shape == grid.grid_shape and back.grid.tile_size == 112.5
    np.testing.assert_array_equal(back.class_map(), prediction.class_map())

    np.savez(tmp_path / "other.npz", coords=np.zeros((2, 2)))
    with pytest.raises(DFLError, match="not a napari-dfl prediction"):
        load_arrays(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DFLError, match="not a valid array archive"):
        load_arrays(tmp_path / "junk.npz")
    bad = dict(np.load(path))
    bad["grid_index"] = bad["grid_index"] + 10
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(DFLError, match="inconsistent"):
        load_arrays(tmp_path / "bad.npz")
