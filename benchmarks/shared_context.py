"""Benchmark: what reading the x5 context off-centre costs in accuracy.

``Composition(context="nearest")`` (the tissue default) gives every x20 tile the x5 patch
centred on the middle tile of its 3 x 3 block (embedded once for the 9), and
``context="shared"`` the x5 patch of the x5 cell it lies in (once for 16), instead of an x5
patch centred on the tile. This script measures the accuracy cost on the data at hand, the
three contexts side by side, with the same samples, folds and seeds (paired differences):

* ``demo``: the sample slide's demo regions (epidermis, dermis, background) at the demo's
  112 px tiles (``SAMPLE_COMPOSITION``: what ``napari-dfl demo`` and the panel use there);
* ``crc``: CRCHistoPhenotypes nuclei (research use only; read in place from
  ``../shared/data/crchisto``), ``--per-class`` per class, the default point composition
  (32 px; its x5 part is 64 µm around the nucleus), image-grouped folds;
* ``kather``: a smoke test on ``--kather-per-class`` tissue tiles per class of
  ``../shared/data/kather_tiles/crc_val_he_7k`` (224 px images: a shared context there is
  mostly padding, so this says how it behaves off a slide, not on one).

Each row: balanced accuracy (mean and sd over folds x seeds) for each context, the paired
mean difference with centred and its standard error, and the embedding seconds of each. The
last stdout line is one JSON object. Run ``python benchmarks/shared_context.py`` (about 15
minutes on 2 cores), ``--datasets demo`` for the quick part.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED_DATA = Path(os.environ.get("NAPARI_DFL_SHARED_DATA", ROOT.parent / "shared" / "data"))
SAMPLE = ROOT / "sample_data" / "CMU-1-Small-Region.svs"
CONTEXTS = ("centred", "shared", "nearest")


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def dataset_specs(name: str, work: Path, per_class: int, kather_per_class: int) -> list[str]:
    """The dataset's specs for ``embed_labelled`` (CSV or folder written into ``work``)."""
    if name == "demo":
        return [f"{SAMPLE}:{SAMPLE.with_suffix('.geojson')}"]
    if name == "crc":
        from evidence import CRC_DIR, crc_rows, write_csv

        rows = [r for r in crc_rows(CRC_DIR) if r[4] < per_class]
        return [str(write_csv(rows, work / f"crc{per_class}.csv"))]
    source = SHARED_DATA / "kather_tiles" / "crc_val_he_7k"
    folder = work / f"kather{kather_per_class}"
    for klass in sorted(p.name for p in source.iterdir() if p.is_dir()):
        (folder / klass).mkdir(parents=True, exist_ok=True)
        for image in sorted((source / klass).glob("*"))[:kather_per_class]:
            link = folder / klass / image.name
            if not link.exists():
                link.symlink_to(image)
    return [str(folder)]


def measure(name: str, specs: list[str], work: Path, folds: int, seeds: int) -> dict:
    """Both contexts on one dataset: per-fold balanced accuracies and embedding time."""
    from napari_dfl.core.annotations.datasets import annotation_kinds
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.validation import cross_validate
    from napari_dfl.core.slides.sample_slide import SAMPLE_COMPOSITION
    from napari_dfl.core.slides.sampling import default_composition
    from napari_dfl.workflows.labelled import embed_labelled

    base = SAMPLE_COMPOSITION if name == "demo" else default_composition(annotation_kinds(specs))
    out: dict = {"composition": base.describe()}
    for context in CONTEXTS:
        settings = Settings(composition=dataclasses.replace(base, context=context),
                            mpp=None if name == "demo" else 0.5,
                            store_dir=str(work / "stores"))
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # padding at image borders
            data = embed_labelled(specs, settings)
        seconds = time.perf_counter() - began
        scores = []
        for seed in range(seeds):
            report = cross_validate(data.embeddings, data.labels, data.groups,
                                    TrainConfig(seed=seed), folds)
            scores += [float(f["balanced_accuracy"]) for f in report["folds"]]
        out[context] = {"bacc": scores, "embed_s": round(seconds, 1), "n": len(data.labels),
                        "groups": len(set(data.groups.tolist()))}
        log(f"{name:<7} {context:<8} n={len(data.labels)} bal. acc. "
            f"{np.mean(scores):.3f} ± {np.std(scores, ddof=1):.3f} (embedded in {seconds:.0f} s)")
    for context in CONTEXTS:
        out[f"{context}_mean"] = round(float(np.mean(out[context]["bacc"])), 4)
        if context == "centred":
            continue
        diff = np.array(out[context]["bacc"]) - np.array(out["centred"]["bacc"])
        out[f"{context}_diff_mean"] = round(float(diff.mean()), 4)
        out[f"{context}_diff_se"] = round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4)
        log(f"{name:<7} {context} - centred {diff.mean():+.3f} ± "
            f"{out[f'{context}_diff_se']:.3f} (paired, {len(diff)} folds x seeds)")
    return out


def main() -> int:
    """Measure every dataset asked for and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="demo,crc,kather")
    parser.add_argument("--per-class", type=int, default=150, help="CRC nuclei per class")
    parser.add_argument("--kather-per-class", type=int, default=30)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-shared-context")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    result: dict = {}
    for name in args.datasets.split(","):
        specs = dataset_specs(name, args.workdir, args.per_class, args.kather_per_class)
        result[name] = measure(name, specs, args.workdir, args.folds, args.seeds)
    result.update(folds=args.folds, seeds=args.seeds, load_before=round(load, 2),
                  load_after=round(os.getloadavg()[0], 2))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
