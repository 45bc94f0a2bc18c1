"""A real store, head and prediction of a crop of the sample slide, for interchange tests.

The slide is a 384 x 384 px crop of the sample slide's tissue, written as a tiled TIFF
with its 0.499 µm/px (a whole-slide prediction of the sample takes minutes on a shared
CPU). The store holds real EfficientNet-Lite0 embeddings of its 25 tiles (64 px at x20,
with x5 context, rgb and gray: four parts); the head is trained on them (left or right half:
real training on real embeddings, an arbitrary task); ``predict --ome-zarr`` then predicts
every tile with it from the store and writes the OME-Zarr.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from napari_dfl import Slide, tile_grid
from napari_dfl.cli import main
from napari_dfl.core.features.engine import embed_coords
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import open_store_for
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.head_files import save_head
from napari_dfl.core.heads.training import fit
from napari_dfl.core.slides.sample_slide import SAMPLE_SLIDE
from napari_dfl.core.slides.sampling import Composition

COMPOSITION = Composition(64, (0.5, 2.0), ("rgb", "gray"), input_size=64)


@dataclass
class World:
    """What the tests read."""

    store: EmbeddingStore
    head: Path
    prediction: Path
    ome_zarr: Path
    out: Path


MPP = 0.499
SIDE = 384


def crop_slide(path: Path) -> Path:
    """Write the tissue-centred crop of the sample slide as a tiled TIFF with its µm/px."""
    with Slide(SAMPLE_SLIDE) as slide:
        pixels = slide.read_level(0)
        grid = tile_grid(slide, 224, 0.5, min_tissue=0.5)
    x0, y0 = (int(v) for v in np.median(grid.coords, axis=0))
    crop = np.ascontiguousarray(pixels[y0:y0 + SIDE, x0:x0 + SIDE, :3])
    per_cm = 1e4 / MPP
    tifffile.imwrite(path, crop, tile=(128, 128), photometric="rgb",
                     resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
    return path


_WORLD: list[World] = []


def world_for(tmp_path_factory, backbone) -> World:
    """One world per test session, shared by the interchange test modules."""
    if not _WORLD:
        _WORLD.append(make_world(tmp_path_factory.mktemp("interchange"), backbone))
    return _WORLD[0]


def make_world(root: Path, backbone) -> World:
    """Crop, embed, train and predict in ``root`` (about 10-25 s on a shared CPU)."""
    stores = root / "stores"
    slide_path = crop_slide(root / "crop.tif")
    with Slide(slide_path) as slide:
        grid = tile_grid(slide, COMPOSITION.patch_size, COMPOSITION.zooms[0], min_tissue=0.0)
        coords = grid.coords
        store = open_store_for(slide, backbone, COMPOSITION, stores)
        for _ in embed_coords(slide, coords, backbone, COMPOSITION, store):
            pass
    x = store.get(coords)
    labels = np.where(coords[:, 0] < np.median(coords[:, 0]), "left", "right")
    head = fit(x, labels, None, TrainConfig(max_epochs=5), classes=["left", "right"])
    head_path = save_head(head, root / "halves.dflhead",
                          extractor=Extractor.of(backbone, COMPOSITION),
                          colors={"left": "#ff0000", "right": "#0000ff"})
    out = root / "predictions"
    code = main(["predict", str(slide_path), "--head", str(head_path), "--out", str(out),
                 "--stores", str(stores), "--min-tissue", "0", "--ome-zarr"])
    assert code == 0
    stem = slide_path.stem
    return World(EmbeddingStore.open(store.path), head_path,
                 out / f"{stem}.prediction.npz", out / f"{stem}.prediction.ome.zarr", out)
