"""Evidence report: where the method's claims hold on real data, and where they do not.

Regenerates ``docs/evidence.md`` and ``docs/images/evidence_*.png`` from experiments on the
labelled nuclei of CRCHistoPhenotypes (research use only: read in place from
``../shared/data/crchisto``, never copied into the repository). Every number is a mean and
sd over image-grouped stratified cross-validation folds (no image on both sides of a split).

1. Gaussian noise on the embeddings: a sweep of sigma against no noise (paired folds).
2. Composition: x20 alone, with grayscale, with x5 context, and a nucleus-scale crop.
3. Linear against one-hidden-layer head; focal loss against cross-entropy.
4. Backbones: EfficientNet-Lite0/1/2 ImageNet, Lite0 with random weights (a floor), Lite0
   fine-tuned on the other half of the images; does the linear-probe (proxy) ranking agree
   with the downstream ranking of the default head?
5. Deep feature learning against fine-tuning: accuracy and training time, on two
   image-disjoint halves (fine-tune on one, test on the other, and back).
6. A learning curve: labels per class against balanced accuracy.

Embeddings go through the product's own pipeline (CSV dataset -> per-image stores ->
``embed_labelled``), cached in ``--workdir`` (default ``$TMPDIR/napari-dfl-evidence``), so a
second run only retrains heads. Results of each section are cached in
``<workdir>/results.json`` (``--fresh`` recomputes them). About 35 minutes on 2 CPU cores the
first time; ``--quick`` is a smoke run on 24 nuclei per class from 12 images (under a minute),
written to ``--doc``/``--images`` (give temporary paths then).

The last stdout line is one JSON object with the headline figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("napari_dfl") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CRC_DIR = Path(os.environ.get("NAPARI_DFL_SHARED_DATA", REPO.parent / "shared" / "data")) \
    / "crchisto"
SIGMAS = (0.0, 0.5, 1.0, 2.0, 4.0)
LABELS_PER_CLASS = (10, 30, 100, 300, 1000)
BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2",
             "efficientnet-lite0@random")
FULL = {"main": 1250, "sub": 600, "halves": 500, "folds": 5, "seeds": 2, "images": None,
        "backbones": BACKBONES}
QUICK = {"main": 24, "sub": 24, "halves": 24, "folds": 2, "seeds": 1, "images": 12,
         "backbones": BACKBONES[:1] + BACKBONES[-1:]}
_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the elapsed minutes."""
    print(f"[{(time.perf_counter() - _T0) / 60:5.1f} min] {message}", file=sys.stderr,
          flush=True)


# -- data ----------------------------------------------------------------------------------
def crc_rows(root: Path, seed: int = 0,
             images: int | None = None) -> list[tuple[str, float, float, str, int]]:
    """Every labelled nucleus as ``(image, x, y, label, rank)``.

    ``rank`` is the nucleus's place in a seeded random order of its class: the first ``n``
    ranks of each class are a random sample of ``n`` per class, and smaller samples are
    subsets of larger ones. ``images`` keeps only the first images (sorted by name).
    """
    import csv

    with open(root / "nuclei_labels.csv", newline="", encoding="utf-8") as handle:
        rows = [(r["image"], float(r["x"]), float(r["y"]), r["label"])
                for r in csv.DictReader(handle)]
    if images:
        keep = set(sorted({r[0] for r in rows})[:images])
        rows = [r for r in rows if r[0] in keep]
    rng = np.random.default_rng(seed)
    out = []
    for label in sorted({r[3] for r in rows}):
        items = [r for r in rows if r[3] == label]
        for rank, i in enumerate(rng.permutation(len(items))):
            out.append((*items[i], rank))
    return sorted(out, key=lambda r: (r[0], r[4], r[3]))


