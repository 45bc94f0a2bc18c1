"""Slide-level jobs: compress stores, train a slide model on a cohort, predict slides.

The CLI's ``compress``, ``train-slides`` and ``predict-slides`` and the panel's *Predict this
slide* call these; a slide that cannot be used is reported and the others go on.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import find_store, slide_name, store_extractor
from napari_dfl.core.slide_level.cohort import read_cohort
from napari_dfl.core.slide_level.config import MILConfig
from napari_dfl.core.slide_level.grids import (
    compress_store,
    grid_placement,
    pca_rgb,
    save_compressed,
)
from napari_dfl.core.slide_level.prediction import (
    SlideLabelPrediction,
    SlidePredictionError,
    predict_slide_label,
    slide_tiles,
)
from napari_dfl.core.util.atomic import atomic_path, write_json
from napari_dfl.workflows.embedding.local import CancelCheck, Embedder
from napari_dfl.workflows.jobs import Event, as_events

if TYPE_CHECKING:  # torch: the panel imports this module when it opens
    from napari_dfl.core.slide_level.model import SlideModel

__all__ = ["compress_stores", "predict_open_slide", "predict_stores", "safe_name",
           "train_cohort"]

Report = Callable[[str, dict | None, str | None], None]


def safe_name(name: str) -> str:
    """A file name made of letters, digits, ``.``, ``_`` and ``-`` only."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "slide"


def compress_stores(paths: Sequence[str | os.PathLike], out: str | os.PathLike,
                    on_done: Report | None = None) -> int:
    """Compress each store into ``OUT/<slide>.npz`` and a PCA preview PNG; the failures."""
    from PIL import Image  # Pillow: only for the preview files

    out, failed = Path(out), 0
    for path in paths:
        try:
            slide = compress_store(EmbeddingStore.open(path))
        except DFLError as exc:
            failed += 1
            if on_done is not None:
                on_done(str(path), None, str(exc))
            continue
        stem = safe_name(Path(slide.name).stem)
        target = save_compressed(slide, out / f"{stem}.npz")
        with atomic_path(out / f"{stem}.pca.png") as tmp:
            Image.fromarray(pca_rgb(slide)).save(tmp, format="PNG")
        if on_done is not None:
            rows, cols, dim = slide.grid.shape
            on_done(str(path), {"tiles": int(slide.mask.sum()), "grid": [rows, cols, dim],
                                "tile_size": slide.tile_size, "file": str(target)}, None)
    return failed


def train_cohort(cohort_csv: str | os.PathLike, stores: str | os.PathLike,
                 config: MILConfig, *, folds: int = 5,
                 on_skipped: Callable[[str], None] | None = None) -> SlideModel:
    """Read the cohort, cross-validate, train on every slide; the trained model.

    Slides the cohort cannot use (no store, another extractor...) are passed to
    ``on_skipped`` and left out.
    """
    from napari_dfl.core.slide_level.training import train_slide_model  # torch, when run

    entries, problems = read_cohort(cohort_csv, stores)
    for problem in problems:
        if on_skipped is not None:
            on_skipped(problem)
    return train_slide_model(entries, config, folds=folds)


def write_slide_model(model: SlideModel, out: str | os.PathLike) -> Path:
    """Save a slide model folder (see :mod:`napari_dfl.core.slide_level.model_files`)."""
    from napari_dfl.core.slide_level.model_files import save_slide_model  # torch, when run

    return save_slide_model(model, out)


def predict_stores(model: SlideModel, paths: Sequence[str | os.PathLike],
                   out: str | os.PathLike, on_done: Report | None = None) -> int:
    """Predict slides from their stores; write CSV, JSON and attention arrays; the failures.

    Writes ``predictions.csv``, ``predictions.json`` and ``attention/<slide>.npz``.
    """
    out = Path(out)
    (out / "attention").mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for path in paths:
        try:
            store = EmbeddingStore.open(path)
            found = store_extractor(store)
            differences = model.extractor.differences(found) if model.extractor else []
            if differences or store.dim != len(model.mean):
                raise SlidePredictionError(
                    f"{path} was embedded with {found.describe()}, not the model's extractor "
                    f"({', '.join(differences) or 'another embedding size'}): embed it like "
                    "the training cohort.")
            proba, attention = model.predict_store(store)
        except DFLError as exc:
            failed += 1
            if on_done is not None:
                on_done(str(path), None, str(exc))
            continue
        name = slide_name(store)
        index, shape, tile = grid_placement(store)
        grid = np.full(shape, np.nan, np.float32)
        grid[index[:, 0], index[:, 1]] = attention
        with atomic_path(out / "attention" / f"{safe_name(Path(name).stem)}.npz") as tmp, \
                open(tmp, "wb") as handle:
            np.savez_compressed(handle, coords=store.coords,
                                attention=attention.astype(np.float32), grid=grid,
                                tile_size=np.float64(tile))
        row = {"slide": name, "store": str(path),
               "prediction": model.classes[int(proba.argmax())], "n_tiles": len(store)}
        row.update({f"p_{c}": float(p) for c, p in zip(model.classes, proba, strict=True)})
        rows.append(row)
        if on_done is not None:
            on_done(str(path), row, None)
    if rows:
        with atomic_path(out / "predictions.csv") as tmp, \
                open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        write_json(out / "predictions.json", rows)
    return failed


def predict_open_slide(slide, model: SlideModel, settings: Settings, embedder: Embedder,
                       cancel: CancelCheck | None = None,
                       ) -> Generator[Event, None, SlideLabelPrediction]:
    """The panel's *Predict this slide*: find or complete the slide's store, then predict.

    The store of the model's extractor is looked up in the settings' store folder; tiles it
    lacks are embedded first (yielding ``("embedding", progress)``).
    """
    grid = slide_tiles(slide, settings.composition, settings.min_tissue)
    yield "grid", grid
    store = find_store(settings.stores, slide, model.extractor) if model.extractor else None
    store = store or embedder.known_store(slide)
    missing = grid.coords if store is None else grid.coords[store.missing(grid.coords)]
    if len(missing):
        store = yield from as_events("embedding", embedder.embed(slide, missing, cancel))
    return predict_slide_label(model, store, grid, Path(slide.path).name)
