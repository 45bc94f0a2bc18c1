"""``napari-dfl compress``, ``train-slides`` and ``predict-slides``: slide-level learning.

``compress`` turns stores into compressed slides (embedding grids with a PCA false-colour
view); ``train-slides`` trains a gated attention MIL classifier from a cohort CSV
``slide,label[,group]`` with grouped k-fold cross-validation; ``predict-slides`` writes
per-slide probabilities (CSV and JSON) and attention arrays. A slide that cannot be used is
reported on one line and the others go on.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the three sub-commands."""
    compress = sub.add_parser("compress", help="compress stores into embedding grids")
    compress.add_argument("stores", nargs="+", help="embedding store folders (*.dfl.zarr)")
    compress.add_argument("--out", required=True, help="output folder")
    compress.set_defaults(handler=run_compress)

    train = sub.add_parser("train-slides", help="train a slide classifier (attention MIL)")
    train.add_argument("cohort", help="CSV with columns slide,label (optional group)")
    train.add_argument("--stores", required=True, help="folder holding the slides' stores")
    train.add_argument("--out", required=True, help="model folder to write")
    train.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: none)")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--noise", type=float, default=0.5)
    train.add_argument("--loss", default="focal", choices=["focal", "ce"])
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--val-fraction", type=float, default=0.2,
                       help="share of groups held out for early stopping (0: none)")
    train.add_argument("--patience", type=int, default=5,
                       help="epochs without validation improvement before stopping")
    train.set_defaults(handler=run_train_slides)

    predict = sub.add_parser("predict-slides", help="predict slides with a slide classifier")
    predict.add_argument("stores", nargs="+", help="embedding store folders (*.dfl.zarr)")
    predict.add_argument("--model", required=True, help="a folder written by train-slides")
    predict.add_argument("--out", required=True, help="output folder")
    predict.set_defaults(handler=run_predict_slides)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "slide"


def run_compress(args: argparse.Namespace) -> int:
    """Compress each store into ``OUT/<slide>.npz`` and ``OUT/<slide>.pca.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from napari_dfl.core.errors import DFLError
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.slide_level.grids import compress_store, pca_rgb, save_compressed

    out, failed = Path(args.out), 0
    for path in args.stores:
        try:
            slide = compress_store(EmbeddingStore.open(path))
        except DFLError as exc:
            failed += 1
            print(f"FAILED  {path}: {exc}", file=sys.stderr)
            continue
        stem = _safe(Path(slide.name).stem)
        target = save_compressed(slide, out / f"{stem}.npz")
        plt.imsave(out / f"{stem}.pca.png", pca_rgb(slide))
        rows, cols, dim = slide.grid.shape
        print(f"ok      {path}: {int(slide.mask.sum())} tiles on a {rows}x{cols}x{dim} grid "
              f"(tile {slide.tile_size:g} px) -> {target}")
    return 1 if failed else 0


def run_train_slides(args: argparse.Namespace) -> int:
    """Read the cohort, cross-validate, train on every slide and write the model folder."""
    from napari_dfl.core.slide_level.model import MILConfig, read_cohort
    from napari_dfl.core.slide_level.model_files import save_slide_model
    from napari_dfl.core.slide_level.training import train_slide_model

    entries, problems = read_cohort(args.cohort, args.stores)
    for problem in problems:
        print(f"SKIPPED {problem}", file=sys.stderr)
    config = MILConfig(epochs=args.epochs, noise=args.noise, loss=args.loss, seed=args.seed,
                       val_fraction=args.val_fraction, patience=args.patience)
    model = train_slide_model(entries, config, folds=args.folds)
    path = save_slide_model(model, args.out)
    print(f"wrote {path}: {len(entries)} slides, classes {model.classes}")
    stop = model.early_stopping
    if stop.get("validation"):
        print(f"early stopping: best epoch {stop['best_epoch']} of {stop['epochs_run']} run "
              f"({stop['n_val_slides']} validation slides)")
    else:
        print(f"no early stopping ({stop.get('reason')}): trained {stop.get('epochs_run')} "
              "epochs")
    if model.metrics:
        m = model.metrics
        auc = "n/a" if m["auc"] is None else f"{m['auc']:.3f}"
        print(f"cross-validation ({m['n_folds']} folds): AUC {auc}, balanced accuracy "
              f"{m['balanced_accuracy']:.3f}")
    return 0


def run_predict_slides(args: argparse.Namespace) -> int:
    """Write ``predictions.csv``, ``predictions.json`` and ``attention/<slide>.npz``."""
    import numpy as np

    from napari_dfl.core.errors import DFLError
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.slide_level.grids import grid_placement, slide_name
    from napari_dfl.core.slide_level.model import extractor_of
    from napari_dfl.core.slide_level.model_files import load_slide_model

    model = load_slide_model(args.model)
    out = Path(args.out)
    (out / "attention").mkdir(parents=True, exist_ok=True)
    rows, failed = [], 0
    for path in args.stores:
        try:
            store = EmbeddingStore.open(path)
            if extractor_of(store) != model.extractor:
                raise DFLError(f"{path} was embedded by another backbone, composition or "
                               "dimension than the model's: embed it like the training "
                               "cohort.")
            proba, attention = model.predict_store(store)
        except DFLError as exc:
            failed += 1
            print(f"FAILED  {path}: {exc}", file=sys.stderr)
            continue
        name = slide_name(store)
        index, shape, tile = grid_placement(store)
        grid = np.full(shape, np.nan, np.float32)
        grid[index[:, 0], index[:, 1]] = attention
        np.savez_compressed(out / "attention" / f"{_safe(Path(name).stem)}.npz",
                            coords=store.coords, attention=attention.astype(np.float32),
                            grid=grid, tile_size=np.float64(tile))
        row = {"slide": name, "store": str(path),
               "prediction": model.classes[int(proba.argmax())], "n_tiles": len(store)}
        row.update({f"p_{c}": float(p) for c, p in zip(model.classes, proba, strict=True)})
        rows.append(row)
        print(f"ok      {name}: {row['prediction']} "
              + " ".join(f"{c}={p:.3f}" for c, p in zip(model.classes, proba, strict=True)))
    if rows:
        with open(out / "predictions.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out / "predictions.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return 1 if failed else 0