def write_csv(rows, path: Path) -> Path:
    """A dataset CSV ``image,x,y,label`` pointing at the images in place (absolute paths)."""
    lines = ["image,x,y,label"] + [f"{CRC_DIR / r[0]},{r[1]},{r[2]},{r[3]}" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def embed(rows, backbone: str, composition, work: Path, tag: str) -> dict:
    """Embeddings of ``rows`` (in their order) through the product pipeline, with caching."""
    import warnings

    from napari_dfl.core.features.settings import Settings
    from napari_dfl.workflows.labelled import embed_labelled

    start = time.perf_counter()
    csv_path = write_csv(rows, work / f"{tag}.csv")
    settings = Settings(backbone=backbone, composition=composition, mpp=0.5, batch_size=8,
                        store_dir=str(work / "stores"))
    if backbone.endswith("@random"):
        settings = settings.with_(backbone=backbone.split("@")[0], weights="random:0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the x5 patch is mostly padding"
        data = embed_labelled([csv_path], settings)
    log(f"embedded {len(rows)} x {composition.describe()} with {backbone} "
        f"({time.perf_counter() - start:.0f} s)")
    return {"x": data.embeddings, "labels": data.labels, "groups": data.groups,
            "composition": data.extractor.composition}


# -- evaluation ----------------------------------------------------------------------------
def cv(x, labels, groups, config, folds: int, seeds: int) -> dict:
    """Grouped CV repeated over seeds; per-fold values kept for paired comparisons."""
    import dataclasses

    from napari_dfl.core.heads.validation import cross_validate

    start = time.perf_counter()
    reports = []
    for seed in range(seeds):
        run = cross_validate(x, labels, groups, dataclasses.replace(config, seed=seed), folds)
        reports += run["folds"]
    out = {key: [float(r[key]) for r in reports]
           for key in ("balanced_accuracy", "cohen_kappa", "weighted_f1")}
    out["best_epoch"] = [float(r["best_epoch"]) for r in reports]
    out["seconds"] = time.perf_counter() - start
    return out


def section_noise(main, sub_mask, p, ctx) -> dict:
    """1. A sweep of the embedding noise sigma (default head otherwise)."""
    from napari_dfl.core.heads.config import TrainConfig

    x, y, g = main["x"][sub_mask], main["labels"][sub_mask], main["groups"][sub_mask]
    rows = {}
    for sigma in SIGMAS:
        rows[f"{sigma:g}"] = cv(x, y, g, TrainConfig(noise=sigma), p["folds"], p["seeds"])
        log(f"noise sigma {sigma:g}: {np.mean(rows[f'{sigma:g}']['balanced_accuracy']):.4f}")
    return rows


def composition_columns(dim: int) -> dict[str, list[int]]:
    """Embedding columns of each ablation, sliced from the default composition's embedding.

    The default embedding is x20 rgb | x20 gray | x5 rgb | x5 gray
    (:meth:`napari_dfl.core.slides.sampling.Composition.parts`), each ``dim`` wide.
    """
    part = [list(range(k * dim, (k + 1) * dim)) for k in range(4)]
    return {"x20 rgb": part[0], "x20 rgb + gray": part[0] + part[1],
            "x20 + x5 rgb": part[0] + part[2],
            "x20 + x5, rgb + gray (default)": part[0] + part[1] + part[2] + part[3]}


def section_composition(main, sub_mask, small, p, ctx) -> dict:
    """2. Composition ablations (default head), plus a 64 px nucleus-scale crop."""
    from napari_dfl.core.heads.config import TrainConfig

    y, g = main["labels"][sub_mask], main["groups"][sub_mask]
    rows = {}
    for name, cols in composition_columns(main["x"].shape[1] // 4).items():
        rows[name] = cv(main["x"][sub_mask][:, cols], y, g, TrainConfig(), p["folds"],
                        p["seeds"])
        log(f"composition {name}: {np.mean(rows[name]['balanced_accuracy']):.4f}")
    name = "x20 rgb, 64 px crop (32 um)"
    rows[name] = cv(small["x"], small["labels"], small["groups"], TrainConfig(), p["folds"],
                    p["seeds"])
    log(f"composition {name}: {np.mean(rows[name]['balanced_accuracy']):.4f}")
    return rows


def section_heads(main, sub_mask, p, ctx) -> dict:
    """3. Linear vs MLP head, focal loss vs cross-entropy (default composition)."""
    from napari_dfl.core.heads.config import TrainConfig

    x, y, g = main["x"][sub_mask], main["labels"][sub_mask], main["groups"][sub_mask]
    rows = {}
    for head in ("linear", "mlp"):
        for loss in ("focal", "ce"):
            name = f"{head}, {'focal' if loss == 'focal' else 'cross-entropy'}"
            rows[name] = cv(x, y, g, TrainConfig(head=head, loss=loss), p["folds"], p["seeds"])
            log(f"head {name}: {np.mean(rows[name]['balanced_accuracy']):.4f}")
    return rows


def natural_mask(rows, main_rows, n_max: int) -> np.ndarray:
    """Samples of the largest set kept in the data set's own class proportions.

    The most frequent class keeps ``n_max`` nuclei; the others keep the same fraction of
    their own count (CRC: about 3.8 epithelial nuclei per "others" nucleus), at least 12.
    """
    counts = {c: sum(r[3] == c for r in rows) for c in {r[3] for r in rows}}
    top = max(counts.values())
    quota = {c: max(12, round(n_max * n / top)) for c, n in counts.items()}
    return np.array([r[4] < quota[r[3]] for r in main_rows])


def section_heads_imbalanced(main, mask, p, ctx) -> dict:
    """3b. Head and loss again, on the natural (imbalanced) class proportions."""
    return section_heads(main, mask, p, ctx)


def section_learning_curve(main, p, ctx) -> dict:
    """6. Labels per class against balanced accuracy (default composition; mlp and linear)."""
    import warnings

    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.training import fit

    x, labels, groups = main["x"], main["labels"], main["groups"]
    classes = sorted(set(labels.tolist()))
    splitter = StratifiedGroupKFold(n_splits=p["folds"], shuffle=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(x, labels, groups))
    rows: dict = {}
    for head in ("mlp", "linear"):
        for n in LABELS_PER_CLASS:
            values, used = [], []
            for k, (train, test) in enumerate(splits):
                rng = np.random.default_rng(k)
                take = np.concatenate([rng.permutation(train[labels[train] == c])[:n]
                                       for c in classes])
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    model = fit(x[take], labels[take], groups[take], TrainConfig(head=head),
                                classes=classes)
                predicted = np.array(classes)[model.predict(x[test])]
                values.append(float(balanced_accuracy_score(labels[test], predicted)))
                used.append(len(take))
            rows[f"{head} {n}"] = {"head": head, "per_class": n, "balanced_accuracy": values,
                                   "train_samples": used}
            log(f"learning curve {head} {n}/class: {np.mean(values):.4f}")
    return rows


def halves(rows) -> list[set[str]]:
    """Two image-disjoint halves (seeded)."""
    images = sorted({r[0] for r in rows})
    order = np.random.default_rng(1).permutation(len(images))
    first = {images[i] for i in order[: len(images) // 2]}
    return [first, set(images) - first]


def finetune_half(train_rows, test_rows, out: Path, name: str, work: Path,
                  quick: bool) -> dict:
    """Fine-tune Lite0 on ``train_rows``, test end to end on ``test_rows``; time DFL too."""
    import warnings

    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.finetune.folder import save_finetuned
    from napari_dfl.core.finetune.patches import embed_patches, load_patches
    from napari_dfl.core.finetune.training import FinetuneConfig, finetune_patches
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.metrics import classification_report
    from napari_dfl.core.heads.training import fit
    from napari_dfl.core.slides.sampling import Composition

    x20 = Composition(224, (0.5,), ("rgb",))
    train = load_patches([write_csv(train_rows, work / f"{name}_train.csv")], x20, mpp=0.5)
    test = load_patches([write_csv(test_rows, work / f"{name}_test.csv")], x20, mpp=0.5)
    config = FinetuneConfig(epochs=1 if quick else FinetuneConfig().epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = finetune_patches(train["patches"], train["labels"], train["groups"],
                                  config=config, progress=lambda e: log(
                                      f"  {name} epoch {e.epoch}: val loss {e.val_loss:.3f}, "
                                      f"val bal. acc. {e.val_balanced_accuracy:.3f}"))
    save_finetuned(result, out, name=name, config=config,
                   dataset={"sources": "CRCHistoPhenotypes nuclei (research use), one half "
                                       "of the images", "patch": train["patch"]})
    classes = result.summary["classes"]
    proba = result.predict_proba(test["patches"])
    report = classification_report(np.searchsorted(classes, test["labels"]),
                                   proba.argmax(1), proba, classes)
    # the frozen route's training cost on the same patches: embed once, fit the head
    base = load_backbone()
    start = time.perf_counter()
    frozen = embed_patches(base, train["patches"])
    embed_s = time.perf_counter() - start
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fit(frozen, train["labels"], train["groups"], TrainConfig())
    fit_s = time.perf_counter() - start
    log(f"{name}: fine-tuned in {result.summary['seconds']:.0f} s, end-to-end balanced "
        f"accuracy {report['balanced_accuracy']:.4f}; DFL embed {embed_s:.0f} s + fit "
        f"{fit_s:.1f} s")
    return {"finetune_s": result.summary["seconds"], "best_epoch": result.summary["best_epoch"],
            "epochs_run": result.summary["epochs_run"], "n_train": len(train["labels"]),
            "n_test": len(test["labels"]), "end_to_end": report, "dfl_embed_s": embed_s,
            "dfl_fit_s": fit_s, "validation": result.summary["validation"],
            "history": [h.__dict__ for h in result.history]}


def _holdout(x, labels, groups, train, test, config) -> float:
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    from napari_dfl.core.heads.training import fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        head = fit(x[train], labels[train], groups[train], config)
    predicted = np.array(head.classes)[head.predict(x[test])]
    return float(balanced_accuracy_score(labels[test], predicted))


def section_tuning(rows, main, main_rows, p, work: Path, quick: bool) -> dict:
    """4 and 5: backbones (proxy vs downstream) and fine-tuning against DFL, on two halves."""
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.slides.sampling import Composition

    x20 = Composition(224, (0.5,), ("rgb",))
    bb_rows = [r for r in rows if r[4] < p["halves"]]
    parts = halves(bb_rows)
    in_half = [np.array([r[0] in part for r in bb_rows]) for part in parts]
    runs_path = work / "finetune_runs.json"  # fine-tuning is the slow part: keep each run
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    tuned = []
    for h in (0, 1):
        name = f"crc-lite0-half{1 - h}"  # tuned on the other half, tested on half h
        out = work / name
        if name not in runs or not (out / "backbone_card.json").exists():
            train = [r for r, m in zip(bb_rows, in_half[h], strict=True) if not m]
            test = [r for r, m in zip(bb_rows, in_half[h], strict=True) if m]
            runs[name] = finetune_half(train, test, out, name, work, quick)
            runs_path.write_text(json.dumps(runs, default=float))
        tuned.append(str(out))
    embeddings = {b: embed(bb_rows, b, x20, work, "halves") for b in p["backbones"]}
    for h in (0, 1):
        embeddings[f"tuned{h}"] = embed(bb_rows, tuned[h], x20, work, "halves")
    probe = TrainConfig(head="linear", noise=0.0, loss="ce")
    table: dict = {}
    for b in (*p["backbones"], "efficientnet-lite0 fine-tuned (other half)"):
        entry: dict = {"proxy": {}, "downstream": {}}
        for h in (0, 1):
            e = embeddings[f"tuned{h}"] if "fine-tuned" in b else embeddings[b]
            x, y, g = e["x"][in_half[h]], e["labels"][in_half[h]], e["groups"][in_half[h]]
            for key, config in (("proxy", probe), ("downstream", TrainConfig())):
                result = cv(x, y, g, config, p["folds"], 1)
                for metric, values in result.items():
                    if isinstance(values, list):
                        entry[key].setdefault(metric, []).extend(values)
        table[b] = entry
        log(f"backbone {b}: proxy {np.mean(entry['proxy']['balanced_accuracy']):.4f}, "
            f"downstream {np.mean(entry['downstream']['balanced_accuracy']):.4f}")
    # 5: the same two splits for every route
    main_in_bb = np.array([r[4] < p["halves"] for r in main_rows])
    default_x = main["x"][main_in_bb]
    lite0 = embeddings["efficientnet-lite0"]
    if not np.array_equal(main["labels"][main_in_bb], lite0["labels"]):
        raise RuntimeError("the samples of the two embeddings are not in the same order")
    comparison: dict = {"dfl_x20": [], "dfl_default": [], "tuned_dfl_x20": [],
                        "end_to_end": []}
    for h in (0, 1):
        test, train = np.flatnonzero(in_half[h]), np.flatnonzero(~in_half[h])
        y, g = lite0["labels"], lite0["groups"]
        comparison["dfl_x20"].append(_holdout(lite0["x"], y, g, train, test, TrainConfig()))
        comparison["dfl_default"].append(_holdout(default_x, y, g, train, test, TrainConfig()))
        comparison["tuned_dfl_x20"].append(
            _holdout(embeddings[f"tuned{h}"]["x"], y, g, train, test, TrainConfig()))
        comparison["end_to_end"].append(
            runs[f"crc-lite0-half{1 - h}"]["end_to_end"]["balanced_accuracy"])
    log("DFL vs fine-tuning: " + ", ".join(f"{k} {np.mean(v):.4f}"
                                            for k, v in comparison.items()))
    return {"finetune_runs": runs, "backbones": table, "comparison": comparison,
            "half_images": [len(part) for part in parts],
            "half_samples": [int(m.sum()) for m in in_half]}


def main(argv: list[str] | None = None) -> int:
    """Run every section (cached ones are reused), then write the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-evidence")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "evidence.md")
    parser.add_argument("--images", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2)")
    parser.add_argument("--fresh", action="store_true", help="recompute cached sections")
    args = parser.parse_args(argv)
    if not (CRC_DIR / "nuclei_labels.csv").exists():
        print(f"{CRC_DIR} is absent: the evidence report needs the CRC nuclei set.",
              file=sys.stderr)
        return 2
    import torch

    from napari_dfl.core.slides.sampling import Composition

    torch.set_num_threads(args.threads)
    p = QUICK if args.quick else FULL
    work = args.workdir / ("quick" if args.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    results_path = work / "results.json"
    results = {} if args.fresh or not results_path.exists() else json.loads(
        results_path.read_text())

    def save() -> None:
        results_path.write_text(json.dumps(results, default=float))

    if args.fresh:
        for name in ("finetune_runs.json",):
            (work / name).unlink(missing_ok=True)

    rows = crc_rows(CRC_DIR, images=p["images"])  # quick: a few images (a store each)
    main_rows = [r for r in rows if r[4] < p["main"]]
    sub_mask = np.array([r[4] < p["sub"] for r in main_rows])
    main = embed(main_rows, "efficientnet-lite0", Composition(), work, "main")
    results["data"] = {"nuclei": len(rows), "images": len({r[0] for r in rows}),
                       "main": len(main_rows), "sub": int(sub_mask.sum()), "params": p,
                       "per_class_main": {c: int((main["labels"] == c).sum())
                                          for c in sorted(set(main["labels"]))}}
    if "noise" not in results:
        results["noise"] = section_noise(main, sub_mask, p, results)
        save()
    if "composition" not in results:
        small = embed([r for r in main_rows if r[4] < p["sub"]], "efficientnet-lite0",
                      Composition(64, (0.5,), ("rgb",)), work, "small")
        results["composition"] = section_composition(main, sub_mask, small, p, results)
        save()
    if "heads" not in results:
        results["heads"] = section_heads(main, sub_mask, p, results)
        save()
    natural = natural_mask(rows, main_rows, p["sub"])
    results["data"]["imbalanced"] = {c: int((main["labels"][natural] == c).sum())
                                     for c in sorted(set(main["labels"]))}
    if "heads_imbalanced" not in results:
        results["heads_imbalanced"] = section_heads_imbalanced(main, natural, p, results)
        save()
    if "learning_curve" not in results:
        results["learning_curve"] = section_learning_curve(main, p, results)
        save()
    if "tuning" not in results:
        results["tuning"] = section_tuning(rows, main, main_rows, p, work, args.quick)
        save()
    results["minutes"] = (time.perf_counter() - _T0) / 60  # this run
    results["compute_minutes"] = results.get("compute_minutes", 0.0) + results["minutes"]
    from evidence_report import write_report

    headline = write_report(results, args.doc, args.images, quick=args.quick)
    save()
    log(f"wrote {args.doc}")
    print(json.dumps(headline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
