"""Embedding many slides: one task per slide, serially or on a dask.distributed cluster.

A slide that cannot be read is reported and skipped; the others finish. Each task opens its
slide, lays the tissue grid, and runs :func:`napari_dfl.core.features.engine.embed_coords` into the
slide's store, so a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from napari_dfl.core.errors import DFLError
from napari_dfl.core.slides.sampling import Composition


@dataclass(frozen=True)
class EmbedConfig:
    """Everything an extraction task needs besides the slide.

    Attributes:
        backbone: registry name (or timm architecture name with ``weights``).
        weights: local weights file, or None for the preset's source.
        composition: patch size, zooms and colour variants.
        min_tissue: minimum tissue fraction of a grid tile.
        batch_size: samples per forward batch.
        readers: patch-cutting threads.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or None for automatic.
        precision: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        torch_threads: cap on torch's threads per task (None: torch's default).
        mpp: level-0 microns per pixel for slides whose metadata has none.

    """

    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    composition: Composition = field(default_factory=Composition)
    min_tissue: float = 0.5
    batch_size: int = 8
    readers: int = 2
    device: str | None = None
    precision: str = "auto"
    torch_threads: int | None = None
    mpp: float | None = None


_BACKBONES: dict[tuple, object] = {}


def cached_backbone(config: EmbedConfig):
    """Load the configured backbone once per process (dask workers reuse it across slides)."""
    from napari_dfl.core.backbones.backbone import load_backbone

    key = (config.backbone, config.weights, config.device, config.precision)
    if key not in _BACKBONES:
        _BACKBONES[key] = load_backbone(config.backbone, weights=config.weights,
                                        device=config.device, precision=config.precision)
    return _BACKBONES[key]


def embed_slide_file(
    slide_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: EmbedConfig,
    on_progress: Callable | None = None,
) -> dict:
    """Embed the tissue tiles of one slide file; never raises for a bad slide.

    Returns:
        A report: ``slide``, ``status`` (``"ok"`` or ``"error"``), ``store``, ``samples``,
        ``computed``, ``seconds`` and ``error`` (a one-line message, or None).

    """
    from napari_dfl.core.features.engine import (
        configure_torch_threads,
        embed_coords,
        open_store_for,
    )
    from napari_dfl.core.slides.image import open_slide
    from napari_dfl.core.slides.tissue import tile_grid

    started = time.perf_counter()
    report = {"slide": str(slide_path), "status": "error", "store": None, "samples": 0,
              "computed": 0, "seconds": 0.0, "error": None}
    try:
        configure_torch_threads(config.torch_threads)
        backbone = cached_backbone(config)
        with open_slide(slide_path, mpp=config.mpp) as slide:
            grid = tile_grid(slide, config.composition.patch_size, config.composition.zooms[0],
                             min_tissue=config.min_tissue)
            store = open_store_for(slide, backbone, config.composition, out_dir)
            report["store"] = str(store.path)
            progress = None
            for progress in embed_coords(slide, grid.coords, backbone, config.composition,
                                         store, batch_size=config.batch_size,
                                         readers=config.readers):
                if on_progress is not None:
                    on_progress(progress)
            report.update(status="ok", samples=progress.total if progress else 0,
                          computed=progress.computed if progress else 0)
    except DFLError as exc:
        report["error"] = str(exc)
    except Exception as exc:  # a task must report, not take the cohort down
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
    report["seconds"] = round(time.perf_counter() - started, 3)
    return report


def parse_scheduler(spec: str) -> tuple[str, int | None]:
    """``"local:N"`` -> ``("local", N)``; anything else is a scheduler address."""
    if spec == "local" or spec.startswith("local:"):
        count = spec.partition(":")[2]
        if count and (not count.isdigit() or int(count) < 1):
            raise DFLError(f"--scheduler local:N needs a positive worker count, got {spec!r}.")
        return "local", int(count) if count else None
    return spec, None


def embed_cohort(
    slide_paths: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: EmbedConfig,
    scheduler: str | None = None,
    on_report: Callable[[dict], None] | None = None,
    on_progress: Callable | None = None,
) -> list[dict]:
    """Embed every slide; serially, or one dask task per slide when a scheduler is given.

    Args:
        slide_paths: the slides.
        out_dir: folder receiving one store per slide.
        config: extraction settings shared by all slides.
        scheduler: None (serial, in this process), ``"local:N"`` (a LocalCluster of N
            single-threaded worker processes) or a scheduler address (``tcp://host:8786``).
        on_report: called with each slide's report as it finishes.
        on_progress: serial mode only: called with each slide's progress.

    Returns:
        The reports, in the order of ``slide_paths``.

    """
    paths = [str(p) for p in slide_paths]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    if scheduler is None:
        reports = []
        for path in paths:
            reports.append(embed_slide_file(path, out_dir, config, on_progress))
            if on_report is not None:
                on_report(reports[-1])
        return reports
    return _embed_distributed(paths, str(out_dir), config, scheduler, on_report)


def _embed_distributed(paths: list[str], out_dir: str, config: EmbedConfig, scheduler: str,
                       on_report: Callable[[dict], None] | None) -> list[dict]:
    from distributed import Client, LocalCluster, as_completed

    address, workers = parse_scheduler(scheduler)
    cluster = None
    if address == "local":
        workers = workers or max(1, (os.cpu_count() or 2) // 2)
        threads = max(1, (os.cpu_count() or 1) // workers)
        if config.torch_threads is None:
            config = EmbedConfig(**{**config.__dict__, "torch_threads": threads})
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    try:
        with Client(cluster if cluster is not None else address) as client:
            futures = {client.submit(embed_slide_file, path, out_dir, config, pure=False,
                                     key=f"embed-{i}-{Path(path).name}"): i
                       for i, path in enumerate(paths)}
            reports: list[dict | None] = [None] * len(paths)
            for future in as_completed(futures):
                report = future.result()
                reports[futures[future]] = report
                if on_report is not None:
                    on_report(report)
            return [r for r in reports if r is not None]
    finally:
        if cluster is not None:
            cluster.close()
