"""Benchmark: the stain-normalised colour variant (``stain``) against ``rgb`` and ``gray``.

One extraction per data set with the variants ``rgb, gray, stain``; the compared
compositions are cut from it (:mod:`napari_dfl.core.features.parts`), so every row sees the
same samples, folds and seeds (paired differences):

* ``crc``: CRCHistoPhenotypes nuclei (research use only: read in place from
  ``../shared/data/crchisto``), ``--per-class`` per class drawn with seed 0, the default point
  composition (32 px at x20 with its x5 context, read at the backbone's 224 px),
  image-grouped 5-fold CV with the product's default head (what ``napari-dfl evaluate CSV
  --folds 5`` runs), ``--seeds`` seeds;
* ``shift``: the same CRC nuclei, the heads trained on the original images and tested on
  the held-out fold's images *restained like another lab's slide* (each image's Macenko
  concentrations recomposed with the bundled CMU-1 sample slide's stain vectors and
  maximum concentrations, the residual kept): what the stain variant is for. Reported
  beside the same heads tested on the original images (paired per fold);
* ``kather``: a smoke test on the 32 CRC-VAL-HE-7K tiles at hand
  (``../shared/data/kather_tiles/crc_val_he_7k``, 8 classes x 4; x20 only, 224 px fields,
  2 folds x 5 seeds). These tiles were already Macenko-normalised by their authors, and a
  tile is its own "slide" (its stain is estimated from itself).

Rows: rgb, stain, rgb + gray, rgb + stain, rgb + gray + stain (x20 + x5 for CRC); the
paired mean difference against rgb, and rgb + stain against rgb + gray, with its standard
error over folds x seeds. Also the cost of the normalisation: ms per 224 px patch (the
reading threads' extra work) and the seconds of one slide's estimate (the sample slide).

The last stdout line is one JSON object. ``python benchmarks/stain_variant.py`` takes about
15 minutes on one core (``--threads 1``, the default) the first time; embeddings are cached
in ``--workdir``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("napari_dfl") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED_DATA = Path(os.environ.get("NAPARI_DFL_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLE = ROOT / "sample_data" / "CMU-1-Small-Region.svs"
ROWS = {"rgb": ("rgb",), "stain": ("stain",), "rgb + gray": ("rgb", "gray"),
        "rgb + stain": ("rgb", "stain"), "rgb + gray + stain": ("rgb", "gray", "stain")}
PAIRS = (("stain", "rgb"), ("rgb + gray", "rgb"), ("rgb + stain", "rgb"),
         ("rgb + stain", "rgb + gray"), ("rgb + gray + stain", "rgb + gray"))


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def normalisation_cost(repeats: int = 200) -> dict:
    """Seconds of the sample slide's estimate, and ms per 224 px patch of normalising."""
    from napari_dfl.core.slides.factory import open_slide
    from napari_dfl.core.slides.stain import normalise_stain, slide_stain

    with open_slide(SAMPLE) as slide:
        began = time.perf_counter()
        estimate = slide_stain(slide)
        estimate_s = time.perf_counter() - began
        patch = slide.read_region((1000.0, 1000.0), (224, 224), mpp=0.5)
    normalise_stain(patch, estimate)
    began = time.perf_counter()
    for _ in range(repeats):
        normalise_stain(patch, estimate)
    ms = (time.perf_counter() - began) / repeats * 1000
    log(f"normalisation: {ms:.2f} ms per 224 px patch; the sample slide's estimate "
        f"{estimate_s:.2f} s ({estimate.describe()})")
    return {"ms_per_patch_224": round(ms, 3), "slide_estimate_s": round(estimate_s, 2)}


def restain(rgb: np.ndarray, target) -> np.ndarray:
    """``rgb`` as if stained with ``target``'s stain vectors and maximum concentrations."""
    from napari_dfl.core.slides.stain import estimate_stain

    own = estimate_stain(rgb)
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / 256.0)
    concentrations = np.linalg.lstsq(own.stains, od.T, rcond=None)[0]
    residual = od - (own.stains @ concentrations).T
    scale = target.max_concentrations / own.max_concentrations
    new = (target.stains @ (concentrations * scale[:, None])).T + residual
    return np.clip(256.0 * np.exp(-new) - 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape)


