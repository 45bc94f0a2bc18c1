"""Gaussian noise on the embeddings where it should matter: 10 to 100 labels per class.

The DFL paper calls the noise paramount because a head overfits in a couple of epochs; with
600 labels per class ``docs/evidence.md`` found no effect. Here, on the CRCHistoPhenotypes
nuclei (research use only: read in place from ``../shared/data/crchisto``), embedded with
the default composition for points (64 px at x20 with x5 context, rgb and gray, read at the
backbone's 224 px), image-grouped 5-fold cross-validation: in each fold, ``n`` labels per
class are drawn from the training images (``--draws`` seeds per fold) and a default head is
trained with each sigma,

* with early stopping (the default: 20 % of the training groups held out, patience 15), and
* without it (every label used for training, a fixed ``--epochs`` epochs): the regime where
  the paper says the noise keeps the head from overfitting.

Every sigma sees the same folds, draws and seeds, so differences are paired. The last stdout
line is one JSON object: mean balanced accuracy per (regime, n, sigma), the paired difference
of each sigma against no noise with its standard error, and the best sigma per regime.
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

SIGMAS = (0.0, 0.5, 1.0, 2.0, 4.0)
LABELS = (10, 25, 50, 100)


def embeddings(workdir: Path, per_class: int) -> dict:
    """The CRC nuclei embedded with the default composition for points (cached stores)."""
    from napari_dfl.core.slides.sampling import default_composition

    rows = [r for r in crc_rows(CRC_DIR, seed=0) if r[4] < per_class]
    return embed(rows, "efficientnet-lite0", default_composition({"point"}), workdir,
                 f"crc{len(rows)}")


def draw_labels(train: np.ndarray, labels: np.ndarray, classes, n: int,
                seed: int) -> np.ndarray:
    """Indices of ``n`` labels per class drawn from ``train`` (all of a class with fewer)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.permutation(train[labels[train] == c])[:n] for c in classes])


def sweep(x: np.ndarray, labels: np.ndarray, groups: np.ndarray, *, folds: int = 5,
          draws: int = 2, epochs: int = 60, labels_per_class=LABELS,
          log=None) -> dict[str, dict[int, dict[float, list[float]]]]:
    """Balanced accuracy of each (regime, labels per class, sigma) run, paired across sigmas.

    Returns ``scores[regime][n][sigma]``: one value per fold and draw, in the same order for
    every sigma (same folds, draws and seeds). ``log`` gets one line per (regime, n).
    """
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.training import fit

    classes = sorted(set(labels.tolist()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(StratifiedGroupKFold(folds, shuffle=True, random_state=0)
                      .split(x, labels, groups))
    regimes = {"early stopping": {},
               "fixed epochs": {"val_fraction": 0.0, "max_epochs": epochs,
                                "patience": epochs}}
    scores: dict[str, dict[int, dict[float, list[float]]]] = {}
    for regime, overrides in regimes.items():
        scores[regime] = {}
        for n in labels_per_class:
            scores[regime][n] = {s: [] for s in SIGMAS}
            for k, (train, test) in enumerate(splits):
                for draw in range(draws):
                    take = draw_labels(train, labels, classes, n, seed=1000 * k + draw)
                    for sigma in SIGMAS:
                        config = TrainConfig(noise=sigma, seed=draw, **overrides)
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", UserWarning)
                            head = fit(x[take], labels[take], groups[take], config,
                                       classes=classes)
                        predicted = np.array(classes)[head.predict(x[test])]
                        scores[regime][n][sigma].append(
                            float(balanced_accuracy_score(labels[test], predicted)))
            row = "  ".join(f"σ{s:g} {np.mean(v):.3f}" for s, v in scores[regime][n].items())
            (log or (lambda m: print(m, file=sys.stderr, flush=True)))(
                f"{regime:15s} {n:4d}/class  {row}")
    return scores


def main(argv: list[str] | None = None) -> int:
    """Run the sweep; print the table (stderr) and the JSON line (stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=800)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--draws", type=int, default=2, help="label draws per fold")
    parser.add_argument("--epochs", type=int, default=60,
                        help="epochs without early stopping (default 60)")
    parser.add_argument("--labels", default=",".join(map(str, LABELS)))
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-fields")
    args = parser.parse_args(argv)
    if not (CRC_DIR / "nuclei_labels.csv").exists():
        print(f"{CRC_DIR} is absent: nothing to measure", file=sys.stderr)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = embeddings(args.workdir, args.per_class)
    x, labels, groups = data["x"], data["labels"], data["groups"]
    scores = sweep(x, labels, groups, folds=args.folds, draws=args.draws, epochs=args.epochs,
                   labels_per_class=[int(v) for v in args.labels.split(",")])
    summary: dict = {"samples": len(labels), "folds": args.folds, "draws": args.draws,
                     "runs_per_cell": args.folds * args.draws, "regimes": {},
                     "seconds": round(time.perf_counter() - start, 1)}
    for regime, by_n in scores.items():
        cells, gains = {}, {s: [] for s in SIGMAS}
        for n, by_sigma in by_n.items():
            base = np.array(by_sigma[0.0])
            cells[str(n)] = {}
            for sigma, values in by_sigma.items():
                diff = np.array(values) - base
                gains[sigma].append(diff)
                cells[str(n)][f"{sigma:g}"] = {
                    "balanced_accuracy": round(float(np.mean(values)), 4),
                    "vs_no_noise": round(float(diff.mean()), 4),
                    "se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4)}
        overall = {f"{s:g}": round(float(np.concatenate(g).mean()), 4) for s, g in gains.items()}
        summary["regimes"][regime] = {"cells": cells, "mean_gain_over_n": overall,
                                      "best_sigma": max(overall, key=overall.get)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
