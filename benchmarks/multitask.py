"""Benchmark: whether a multitask encoder's frozen features transfer better (issue 15, part 1).

Three backbones, compared by the frozen features they give on tasks none was tuned on:

(a) ImageNet EfficientNet-Lite0 (the default);
(b) Lite0 fine-tuned on one task: CRC nuclei (4 classes, 32 px fields at x20: cell scale),
    nuclei of the *tuning images* only;
(c) Lite0 fine-tuned on two tasks at once (``finetune_task_specs``, the product's path):
    the same CRC nuclei and the tissue regions of the bundled sample slide (epidermis,
    dermis, background; 112 px at x20: tissue scale).

Held-out evaluation: (1) CRC nuclei of the *other images* (never seen in tuning), with a
different grouping of classes (epithelial / fibroblast / inflammatory; "others" left out);
(2) the Kather CRC-VAL-HE-7K tiles (8 tissue classes, 4 tiles each: a smoke test, 32
tiles). The probe is a standardised logistic regression, grouped 5-fold CV (images as
groups; each Kather tile its own group), balanced accuracy with its SE over folds, and the
paired difference to ImageNet per fold.

CRCHistoPhenotypes is research-only: read in place from ``../shared/data/crchisto``, never
copied. Run ``python benchmarks/multitask.py`` (``--per-class``, ``--epochs``); a table goes
to stderr and one JSON line to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("NAPARI_DFL_SHARED_DATA", REPO.parent / "shared" / "data"))
CRC_DIR = DATA / "crchisto"
KATHER = DATA / "kather_tiles" / "crc_val_he_7k"
SAMPLE = REPO / "src" / "napari_dfl" / "sample_data" / "CMU-1-Small-Region.svs"
HELD_OUT_CLASSES = ("epithelial", "fibroblast", "inflammatory")
_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr with the elapsed minutes."""
    print(f"[{(time.perf_counter() - _T0) / 60:5.1f} min] {message}", file=sys.stderr,
          flush=True)