def restained_csv(rows: list, work: Path) -> Path:
    """The CRC rows' images restained like the sample slide, and a CSV pointing at them."""
    from PIL import Image

    from evidence import CRC_DIR
    from napari_dfl.core.slides.factory import open_slide
    from napari_dfl.core.slides.stain import slide_stain

    with open_slide(SAMPLE) as slide:
        target = slide_stain(slide)
    folder = work / "crc_restained"
    folder.mkdir(parents=True, exist_ok=True)
    for image in sorted({r[0] for r in rows}):
        out = folder / Path(image).name
        if not out.exists():
            pixels = np.asarray(Image.open(CRC_DIR / image).convert("RGB"))
            Image.fromarray(restain(pixels, target)).save(out)
    path = work / f"crc_restained{len(rows)}.csv"
    lines = ["image,x,y,label"] + [f"{folder / Path(r[0]).name},{r[1]},{r[2]},{r[3]}"
                                   for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def specs(name: str, work: Path, per_class: int) -> tuple[list[str], object]:
    """The data set's specs for ``embed_labelled`` and the full composition to embed."""
    from napari_dfl.core.slides.sampling import POINT_PATCH, Composition

    variants = ("rgb", "gray", "stain")
    if name in ("crc", "shift"):
        from evidence import CRC_DIR, crc_rows, write_csv

        rows = [r for r in crc_rows(CRC_DIR, seed=0) if r[4] < per_class]
        csv = write_csv(rows, work / f"crc{per_class}.csv") if name == "crc" \
            else restained_csv(rows, work)
        return [str(csv)], Composition(POINT_PATCH, (0.5, 2.0), variants)
    source = SHARED_DATA / "kather_tiles" / "crc_val_he_7k"
    return [str(source)], Composition(224, (0.5,), variants)


def embedded(name: str, work: Path, per_class: int):
    """The data set's labelled embeddings (through the product's pipeline) and seconds."""
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.workflows.labelled import embed_labelled

    dataset, full = specs(name, work, per_class)
    settings = Settings(composition=full, mpp=0.5, batch_size=8, store_dir=str(work / "stores"))
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # padding at the images' borders
        data = embed_labelled(dataset, settings)
    return data, time.perf_counter() - began


def pairs(out: dict, name: str) -> None:
    """Paired differences (mean, SE over folds x seeds) of :data:`PAIRS` into ``out``."""
    for a, b in PAIRS:
        diff = np.array(out["rows"][a]) - np.array(out["rows"][b])
        out["pairs"][f"{a} - {b}"] = {"mean": round(float(diff.mean()), 4),
                                      "se": round(float(diff.std(ddof=1)
                                                        / np.sqrt(len(diff))), 4)}
        log(f"{name:<7} {a + ' - ' + b:<36} {diff.mean():+.3f} ± "
            f"{diff.std(ddof=1) / np.sqrt(len(diff)):.3f} (SE, paired)")
    out["means"] = {row: round(float(np.mean(v)), 4) for row, v in out["rows"].items()}
    out["sd"] = {row: round(float(np.std(v, ddof=1)), 4) for row, v in out["rows"].items()}


def measure_shift(work: Path, per_class: int, folds: int, seeds: int) -> dict:
    """Heads trained on the original CRC images, tested on the held-out restained ones."""
    from dataclasses import replace

    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold

    from napari_dfl.core.features.parts import part_columns
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.training import fit

    original, _ = embedded("crc", work, per_class)
    shifted, embed_s = embedded("shift", work, per_class)
    if not np.array_equal(original.labels, shifted.labels):
        raise RuntimeError("the restained samples are not in the originals' order")
    resolved = original.extractor.composition
    dim = original.embeddings.shape[1] // resolved.n_parts
    labels, groups = original.labels, original.groups
    classes = sorted(set(labels.tolist()))
    out: dict = {"n": len(labels), "embed_s": round(embed_s, 1), "folds": folds,
                 "seeds": seeds, "rows": {}, "pairs": {}, "in_domain": {}}
    for row, variants in ROWS.items():
        columns = part_columns(resolved, replace(resolved, variants=variants), dim)
        same, moved = [], []
        for seed in range(seeds):
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for train, test in splitter.split(labels, labels, groups):
                    model = fit(original.embeddings[train][:, columns], labels[train],
                                groups[train], TrainConfig(seed=seed), classes=classes)
                    for target, data in ((same, original), (moved, shifted)):
                        predicted = np.array(classes)[model.predict(
                            data.embeddings[test][:, columns])]
                        target.append(float(balanced_accuracy_score(labels[test],
                                                                    predicted)))
        out["rows"][row], out["in_domain"][row] = moved, same
        drop = np.array(same) - np.array(moved)
        log(f"shift   {row:<20} original {np.mean(same):.3f}, restained {np.mean(moved):.3f}"
            f" (drop {drop.mean():+.3f} ± {drop.std(ddof=1) / np.sqrt(len(drop)):.3f} SE)")
    pairs(out, "shift")
    return out


def measure(name: str, work: Path, per_class: int, folds: int, seeds: int) -> dict:
    """Every row on one data set: per-fold balanced accuracies, paired differences."""
    from dataclasses import replace

    from napari_dfl.core.features.parts import part_columns
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.validation import cross_validate

    data, embed_s = embedded(name, work, per_class)
    resolved = data.extractor.composition
    dim = data.embeddings.shape[1] // resolved.n_parts
    log(f"{name}: {len(data.labels)} samples, {resolved.describe()}, embedded in "
        f"{embed_s:.0f} s")
    out: dict = {"n": len(data.labels), "groups": len(set(data.groups.tolist())),
                 "composition": resolved.describe(), "embed_s": round(embed_s, 1),
                 "folds": folds, "seeds": seeds, "rows": {}, "pairs": {}}
    for row, variants in ROWS.items():
        sub = replace(resolved, variants=variants)
        x = data.embeddings[:, part_columns(resolved, sub, dim)]
        scores = []
        for seed in range(seeds):
            report = cross_validate(x, data.labels, data.groups, TrainConfig(seed=seed), folds)
            scores += [float(f["balanced_accuracy"]) for f in report["folds"]]
        out["rows"][row] = scores
        log(f"{name:<7} {row:<20} {np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f}")
    pairs(out, name)
    return out


def table(name: str, result: dict) -> str:
    """The Markdown rows of one data set."""
    lines = []
    for row in ROWS:
        paired = result["pairs"].get(f"{row} - rgb")
        diff = "" if paired is None else f"{paired['mean']:+.3f} ± {paired['se']:.3f}"
        lines.append(f"| {name} | {row} | {result['means'][row]:.3f} ± "
                     f"{result['sd'][row]:.3f} | {diff} |")
    return "\n".join(lines)


def main() -> int:
    """Measure every data set asked for; print the table (stderr) and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="crc,shift,kather")
    parser.add_argument("--per-class", type=int, default=200, help="CRC nuclei per class")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-stain")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict = {"cost": normalisation_cost(), "threads": args.threads}
    for name in args.datasets.split(","):
        crc = SHARED_DATA / "crchisto" / "nuclei_labels.csv"
        if name in ("crc", "shift") and not crc.exists():
            log("crchisto is absent: CRC skipped")
            continue
        if name == "shift":
            result[name] = measure_shift(args.workdir, args.per_class, args.folds, args.seeds)
        elif name == "kather":
            result[name] = measure(name, args.workdir, args.per_class, 2, 5)
        else:
            result[name] = measure(name, args.workdir, args.per_class, args.folds, args.seeds)
    log("\n| data | variants | balanced accuracy | paired difference to rgb (SE) |\n"
        "|---|---|---|---|")
    for name in ("crc", "shift", "kather"):
        if name in result:
            log(table(name, result[name]))
    result["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
