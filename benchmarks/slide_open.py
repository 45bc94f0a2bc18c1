"""Benchmark: open, read and display a gigapixel pyramidal JPEG TIFF through ``Slide``.

The script builds (outside the repository, cached between runs) a square pyramidal tiled
JPEG TIFF of ``--size`` pixels per side by mosaicking tissue from the bundled sample slide
``CMU-1-Small-Region.svs``: each 512 px tile is a tissue crop of the sample, shifted,
rotated and flipped at random, so the JPEG data is as varied as a real slide's. The file
is written tile by tile from generators; no level is ever held in memory whole.

It then measures, each in a fresh Python process so that memory figures are honest:

* ``open_s`` / ``open_rss_mb``: time and resident-memory growth of ``Slide(path)``
  (median over ``--open-runs`` processes);
* ``read_p50_ms`` / ``read_p95_ms``: random 512 x 512 level-0 reads through
  ``Slide.read_region``, and the same positions read through tifffile's zarr store
  directly, interleaved in random order; ``read_ratio`` is the ratio of the medians;
* ``napari_add_s``: ``viewer.add_image(slide.level_arrays, multiscale=True, ...)`` in a
  hidden napari viewer (under Xvfb when there is no display).

A table goes to stderr; the last line of stdout is one JSON object with the figures, the
targets and whether each target is met. Run ``python benchmarks/slide_open.py --help``.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("napari_dfl") is None:  # running from a checkout, not installed
    sys.path.insert(0, str(REPO / "src"))

DEFAULT_SOURCE = REPO / "sample_data" / "CMU-1-Small-Region.svs"
DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "napari-dfl-bench"
#: Side of the TIFF tiles and of the benchmark reads, in pixels.
TILE = 512
#: Pixel size written into the file's resolution tags (x20).
MPP = 0.5
JPEG_QUALITY = 80
#: Pyramid levels are written until the coarsest is at most this many pixels on a side.
COARSEST_MAX_PX = 2048
#: Minimum tissue fraction of a source crop.
MIN_TISSUE = 0.6
#: Seed of the mosaic layout (fixed: the file does not depend on ``--seed``).
LAYOUT_SEED = 1234
#: Bump when the generated file changes, so that cached files are rebuilt.
BUILD_VERSION = 1
TARGETS = {"open_s": 0.5, "open_rss_mb": 100.0, "read_ratio": 1.2}


def log(message: str) -> None:
    """Print a progress message to stderr."""
    print(message, file=sys.stderr, flush=True)


# -- building the mosaic ------------------------------------------------------------------


def pyramid_shapes(size: int) -> list[tuple[int, int]]:
    """Return ``(height, width)`` of each level: halved until at most COARSEST_MAX_PX."""
    shapes = [(size, size)]
    while max(shapes[-1]) > COARSEST_MAX_PX:
        h, w = shapes[-1]
        shapes.append((h // 2, w // 2))
    return shapes


def _box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    h, w = image.shape[0] // factor, image.shape[1] // factor
    blocks = image[: h * factor, : w * factor].reshape(h, factor, w, factor, 3)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)


class TissueMosaic:
    """An endless plane of tissue tiles, addressable at any pyramid level.

    Level-0 tile ``(row, col)`` is a ``TILE`` x ``TILE`` crop of the source at a random
    tissue position (a multiple of the coarsest downsample), under one of the 8 rotations
    and flips. A tile at level ``k`` assembles the ``2**k`` x ``2**k`` level-0 tiles it
    covers from a box-downsampled copy of the source, so every level is the exact 2x2
    average of the one above it, yet no level is ever computed from a stored finer one.

    Args:
        source: ``(H, W, 3)`` uint8 image of the source slide at level 0.
        tissue: ``(H, W)`` boolean tissue mask of the source.
        levels: number of pyramid levels to support.
        grid: ``(rows, cols)`` of level-0 tiles to lay out (enough for every level).
        seed: layout seed.
    """

    def __init__(self, source: np.ndarray, tissue: np.ndarray, levels: int,
                 grid: tuple[int, int], seed: int = LAYOUT_SEED) -> None:
        self.step = 2 ** (levels - 1)
        if TILE % self.step:
            raise ValueError(f"{levels} levels need a tile divisible by {self.step}.")
        self.sources = [_box_downsample(source, 2**k) for k in range(levels)]
        self.origins = self._tissue_origins(tissue)
        if len(self.origins) == 0:
            raise RuntimeError("no tissue crop found in the source slide")
        rng = np.random.default_rng(seed)
        self.choice = rng.integers(0, len(self.origins), size=grid)
        self.transform = rng.integers(0, 8, size=grid)

    def digest(self) -> str:
        """Short hash of the source pixels and the layout: equal digests, equal files."""
        sha = hashlib.sha1(self.sources[0].tobytes())
        for array in (self.origins, self.choice, self.transform):
            sha.update(np.ascontiguousarray(array, np.int64).tobytes())
        return sha.hexdigest()[:10]

    def _tissue_origins(self, tissue: np.ndarray) -> np.ndarray:
        """Level-0 ``(x, y)`` of source crops, on a ``step`` grid, that are mostly tissue."""
        table = np.zeros((tissue.shape[0] + 1, tissue.shape[1] + 1))
        table[1:, 1:] = tissue.astype(np.float64).cumsum(0).cumsum(1)
        usable_h = (tissue.shape[0] // self.step) * self.step
        usable_w = (tissue.shape[1] // self.step) * self.step
        ys = np.arange(0, usable_h - TILE + 1, self.step)
        xs = np.arange(0, usable_w - TILE + 1, self.step)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        inside = (table[yy + TILE, xx + TILE] - table[yy, xx + TILE]
                  - table[yy + TILE, xx] + table[yy, xx]) / TILE**2
        keep = inside >= MIN_TISSUE
        return np.stack([xx[keep], yy[keep]], axis=1)

    def tile(self, level: int, row: int, col: int) -> np.ndarray:
        """Return tile ``(row, col)`` of a level as a ``(TILE, TILE, 3)`` uint8 array."""
        factor = 2**level
        sub = TILE // factor
        src = self.sources[level]
        out = np.empty((TILE, TILE, 3), np.uint8)
        for i in range(factor):
            for j in range(factor):
                r, c = row * factor + i, col * factor + j
                x, y = self.origins[self.choice[r, c]] // factor
                block = src[y : y + sub, x : x + sub]
                code = self.transform[r, c]
                block = np.rot90(block, code % 4)
                if code >= 4:
                    block = block[:, ::-1]
                out[i * sub : (i + 1) * sub, j * sub : (j + 1) * sub] = block
        return out


class _Progress:
    """Count generated tiles and report every 5 % on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.every = max(1, total // 20)

    def tick(self, level: int) -> None:
        self.done += 1
        if self.done % self.every and self.done != self.total:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        log(f"  [build] level {level}: {self.done}/{self.total} tiles "
            f"({100 * self.done / self.total:.0f} %), {elapsed:.0f} s, ETA {eta:.0f} s")


def _level_tiles(mosaic: TissueMosaic, level: int, shape: tuple[int, int],
                 progress: _Progress) -> Iterator[np.ndarray]:
    """Yield the tiles of a level in row-major order, cropped at the right and bottom."""
    h, w = shape
    for row in range(math.ceil(h / TILE)):
        for col in range(math.ceil(w / TILE)):
            tile = mosaic.tile(level, row, col)
            progress.tick(level)
            yield tile[: min(TILE, h - row * TILE), : min(TILE, w - col * TILE)]


def load_source(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read the source slide's level 0 and its tissue mask (napari-dfl's own detector)."""
    from napari_dfl.core.slides.tiff import Slide
    from napari_dfl.core.slides.tissue import detect_tissue

    with Slide(path) as slide:
        image = slide.read_level(0)
        mask = detect_tissue(slide)
    tissue = mask.mask
    if tissue.shape != image.shape[:2]:  # mask computed on an overview: scale it up
        ry = np.minimum((np.arange(image.shape[0]) / mask.downsample).astype(int),
                        tissue.shape[0] - 1)
        rx = np.minimum((np.arange(image.shape[1]) / mask.downsample).astype(int),
                        tissue.shape[1] - 1)
        tissue = tissue[np.ix_(ry, rx)]
    return image, tissue


def mosaic_path(workdir: Path, size: int, digest: str) -> Path:
    """Cache path of the mosaic of this size and layout digest."""
    return workdir / f"mosaic_{size}px_t{TILE}_q{JPEG_QUALITY}_v{BUILD_VERSION}_{digest}.tif"


def build_mosaic(source: Path, size: int, workdir: Path) -> tuple[Path, float | None]:
    """Build the pyramidal JPEG TIFF unless cached; return its path and the build seconds.

    The cache key holds a digest of the source pixels and of the layout (which depends on
    napari-dfl's tissue detector), so a change in either builds a new file; older mosaics
    of the same size in ``workdir`` are then deleted.
    """
    import tifffile

    start = time.perf_counter()
    shapes = pyramid_shapes(size)
    image, tissue = load_source(source)
    grid = max(math.ceil(h / TILE) * 2**k for k, (h, _) in enumerate(shapes))
    mosaic = TissueMosaic(image, tissue, len(shapes), (grid, grid))
    path = mosaic_path(workdir, size, mosaic.digest())
    if path.exists():
        log(f"[build] reusing {path}")
        return path, None
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in workdir.glob("mosaic_*.tif"):  # older builds of this size (any version)
        if re.fullmatch(rf"mosaic_(.+_)?{size}px_.*\.tif", stale.name):
            log(f"[build] removing stale {stale.name}")
            stale.unlink(missing_ok=True)
    log(f"[build] {size} x {size} px, {len(shapes)} levels -> {path}")
    log(f"[build] {len(mosaic.origins)} tissue crops of {TILE} px in {source.name}")
    total = sum(math.ceil(h / TILE) * math.ceil(w / TILE) for h, w in shapes)
    progress = _Progress(total)
    options = {
        "dtype": np.uint8,
        "tile": (TILE, TILE),
        "photometric": "rgb",  # RGB in; tifffile stores JPEG as YCbCr 4:2:0, like scanners
        "compression": "jpeg",
        "compressionargs": {"level": JPEG_QUALITY},
        "resolutionunit": "CENTIMETER",
        "metadata": None,
        "buffersize": 32 * 2**20,  # tiles batched for the encoder threads (default 512 MiB)
    }
    partial = path.with_name(path.name + f".{os.getpid()}.partial")
    try:
        with tifffile.TiffWriter(partial, bigtiff=True) as tif:
            for level, (h, w) in enumerate(shapes):
                pixels_per_cm = 1e4 / (MPP * 2**level)
                tif.write(
                    _level_tiles(mosaic, level, (h, w), progress),
                    shape=(h, w, 3),
                    resolution=(pixels_per_cm, pixels_per_cm),
                    subifds=len(shapes) - 1 if level == 0 else None,
                    subfiletype=0 if level == 0 else 1,
                    **options,
                )
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - start
    log(f"[build] done in {seconds:.1f} s, {path.stat().st_size / 2**20:.0f} MB")
    return path, seconds


# -- measurements (each runs in a fresh process) ---------------------------------------------


def rss_mb() -> float:
    """Resident memory of this process in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def worker_open(path: Path) -> dict:
    """Time ``Slide(path)`` and its RSS growth, after the imports, in this fresh process."""
    from napari_dfl.core.slides.tiff import Slide

    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    slide = Slide(path)
    seconds = time.perf_counter() - start
    after = rss_mb()
    start = time.perf_counter()
    Slide(path).close()
    warm = time.perf_counter() - start
    return {"open_s": seconds, "open_warm_s": warm, "open_rss_mb": after - before,
            "width": slide.dimensions[0], "height": slide.dimensions[1],
            "levels": len(slide.levels), "file_levels": len(slide._zarr_levels),
            "mpp": slide.mpp}


def worker_read(path: Path, reads: int, seed: int, warmup: int = 10) -> dict:
    """Time the same random 512 px level-0 reads through ``Slide`` and through tifffile."""
    import tifffile
    import zarr

    from napari_dfl.core.slides.tiff import Slide

    slide = Slide(path)
    direct = zarr.open_array(tifffile.TiffFile(path).series[0].aszarr(level=0), mode="r")
    width, height = slide.dimensions
    rng = np.random.default_rng(seed)
    xs = rng.integers(0, width - TILE + 1, warmup + reads)
    ys = rng.integers(0, height - TILE + 1, warmup + reads)
    slide_first = rng.random(warmup + reads) < 0.5

    def via_slide(x: int, y: int) -> np.ndarray:
        return slide.read_region((x, y), (TILE, TILE))

    def via_tifffile(x: int, y: int) -> np.ndarray:
        return np.asarray(direct[y : y + TILE, x : x + TILE])

    times = {"slide": [], "tifffile": []}
    mismatches = 0
    gc.collect()
    rss_before = rss_mb()
    for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist(), strict=True)):
        order = ("slide", "tifffile") if slide_first[i] else ("tifffile", "slide")
        results = {}
        for name in order:
            func = via_slide if name == "slide" else via_tifffile
            start = time.perf_counter()
            results[name] = func(x, y)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[name].append(elapsed * 1e3)
        mismatches += not np.array_equal(results["slide"], results["tifffile"])
    rss_growth = rss_mb() - rss_before
    slide_ms, direct_ms = np.array(times["slide"]), np.array(times["tifffile"])
    return {
        "read_p50_ms": float(np.percentile(slide_ms, 50)),
        "read_p95_ms": float(np.percentile(slide_ms, 95)),
        "tifffile_p50_ms": float(np.percentile(direct_ms, 50)),
        "tifffile_p95_ms": float(np.percentile(direct_ms, 95)),
        "read_ratio": float(np.percentile(slide_ms, 50) / np.percentile(direct_ms, 50)),
        "read_mismatches": int(mismatches),
        "read_rss_mb": rss_growth,
    }


