"""Benchmark: end-to-end extraction speed against the backbone's forward-only speed.

On a pyramidal JPEG TIFF mosaicked from the real tissue of the sample slide (built outside
the repository by ``slide_open.build_mosaic`` and cached), it measures in one run:

* ``forward_only_per_s``: patches per second through ``Backbone.embed`` alone, on patches
  already cut, with the same backbone, batch and device (measured right before and after
  each end-to-end round, and averaged);
* ``end_to_end_per_s``: patches per second of ``embed_coords`` into a fresh store: read,
  decode, crop, resize, grayscale variant, forward and store (``--patch-size 64``: the cell
  default, every part resampled on the reading threads to the backbone's 224 px);
* ``ratio``: their quotient (target >= 0.9), the median over ``--rounds`` rounds that
  interleave the two (so drifting load on a shared machine hits both sides);
* ``rss_mb_n`` / ``rss_mb_4n``: peak resident memory of a fresh process embedding every
  tissue tile of a slide of N tiles, and of one four times larger (target: within 10 %).

The last stdout line is one JSON object. ``python benchmarks/embed_throughput.py --help``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from slide_open import DEFAULT_SOURCE, DEFAULT_WORKDIR, build_mosaic  # noqa: E402

TARGETS = {"ratio": 0.9, "rss_growth": 0.10}


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


def _setup(args: argparse.Namespace, slide_path: Path):
    from napari_dfl.core.backbones.backbone import load_backbone
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.core.slides.tiff import Slide
    from napari_dfl.core.slides.tissue import tile_grid

    backbone = load_backbone(device=args.device, precision=args.precision)
    composition = Composition(args.patch_size, tuple(args.zooms), tuple(args.variants),
                              args.input_size).for_input(backbone.input_size)
    slide = Slide(slide_path)
    grid = tile_grid(slide, composition.patch_size, composition.zooms[0])
    return backbone, composition, slide, grid


def forward_only(backbone, patches: np.ndarray, batch_samples: int, repeats: int) -> float:
    """Patches per second of the forward pass alone, on ``(S, P, H, W, 3)`` patches."""
    flat = patches.reshape(-1, *patches.shape[2:])
    step = batch_samples * patches.shape[1]
    backbone.embed(flat[:step])  # warm-up
    count, start = 0, time.perf_counter()
    for _ in range(repeats):
        for i in range(0, len(flat) - step + 1, step):
            backbone.embed(flat[i : i + step])
            count += step
    return count / (time.perf_counter() - start)


def measure_throughput(args: argparse.Namespace, slide_path: Path) -> dict:
    """Forward-only and end-to-end speed, interleaved in rounds, in this process.

    Each round times forward-only, then end to end on the next share of the samples (into
    the same fresh store), then forward-only again; its ratio is end to end over the mean of
    the two forward-only figures around it, so load that drifts during the run (a shared
    machine) hits both sides of every ratio. ``ratio`` is the median over the rounds.
    """
    from napari_dfl.core.features.engine import default_readers, embed_coords
    from napari_dfl.core.features.store_folder import open_store_for
    from napari_dfl.core.slides.sampling import sample_patches
    from napari_dfl.core.util.progress import drive as run

    backbone, composition, slide, grid = _setup(args, slide_path)
    coords = grid.coords[: args.samples]
    log(f"[throughput] {len(coords)} samples x {composition.n_parts} parts "
        f"({composition.describe()}), "
        f"{backbone.name} {backbone.device} {backbone.precision}, batch {args.batch} samples, "
        f"{args.rounds} rounds")
    patches = sample_patches(slide, coords[: args.batch * 6], composition)
    backbone.embed(patches.reshape(-1, *patches.shape[2:])[: args.batch])  # warm-up
    rounds = []
    with tempfile.TemporaryDirectory() as out:
        store = open_store_for(slide, backbone, composition, out)
        for share in np.array_split(coords, args.rounds):
            before = forward_only(backbone, patches, args.batch, repeats=1)
            start = time.perf_counter()
            run(embed_coords(slide, share, backbone, composition, store,
                             batch_size=args.batch, readers=args.readers))
            end_to_end = len(share) * composition.n_parts / (time.perf_counter() - start)
            after = forward_only(backbone, patches, args.batch, repeats=1)
            forward = (before + after) / 2
            rounds.append({"end_to_end_per_s": end_to_end, "forward_only_per_s": forward,
                           "ratio": end_to_end / forward})
            log(f"[throughput] round {len(rounds)}: end-to-end {end_to_end:.1f}, "
                f"forward-only {before:.1f} / {after:.1f} patches/s")
        assert len(store) == len(coords)
    median = len(rounds) // 2
    by_ratio = sorted(rounds, key=lambda r: r["ratio"])
    return {
        "end_to_end_per_s": round(float(np.median([r["end_to_end_per_s"] for r in rounds])), 2),
        "forward_only_per_s": round(float(np.median([r["forward_only_per_s"]
                                                     for r in rounds])), 2),
        "ratio": round(by_ratio[median]["ratio"], 3),
        "round_ratios": [round(r["ratio"], 3) for r in rounds],
        "samples": len(coords),
        "parts": composition.n_parts,
        "composition": composition.describe(),
        "device": str(backbone.device),
        "precision": backbone.precision,
        "batch_samples": args.batch,
        "readers": args.readers or default_readers(str(backbone.device)),
        "cpus": os.cpu_count(),
        "load_1min": round(os.getloadavg()[0], 2),
    }


def worker_rss(args: argparse.Namespace, slide_path: Path) -> dict:
    """Embed every tissue tile of a slide (fresh process); report peak RSS."""
    from napari_dfl.core.features.engine import embed_coords
    from napari_dfl.core.features.store_folder import open_store_for
    from napari_dfl.core.util.progress import drive as run

    backbone, composition, slide, grid = _setup(args, slide_path)
    with tempfile.TemporaryDirectory() as out:
        store = open_store_for(slide, backbone, composition, out)
        run(embed_coords(slide, grid.coords, backbone, composition, store,
                         batch_size=args.batch, readers=args.readers))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"tiles": len(grid), "peak_rss_mb": round(peak_kb / 1024, 1)}


def run_rss_worker(args: argparse.Namespace, slide_path: Path) -> dict:
    """Run :func:`worker_rss` in a fresh interpreter."""
    command = [sys.executable, __file__, "--worker-rss", str(slide_path), *_shared_args(args)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"RSS worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _shared_args(args: argparse.Namespace) -> list[str]:
    size = ["--input-size", str(args.input_size)] if args.input_size else []
    readers = ["--readers", str(args.readers)] if args.readers else []
    return ["--batch", str(args.batch), *readers, "--patch-size",
            str(args.patch_size), *size, "--zooms", *map(str, args.zooms), "--variants",
            *args.variants, "--precision", args.precision,
            *(["--device", args.device] if args.device else [])]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6144,
                        help="side of the throughput slide in px (default 6144)")
    parser.add_argument("--rss-size", type=int, default=3072,
                        help="side of the N-tile slide for RSS; the 4N slide is twice as wide")
    parser.add_argument("--samples", type=int, default=192, help="samples timed end to end")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved forward-only / end-to-end rounds (median ratio)")
    parser.add_argument("--readers", type=int,
                        help="reader threads (default: from the cores and the device, "
                             "engine.default_readers)")
    parser.add_argument("--patch-size", type=int, default=224,
                        help="field of view in px at the first zoom (64: the cell default)")
    parser.add_argument("--input-size", type=int,
                        help="px each part is read at (default: the backbone's own)")
    parser.add_argument("--zooms", type=float, nargs="+", default=[0.5, 2.0])
    parser.add_argument("--variants", nargs="+", default=["rgb", "gray"])
    parser.add_argument("--device")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--worker-rss", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the final JSON line."""
    args = parse_args(argv)
    if args.worker_rss:
        print(json.dumps(worker_rss(args, args.worker_rss)))
        return 0
    slide_path, _ = build_mosaic(DEFAULT_SOURCE, args.size, args.workdir)
    result = measure_throughput(args, slide_path)
    log(f"[throughput] end-to-end {result['end_to_end_per_s']} patches/s, forward-only "
        f"{result['forward_only_per_s']} patches/s, ratio {result['ratio']}")
    if not args.skip_rss:
        small, _ = build_mosaic(DEFAULT_SOURCE, args.rss_size, args.workdir)
        large, _ = build_mosaic(DEFAULT_SOURCE, args.rss_size * 2, args.workdir)
        n, four_n = run_rss_worker(args, small), run_rss_worker(args, large)
        growth = four_n["peak_rss_mb"] / n["peak_rss_mb"] - 1
        result.update(rss_mb_n=n["peak_rss_mb"], rss_mb_4n=four_n["peak_rss_mb"],
                      tiles_n=n["tiles"], tiles_4n=four_n["tiles"], rss_growth=round(growth, 3))
        log(f"[rss] {n['tiles']} tiles: {n['peak_rss_mb']} MB; {four_n['tiles']} tiles: "
            f"{four_n['peak_rss_mb']} MB ({growth:+.1%})")
    result["targets"] = TARGETS
    result["pass"] = {"ratio": result["ratio"] >= TARGETS["ratio"]}
    if "rss_growth" in result:
        result["pass"]["rss"] = result["rss_growth"] <= TARGETS["rss_growth"]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
