"""Slide-level jobs: compress stores, train a slide model on a cohort, predict slides.

The CLI's ``compress``, ``train-slides`` and ``predict-slides`` and the panel's *Predict this
slide* call these; a slide that cannot be used is reported and the others go on. A cohort
trains a classifier (its ``label`` column) or a multi-target model (numeric and binary
target columns, :func:`train_target_cohort`), whose folder also holds the cross-validated
metrics per target of the MIL model and the pooled baseline (:func:`write_target_model`).
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
    from napari_dfl.core.slide_level.model import SlideModel, TargetSlideModel
    from napari_dfl.core.slide_level.targets import TargetCohort

__all__ = ["compare_target_runs", "compress_stores", "predict_open_slide", "predict_stores",
           "safe_name", "train_cohort", "train_target_cohort", "write_slide_model",
           "write_target_model"]

#: Files a multi-target model folder holds beside its weights and card.
METRICS_CSV, METRICS_PNG, OOF_CSV = "cv_metrics.csv", "cv_metrics.png", "cv_predictions.csv"

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


def train_target_cohort(cohort_csv: str | os.PathLike, stores: str | os.PathLike,
                        config: MILConfig, *, targets: str | list[str] | None = None,
                        pattern: str | None = None, missing: str = "drop", folds: int = 5,
                        baseline: bool = True, with_max: bool = False,
                        on_skipped: Callable[[str], None] | None = None,
                        ) -> tuple[TargetSlideModel, dict | None, TargetCohort]:
    """Read the cohort's target columns, cross-validate MIL and baseline, train on all.

    Slides left out (no store...) and missing values dropped are passed to ``on_skipped``.

    Returns:
        ``(model, out-of-fold predictions or None, cohort)`` (see
        :func:`napari_dfl.core.slide_level.target_training.train_target_model`).

    Raises:
        MILError: bad target columns, no usable slide, folds the cohort cannot fill.

    """
    from napari_dfl.core.slide_level.target_training import train_target_model  # torch
    from napari_dfl.core.slide_level.targets import read_target_cohort

    cohort, problems = read_target_cohort(cohort_csv, stores, targets, pattern, missing)
    for problem in problems:
        if on_skipped is not None:
            on_skipped(problem)
    model, oof = train_target_model(cohort, config, folds=folds, baseline=baseline,
                                    with_max=with_max)
    return model, oof, cohort


def write_target_model(model: TargetSlideModel, out: str | os.PathLike,
                       cohort: TargetCohort | None = None, oof: dict | None = None
                       ) -> dict[str, Path]:
    """Save a multi-target model folder and, when cross-validated, its reports inside it.

    Beside ``weights.safetensors`` and ``model_card.json``: ``cv_metrics.csv`` (one row per
    target and method), ``cv_metrics.png`` (MIL against the baseline per target, and the
    best numeric target's out-of-fold fit) and ``cv_predictions.csv`` (per slide: each
    target's value and both methods' out-of-fold predictions).

    Returns:
        ``{"model": folder, "metrics_csv": ..., "plot": ..., "predictions_csv": ...}``
        (only the model without cross-validation).

    """
    from napari_dfl.core.slide_level.model_files import save_slide_model  # torch, when run
    from napari_dfl.core.slide_level.regression_metrics import (
        save_metrics_plot,
        write_metrics_csv,
    )

    folder = save_slide_model(model, out)
    written = {"model": folder}
    if not model.metrics or cohort is None or oof is None:
        return written
    written["metrics_csv"] = write_metrics_csv(model.metrics["rows"], folder / METRICS_CSV)
    written["plot"] = save_metrics_plot(model.metrics["rows"], cohort.values, oof["mil"],
                                        model.targets, folder / METRICS_PNG)
    names = [t.name for t in model.targets]
    columns = ["slide", "group"] + [f"{n}{suffix}" for n in names
                                    for suffix in ("", "_mil", "_baseline")]
    with atomic_path(folder / OOF_CSV) as tmp, \
            open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, entry in enumerate(cohort.entries):
            row: list = [entry.name, entry.group]
            for t in range(len(names)):
                base = oof["baseline"][i, t] if oof["baseline"] is not None else np.nan
                row += ["" if not np.isfinite(v) else f"{v:.6g}"
                        for v in (cohort.values[i, t], oof["mil"][i, t], base)]
            writer.writerow(row)
    written["predictions_csv"] = folder / OOF_CSV
    return written


def compare_target_runs(before: str | os.PathLike, after: str | os.PathLike,
                        method: str = "mil") -> dict:
    """Compare two multi-target runs (model folders or ``cv_metrics.csv`` files).

    See :func:`napari_dfl.core.slide_level.regression_metrics.compare_runs`: how many targets
    ``after`` improved over ``before``, with a paired Wilcoxon signed-rank test.
    """
    from napari_dfl.core.slide_level.regression_metrics import compare_runs, read_run_metrics

    return compare_runs(read_run_metrics(before, method), read_run_metrics(after, method))


def write_slide_model(model: SlideModel, out: str | os.PathLike) -> Path:
    """Save a slide model folder (see :mod:`napari_dfl.core.slide_level.model_files`)."""
    from napari_dfl.core.slide_level.model_files import save_slide_model  # torch, when run

    return save_slide_model(model, out)


def _prediction_row(model: SlideModel | TargetSlideModel, proba: np.ndarray, name: str,
                    path: str | os.PathLike, n_tiles: int) -> dict:
    """One row of ``predictions.csv``: a class and its probabilities, or a value per target."""
    if not hasattr(model, "targets"):
        row = {"slide": name, "store": str(path),
               "prediction": model.classes[int(proba.argmax())], "n_tiles": n_tiles}
        row.update({f"p_{c}": float(p) for c, p in zip(model.classes, proba, strict=True)})
        return row
    row = {"slide": name, "store": str(path), "n_tiles": n_tiles}
    row.update({(f"pred_{t.name}" if t.name in row else t.name): float(v)
                for t, v in zip(model.targets, proba, strict=True)})
    return row


def predict_stores(model: SlideModel | TargetSlideModel, paths: Sequence[str | os.PathLike],
                   out: str | os.PathLike, on_done: Report | None = None) -> int:
    """Predict slides from their stores; write CSV, JSON and attention arrays; the failures.

    Writes ``predictions.csv`` and ``predictions.json`` (a classifier: the predicted class
    and ``p_<class>`` columns; a multi-target model: one column per target, its value in the
    target's units or the probability of 1 for a binary target) and
    ``attention/<slide>.npz`` (``attention`` and ``grid``; a multi-target model has one
    attention map per target, ``(T, N)`` and ``(T, rows, cols)``, named by ``targets``).
    """
    out = Path(out)
    (out / "attention").mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    per_target = hasattr(model, "targets")
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
        maps = attention.reshape(-1, len(store)).astype(np.float32)
        grid = np.full((len(maps), *shape), np.nan, np.float32)
        grid[:, index[:, 0], index[:, 1]] = maps
        arrays = {"coords": store.coords, "tile_size": np.float64(tile)}
        if per_target:
            arrays.update(attention=maps, grid=grid,
                          targets=np.array([t.name for t in model.targets], dtype=str))
        else:
            arrays.update(attention=maps[0], grid=grid[0])
        with atomic_path(out / "attention" / f"{safe_name(Path(name).stem)}.npz") as tmp, \
                open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        row = _prediction_row(model, proba, name, path, len(store))
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
