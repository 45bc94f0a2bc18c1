"""Fields of view for cells: which patch size (and input size) a nucleus task wants.

On the CRCHistoPhenotypes nuclei (research use only: read in place from
``../shared/data/crchisto``, never copied), 4 classes, ``--per-class`` nuclei per class drawn
with seed 0, image-grouped stratified 5-fold cross-validation with the product's default head
(what ``napari-dfl evaluate CSV --folds 5`` runs), for each field of view (patch size at x20,
with the x5 context and the grayscale variants of the default composition):

* every part read at the backbone's input size (224 px: the default since input sizes exist);
* at 64 px, every part read at its own 64 pixels and resized inside the backbone (before).

The smaller compositions (x20 alone; without grayscale) are cut from the same embeddings
(:mod:`napari_dfl.core.features.parts`). Embeddings are cached in ``--workdir``; the first run
embeds 3,200 nuclei x 4 parts per field (about 5 minutes each on 2 CPU cores).

The last stdout line is one JSON object: balanced accuracy per field, the default
composition's and the best one's, and the time each extraction took.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("napari_dfl") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from evidence import CRC_DIR, crc_rows, embed  # noqa: E402  (the same data and pipeline)

FIELDS = (32, 48, 64, 96, 112, 224)


def measure(rows: list, workdir: Path, patch: int, input_size: int | None,
            folds: int) -> list[dict]:
    """Cross-validated balanced accuracy of each sub-composition of one extraction."""
    from napari_dfl.core.features.parts import part_columns, sub_compositions
    from napari_dfl.core.heads.config import TrainConfig
    from napari_dfl.core.heads.validation import cross_validate
    from napari_dfl.core.slides.sampling import Composition

    full = Composition(patch, (0.5, 2.0), ("rgb", "gray"), input_size)
    start = time.perf_counter()
    data = embed(rows, "efficientnet-lite0", full, workdir, f"crc{len(rows)}")
    seconds = time.perf_counter() - start
    resolved = data["composition"]
    labels, groups = data["labels"], data["groups"]
    dim = data["x"].shape[1] // resolved.n_parts
    rows = []
    for sub in sub_compositions(resolved):
        x = data["x"][:, part_columns(resolved, sub, dim)]
        result = cross_validate(x, labels, groups, TrainConfig(), folds=folds)
        rows.append({"patch": patch, "um": patch * 0.5, "read_px": resolved.read_size,
                     "composition": sub.describe(), "parts": sub.n_parts,
                     "balanced_accuracy": result["balanced_accuracy"],
                     "sd": result["balanced_accuracy_sd"], "samples": len(labels),
                     "embed_s": round(seconds, 1)})
        print(f"{sub.describe():55s} {result['balanced_accuracy']:.3f} ± "
              f"{result['balanced_accuracy_sd']:.3f}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the table (stderr) and the JSON line (stdout)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-class", type=int, default=800)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--fields", default=",".join(map(str, FIELDS)),
                        help="patch sizes at x20 to compare (default %(default)s)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "napari-dfl-fields")
    args = parser.parse_args(argv)
    if not (CRC_DIR / "nuclei_labels.csv").exists():
        print(f"{CRC_DIR} is absent: nothing to measure", file=sys.stderr)
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in crc_rows(CRC_DIR, seed=0) if r[4] < args.per_class]
    results = []
    for patch in (int(f) for f in args.fields.split(",")):
        results += measure(rows, args.workdir, patch, None, args.folds)
    results += measure(rows, args.workdir, 64, 64, args.folds)
    full = [r for r in results if r["parts"] == 4]
    default = next((r for r in full if r["patch"] == 224), None)  # unless --fields left it out
    best = max(results, key=lambda r: r["balanced_accuracy"])
    summary = {
        "samples": results[0]["samples"], "folds": args.folds,
        "per_field": {f"{r['patch']}px_read{r['read_px']}": round(r["balanced_accuracy"], 4)
                      for r in full},
        "region_default_224": default and round(default["balanced_accuracy"], 4),
        "best": {"composition": best["composition"],
                 "balanced_accuracy": round(best["balanced_accuracy"], 4)},
        "embed_s": {f"{r['patch']}px_read{r['read_px']}": r["embed_s"] for r in full},
        "rows": results,
    }
    print(json.dumps(summary, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