def crc_split(per_class: int, seed: int) -> tuple[list, list]:
    """Nuclei of half the images (tuning) and of the other half (held out), per_class each."""
    with open(CRC_DIR / "nuclei_labels.csv", newline="", encoding="utf-8") as handle:
        rows = [(r["image"], float(r["x"]), float(r["y"]), r["label"])
                for r in csv.DictReader(handle)]
    rng = np.random.default_rng(seed)
    images = sorted({r[0] for r in rows})
    tuning = set(rng.permutation(images)[: len(images) // 2].tolist())
    out = []
    for keep, classes in ((True, None), (False, HELD_OUT_CLASSES)):
        chosen = []
        for label in sorted({r[3] for r in rows}):
            if classes is not None and label not in classes:
                continue
            items = [r for r in rows if r[3] == label and (r[0] in tuning) == keep]
            chosen += [items[i] for i in rng.permutation(len(items))[:per_class]]
        out.append(chosen)
    return out[0], out[1]


def write_csv(rows: list, path: Path) -> Path:
    """A dataset CSV ``image,x,y,label`` pointing at the images in place."""
    lines = ["image,x,y,label"] + [f"{CRC_DIR / r[0]},{r[1]},{r[2]},{r[3]}"
                                   for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def per_epoch(result) -> float | None:
    """Mean seconds of a fine-tuning epoch (after the linear probes of epoch 0)."""
    history = result.history
    if len(history) < 2:
        return None
    return round((history[-1].seconds - history[0].seconds) / (len(history) - 1), 1)


def probe(features: np.ndarray, labels: np.ndarray, groups: np.ndarray,
          folds: int = 5) -> np.ndarray:
    """Balanced accuracy per fold of a standardised logistic regression (grouped CV)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for train, test in StratifiedGroupKFold(folds, shuffle=True, random_state=0).split(
            features, labels, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
        model.fit(features[train], labels[train])
        scores.append(balanced_accuracy_score(labels[test], model.predict(features[test])))
    return np.asarray(scores)


def main() -> int:
    """Tune (b) and (c), embed the held-out tasks with (a), (b), (c), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=100,
                        help="CRC nuclei per class, in tuning and in held-out (default 100)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-last", action="store_true",
                        help="keep the last epoch's weights (no early stopping): with few "
                             "labels the product's early stopping often keeps epoch 0, the "
                             "base network, and the three backbones then coincide")
    args = parser.parse_args()
    if not (CRC_DIR / "nuclei_labels.csv").exists():
        log(f"no CRC data at {CRC_DIR}: set NAPARI_DFL_SHARED_DATA")
        return 2
    warnings.simplefilter("ignore", UserWarning)
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.backbones.finetuned import register_finetuned
    from napari_dfl.core.finetune.patches import embed_patches, load_patches
    from napari_dfl.core.finetune.task_specs import TaskSpec
    from napari_dfl.core.finetune.training import FinetuneConfig
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.workflows.finetune import finetune_datasets, finetune_task_specs

    work = Path(tempfile.mkdtemp(prefix="dfl-multitask-"))
    tuning, held_out = crc_split(args.per_class, args.seed)
    tuning_csv = write_csv(tuning, work / "tuning.csv")
    held_csv = write_csv(held_out, work / "held_out.csv")
    config = FinetuneConfig(epochs=args.epochs, seed=args.seed,
                            patience=args.epochs if args.keep_last else 2,
                            restore_best=not args.keep_last)
    load = os.getloadavg()[0]
    log(f"tuning: {len(tuning)} nuclei; held out: {len(held_out)} nuclei of other images "
        f"(load {load:.1f})")

    def epoch(p) -> None:
        tasks = " ".join(f"{k} {v['val_balanced_accuracy']:.3f}" for k, v in p.tasks.items())
        log(f"  epoch {p.epoch}: val loss {p.val_loss:.4f}, balanced accuracy "
            f"{p.val_balanced_accuracy:.3f} {tasks}")

    log("(b) single task: CRC nuclei, 32 px")
    single, single_dir = finetune_datasets([str(tuning_csv)], work / "single",
                                           backbone="efficientnet-lite0", patch_size=32,
                                           mpp=0.5, config=config, on_epoch=epoch)
    log("(c) multitask: CRC nuclei 32 px + sample-slide tissue 112 px")
    multi, multi_dir = finetune_task_specs(
        [TaskSpec("nuclei", (str(tuning_csv),), patch_size=32),
         TaskSpec("tissue", (str(SAMPLE),), patch_size=112)],
        work / "multi", backbone="efficientnet-lite0", mpp=0.5, config=config,
        on_epoch=epoch)

    nuclei = load_patches([str(held_csv)], Composition(32, (0.5,), ("rgb",)), mpp=0.5)
    kather = load_patches([str(KATHER)], Composition(224, (0.5,), ("rgb",)), mpp=0.5)
    kather_groups = np.array([f"tile{i}" for i in range(len(kather["labels"]))])
    backbones = {"imagenet": "efficientnet-lite0",
                 "single-task": register_finetuned(single_dir),
                 "multitask": register_finetuned(multi_dir)}
    rows: dict = {}
    for name, spec in backbones.items():
        backbone = load_backbone(spec)
        f_nuclei = embed_patches(backbone, nuclei["patches"])
        f_kather = embed_patches(backbone, kather["patches"])
        rows[name] = {"nuclei": probe(f_nuclei, nuclei["labels"], nuclei["groups"]),
                      "kather": probe(f_kather, kather["labels"], kather_groups, folds=4)}
        log(f"embedded held-out sets with {name}")

    result: dict = {"load_1min": round(load, 2), "per_class": args.per_class,
                    "held_out_nuclei": len(nuclei["labels"]),
                    "held_out_images": len(set(nuclei["groups"])),
                    "kather_tiles": len(kather["labels"]), "epochs_max": args.epochs,
                    "kept": "last epoch" if args.keep_last else "best validation epoch",
                    "kept_epochs": {"single_task": single.summary["kept_epoch"],
                                    "multitask": multi.summary["kept_epoch"]},
                    "seconds_per_epoch": {"single_task": per_epoch(single),
                                          "multitask": per_epoch(multi)},
                    "tuning": {"single_task": single.summary["validation"],
                               "multitask": {k: v["validation"] for k, v
                                             in multi.summary["tasks"].items()},
                               "seconds": {"single_task": single.summary["seconds"],
                                           "multitask": multi.summary["seconds"]}}}
    log(f"{'features':<12} {'held-out nuclei (3 cl.)':>26} {'diff vs imagenet':>20} "
        f"{'Kather (8 cl.)':>18}")
    for name, scores in rows.items():
        entry = {}
        for task, folds in scores.items():
            diff = folds - rows["imagenet"][task]
            entry[task] = {"balanced_accuracy": round(float(folds.mean()), 3),
                           "se": round(float(folds.std(ddof=1) / np.sqrt(len(folds))), 3),
                           "diff_vs_imagenet": round(float(diff.mean()), 3),
                           "diff_se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 3)}
        result[name] = entry
        n, k = entry["nuclei"], entry["kather"]
        log(f"{name:<12} {n['balanced_accuracy']:>18.3f} ± {n['se']:.3f} "
            f"{n['diff_vs_imagenet']:>+12.3f} ± {n['diff_se']:.3f} "
            f"{k['balanced_accuracy']:>10.3f} ± {k['se']:.3f}")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
