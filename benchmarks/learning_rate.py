"""The head's step size: a fixed learning rate against one scaled by the batches of an epoch.

With a fixed Adam learning rate (1e-3) and batches of 256, a head on thousands of labels
takes ten or more steps per epoch and memorises its training split within the first epoch
(training loss near 0 after 3-5 epochs, the validation loss lowest after the first): early
stopping then has nothing to choose from. ``TrainConfig.scale_lr`` steps a training split
larger than one batch at ``lr x batch_size / n_train`` instead, so that every epoch moves the
head about as far whatever the number of labels; a split of at most one batch is trained
exactly as before.

Measured on the CRCHistoPhenotypes nuclei (research use only: read in place from
``../shared/data/crchisto``) embedded with the default composition for points, two disjoint
draws of up to 800 nuclei per class (``main``: ranks 0-799 of each class; ``replicate``:
ranks 800-1599, the same images, other cells), image-grouped 5-fold cross-validation; in
each fold ``n`` labels per class are drawn from the training images (``--draws`` per fold)
and the default head is trained with ``scale_lr`` off and on (same folds, draws and seeds:
paired). The last stdout line is one JSON object: balanced accuracy, best epoch and the
paired difference (scaled - fixed) with its standard error per (draw, n).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("napari_dfl") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence import CRC_DIR, crc_rows, embed  # noqa: E402  (the same data and pipeline)
from noise_few_labels import draw_labels  # noqa: E402  (the same label draws)

LABELS = (10, 30, 100, 300, 800)
DRAWS = {"main": (0, 800), "replicate": (800, 1600)}


def compare(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, folds: int, draws: int,
            labels_per_class) -> dict[int, dict[str, list]]:
    """Balanced accuracy and best epoch of fixed and scaled steps, paired, per ``n``."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.training import fit

    classes = sorted(set(labels.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0)
                      .split(x, labels, groups))
    out: dict[int, dict[str, list]] = {}
    for n in labels_per_class:
        cell: dict[str, list] = {"fixed": [], "scaled": [], "fixed_epoch": [],
                                 "scaled_epoch": []}
        for k, (train, test) in enumerate(splits):
            for draw in range(draws):
                take = draw_labels(train, labels, classes, n, seed=1000 * k + draw)
                for name, scale in (("fixed", False), ("scaled", True)):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)
                        head = fit(x[take], labels[take], groups[take],
                                   TrainConfig(scale_lr=scale, seed=draw), classes=classes)
                    predicted = np.array(classes)[head.predict(x[test])]
                    cell[name].append(float(balanced_accuracy_score(labels[test], predicted)))
                    cell[f"{name}_epoch"].append(int(head.metrics["best_epoch"]))
        out[n] = cell
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both draws; print a table (stderr) and the JSON line (stdout)."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--draws", type=int, default=2, help="label draws per fold")
    parser.add_argument("--labels", default=",".join(map(str, LABELS)),
                        help="labels per class (800: every nucleus of the draw's training "
                             "folds)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-evidence" / "full")
    args = parser.parse_args(argv)
    if not (CRC_DIR / "nuclei_labels.csv").exists():
        print(f"{CRC_DIR} is absent: nothing to measure", file=sys.stderr)
        return 0
    from napari_dfl.core.slides.sampling import default_composition

    torch.set_num_threads(1)  # heads are trained on one thread (core.heads.training)
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = crc_rows(CRC_DIR)
    summary: dict = {"folds": args.folds, "draws": args.draws, "cells": {}}
    print(f"{'draw':<10} {'n/class':>7} {'fixed':>7} {'scaled':>7} {'epochs':>9} "
          f"{'scaled - fixed':>16}", file=sys.stderr)
    for draw, (low, high) in DRAWS.items():
        picked = [r for r in rows if low <= r[4] < high]
        data = embed(picked, "efficientnet-lite0", default_composition({"point"}),
                     args.workdir, "main" if low == 0 else "rest")
        cells = compare(data["x"], data["labels"], data["groups"], folds=args.folds,
                        draws=args.draws,
                        labels_per_class=[int(v) for v in args.labels.split(",")])
        summary["cells"][draw] = {}
        for n, cell in cells.items():
            diff = np.array(cell["scaled"]) - np.array(cell["fixed"])
            row = {"fixed": round(float(np.mean(cell["fixed"])), 4),
                   "scaled": round(float(np.mean(cell["scaled"])), 4),
                   "fixed_best_epoch": round(float(np.mean(cell["fixed_epoch"])), 1),
                   "scaled_best_epoch": round(float(np.mean(cell["scaled_epoch"])), 1),
                   "scaled_minus_fixed": round(float(diff.mean()), 4),
                   "se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
                   "runs": len(diff)}
            summary["cells"][draw][str(n)] = row
            print(f"{draw:<10} {n:>7} {row['fixed']:>7.3f} {row['scaled']:>7.3f} "
                  f"{row['fixed_best_epoch']:>4.0f}/{row['scaled_best_epoch']:<4.0f} "
                  f"{row['scaled_minus_fixed']:>+8.4f} ± {row['se']:.4f}", file=sys.stderr,
                  flush=True)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