def worker_napari(path: Path) -> dict:
    """Time adding the slide's levels to a hidden napari viewer as one multiscale layer."""
    import napari

    from napari_dfl.core.slides.tiff import Slide

    slide = Slide(path)
    start = time.perf_counter()
    viewer = napari.Viewer(show=False)
    viewer_s = time.perf_counter() - start
    start = time.perf_counter()
    layer = viewer.add_image(slide.level_arrays, multiscale=True, rgb=True,
                             contrast_limits=(0, 255))
    add_s = time.perf_counter() - start
    result = {"napari_add_s": add_s, "napari_viewer_s": viewer_s,
              "napari_levels": len(layer.data)}
    viewer.close()
    return result


WORKERS = {"open": worker_open, "read": worker_read, "napari": worker_napari}


def run_worker(kind: str, path: Path, *extra: str, timeout: float = 600) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind,
               "--workdir", str(path.parent), "--file", str(path), *extra]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"),
                                                      env.get("PYTHONPATH")]))
    display = "display"
    if kind == "napari" and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        if shutil.which("xvfb-run"):
            command = ["xvfb-run", "-a", "-s", "-screen 0 1280x1024x24", *command]
            display = "xvfb"
        else:  # the viewer is never shown, so the offscreen platform is enough here
            env["QT_QPA_PLATFORM"] = "offscreen"
            display = "offscreen"
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} measurement failed (exit {done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    result = json.loads(lines[-1])
    if kind == "napari":
        result["napari_display"] = display
    return result


# -- driver -------------------------------------------------------------------------------


def _median_of(runs: list[dict], key: str) -> float:
    return float(np.median([run[key] for run in runs]))


def _table(result: dict) -> str:
    rows = [
        ("file", f"{result['width']} x {result['height']} px, {result['levels']} levels, "
                 f"{result['file_mb']:.0f} MB"),
        ("build", "cached" if result["build_s"] is None else f"{result['build_s']:.1f} s"),
        ("open_s", f"{result['open_s']:.4f} s (again in the same process "
                   f"{result['open_warm_s']:.4f} s)"),
        ("open_rss_mb", f"{result['open_rss_mb']:.1f} MB"),
        ("read Slide", f"p50 {result['read_p50_ms']:.2f} ms, p95 {result['read_p95_ms']:.2f} ms"),
        ("read tifffile", f"p50 {result['tifffile_p50_ms']:.2f} ms, "
                          f"p95 {result['tifffile_p95_ms']:.2f} ms"),
        ("read_ratio", f"{result['read_ratio']:.3f} ({result['reads']} reads, "
                       f"{result['read_mismatches']} mismatches)"),
        ("read_rss_mb", f"{result['read_rss_mb']:.1f} MB (RSS growth over the reads)"),
        ("napari_add_s", f"{result['napari_add_s']:.3f} s, {result['napari_levels']} levels "
                         f"({result['napari_display']})"),
    ]
    for key, target in TARGETS.items():
        verdict = "pass" if result["pass"][key] else "FAIL"
        bound = "<=" if key == "read_ratio" else "<"
        rows.append((f"target {key}", f"{bound} {target}: {verdict}"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


def _passes(result: dict) -> dict:
    return {
        "open_s": result["open_s"] < TARGETS["open_s"],
        "open_rss_mb": result["open_rss_mb"] < TARGETS["open_rss_mb"],
        "read_ratio": result["read_ratio"] <= TARGETS["read_ratio"],
    }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000,
                        help="side of the mosaic in pixels (default 50000; smaller values "
                             "make a quick smoke run)")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"where the mosaic is built and cached (default {DEFAULT_WORKDIR})")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="slide whose tissue is mosaicked (default: the bundled sample)")
    parser.add_argument("--reads", type=int, default=200, help="timed reads (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the read positions")
    parser.add_argument("--open-runs", type=int, default=3,
                        help="fresh processes timing the open; the median is reported")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 when a target is missed")
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size < 2 * TILE:
        parser.error(f"--size must be at least {2 * TILE}")
    if args.reads < 1:
        parser.error("--reads must be at least 1")
    workdir = args.workdir.resolve()
    if workdir == REPO or REPO in workdir.parents:
        parser.error(f"--workdir {workdir} is inside the repository; pick a folder outside it")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build (or reuse) the mosaic, run the measurements and print the results."""
    args = _parse_args(argv)
    if args.worker:
        worker_args = {"read": (args.reads, args.seed)}.get(args.worker, ())
        result = WORKERS[args.worker](args.file, *worker_args)
        print(json.dumps(result))
        return 0

    path, build_s = build_mosaic(args.source, args.size, args.workdir.resolve())
    log(f"[open] {args.open_runs} fresh processes")
    opens = [run_worker("open", path) for _ in range(args.open_runs)]
    log(f"[read] {args.reads} random {TILE} px reads, Slide vs tifffile, interleaved")
    reads = run_worker("read", path, "--reads", str(args.reads), "--seed", str(args.seed))
    log("[napari] add_image in a hidden viewer")
    napari_result = run_worker("napari", path)

    result = {
        "width": opens[0]["width"],
        "height": opens[0]["height"],
        "levels": opens[0]["levels"],
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "build_s": None if build_s is None else round(build_s, 1),
        "open_s": round(_median_of(opens, "open_s"), 4),
        "open_warm_s": round(_median_of(opens, "open_warm_s"), 4),
        "open_rss_mb": round(_median_of(opens, "open_rss_mb"), 2),
        **{key: round(value, 3) if isinstance(value, float) else value
           for key, value in reads.items()},
        "reads": args.reads,
        "seed": args.seed,
        **{key: round(value, 3) if isinstance(value, float) else value
           for key, value in napari_result.items()},
        "path": str(path),
        "targets": TARGETS,
    }
    result["read_ratio"] = round(reads["read_ratio"], 3)
    result["pass"] = _passes(result)
    log(_table(result))
    print(json.dumps(result), flush=True)
    return 0 if not args.check or all(result["pass"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
