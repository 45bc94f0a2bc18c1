"""Benchmark: a whole slide at the default composition against x20 RGB alone.

On a mosaic of real tissue (``slide_open.build_mosaic``; 50,000 px a side by default, about
0.9 GB, built once in ``--workdir``), the tissue tiles at x20 (224 px) are counted, and a
fixed subset of ``--tiles`` of them (a compact block: the tiles nearest the middle of the
tissue, neighbours as on a whole slide) is embedded with each composition below, each in a
fresh process, one after the other in the same run:

* ``x20_rgb``: one part per tile (the cheapest useful composition);
* ``default``: the default composition (x20 and x5, RGB and gray: 4 parts per tile);
* ``shared``: the same parts with the x5 context shared by the 16 tiles of each x5 cell
  (``Composition(context="shared")``: each x5 patch embedded once).

For each: ``first_tile_s`` (from the start of embedding to the first committed batch, the
moment the prediction overlay can show its first tiles), ``all_s``, ``tiles_per_s``,
``patches_per_s`` and ``peak_rss_mb``; the backbone's load is not timed. The final JSON line
carries ``default_cost_ratio`` (default ``all_s`` over x20-RGB ``all_s``; target <= 2.2),
``shared_cost_ratio`` (the same for the shared context),
``tiles_per_s`` (the default composition's), the full tissue-tile count and the hours the
whole slide would take at the measured rate. The load average is printed beside the times.

Run ``python benchmarks/whole_slide.py`` (about 5 minutes on 2 cores with the mosaic built),
``--size 8192 --tiles 32`` for a quick run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from slide_open import DEFAULT_SOURCE, build_mosaic  # noqa: E402

DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "napari-dfl-bench"
TARGETS = {"default_cost_ratio": 2.2}
COMPOSITIONS = {"x20_rgb": ((0.5,), ("rgb",), "centred"), "default": (None, None, "centred"),
                "shared": (None, None, "shared")}


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def run_one(slide_path: Path, name: str, tiles: int, batch: int, device: str | None) -> dict:
    """In this (fresh) process: embed the subset with one composition; its figures."""
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.features.engine import default_readers, embed_coords
    from napari_dfl.core.features.store_folder import open_store_for
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.core.slides.tiff import Slide
    from napari_dfl.core.slides.tissue import tile_grid

    backbone = load_backbone(device=device)
    zooms, variants, context = COMPOSITIONS[name]
    default = Composition()
    composition = Composition(default.patch_size, zooms or default.zooms,
                              variants or default.variants,
                              context=context).for_input(backbone.input_size)
    slide = Slide(slide_path)
    grid = tile_grid(slide, composition.patch_size, composition.zooms[0])
    # a compact block of tissue (the tiles nearest the tissue's middle): neighbours as on a
    # whole slide, so a shared context is shared as often as it would be there
    middle = np.median(grid.coords, axis=0)
    nearest = np.argsort(((grid.coords - middle) ** 2).sum(1), kind="stable")[:tiles]
    coords = grid.coords[np.sort(nearest)]
    with tempfile.TemporaryDirectory() as out:
        store = open_store_for(slide, backbone, composition, out)
        began, first = time.perf_counter(), None
        for progress in embed_coords(slide, coords, backbone, composition, store,
                                     batch_size=batch, order="given"):
            if first is None and progress.computed > 0:
                first = time.perf_counter() - began
        seconds = time.perf_counter() - began
        assert len(store) == len(coords), (len(store), len(coords))
    return {"composition": composition.describe(), "parts": composition.n_parts,
            "tiles": len(coords), "grid_tiles": len(grid), "first_tile_s": round(first, 2),
            "all_s": round(seconds, 2), "tiles_per_s": round(len(coords) / seconds, 2),
            "patches_per_s": round(len(coords) * composition.n_parts / seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "device": str(backbone.device), "readers": default_readers(str(backbone.device))}


def main() -> int:
    """Build (or reuse) the mosaic, run both compositions, print the table and JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=50_000, help="mosaic side in px")
    parser.add_argument("--tiles", type=int, default=256, help="tiles embedded per run")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    parser.add_argument("--device", help="cpu, cuda... (default: the best available)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--one", choices=sorted(COMPOSITIONS), help=argparse.SUPPRESS)
    parser.add_argument("--slide", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.slide, args.one, args.tiles, args.batch, args.device)))
        return 0
    slide_path, _ = build_mosaic(DEFAULT_SOURCE, args.size, args.workdir)
    load_before = os.getloadavg()[0]
    runs = {}
    for name in COMPOSITIONS:
        command = [sys.executable, __file__, "--one", name, "--slide", str(slide_path),
                   "--tiles", str(args.tiles), "--batch", str(args.batch)]
        if args.device:
            command += ["--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the {name} run failed:\n{done.stderr[-3000:]}")
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
        row = runs[name]
        log(f"{name:<8} {row['parts']} parts  first {row['first_tile_s']:>6.2f} s  all "
            f"{row['all_s']:>7.2f} s  {row['tiles_per_s']:>6.2f} tiles/s  "
            f"{row['patches_per_s']:>6.1f} patches/s  peak {row['peak_rss_mb']:.0f} MB")
    default, cheap = runs["default"], runs["x20_rgb"]
    ratio = default["all_s"] / cheap["all_s"]
    shared_ratio = runs["shared"]["all_s"] / cheap["all_s"]
    grid_tiles = default["grid_tiles"]
    result = {"runs": runs, "default_cost_ratio": round(ratio, 3),
              "shared_cost_ratio": round(shared_ratio, 3),
              "tiles_per_s": default["tiles_per_s"], "grid_tiles": grid_tiles,
              "whole_slide_hours_default": round(grid_tiles / default["tiles_per_s"] / 3600, 2),
              "whole_slide_hours_x20_rgb": round(grid_tiles / cheap["tiles_per_s"] / 3600, 2),
              "size": args.size, "load_before": round(load_before, 2),
              "load_after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
              "targets": TARGETS}
    result["pass"] = {"default_cost_ratio": ratio <= TARGETS["default_cost_ratio"]}
    log(f"default_cost_ratio {ratio:.2f} (target <= {TARGETS['default_cost_ratio']}), "
        f"shared_cost_ratio {shared_ratio:.2f}; the "
        f"whole slide ({grid_tiles} tiles): {result['whole_slide_hours_default']} h default, "
        f"{result['whole_slide_hours_x20_rgb']} h x20 RGB")
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
