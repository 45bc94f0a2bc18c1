"""Embedding many slides: one task per slide, serially or on a dask.distributed cluster.

A slide that cannot be read is reported and skipped; the others finish. Each task opens its
slide, lays the tissue grid and embeds it with a
:class:`~napari_dfl.workflows.embedding.local.LocalEmbedder` into the slide's store, so a rerun
resumes where the last one stopped and the panel finds the store afterwards.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.engine import EmbedProgress, configure_torch_threads
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.workflows.embedding.local import LocalEmbedder
from napari_dfl.workflows.predict import prediction_grid

__all__ = ["embed_slide_file", "embed_slides", "parse_scheduler"]


def embed_slide_file(slide_path: str | os.PathLike, settings: Settings,
                     on_progress: Callable[[EmbedProgress], None] | None = None) -> dict:
    """Embed the tissue tiles of one slide file; never raises for a bad slide.

    Returns:
        A report: ``slide``, ``status`` (``"ok"``, ``"empty"`` when the slide has no tile
        with the minimum tissue, or ``"error"``), ``store``, ``samples``, ``computed``,
        ``seconds`` and ``error`` (a one-line message, or None).

    """
    started = time.perf_counter()
    report = {"slide": str(slide_path), "status": "error", "store": None, "samples": 0,
              "computed": 0, "seconds": 0.0, "error": None}
    try:
        configure_torch_threads(settings.torch_threads)
        embedder = LocalEmbedder(settings)
        with open_slide(slide_path, mpp=settings.mpp) as slide:
            grid = prediction_grid(slide, settings)
            store = embedder.known_store(slide)
            report["store"] = str(store.path)
            progress = None
            for progress in embedder.embed(slide, grid.coords):
                if on_progress is not None:
                    on_progress(progress)
            report.update(status="ok" if len(grid) else "empty",
                          samples=progress.total if progress else 0,
                          computed=progress.computed if progress else 0)
            if not len(grid):
                report["error"] = (f"no tile has {settings.min_tissue:g} tissue or more: "
                                   "nothing was embedded (lower --min-tissue)")
    except DFLError as exc:
        report["error"] = str(exc)
    except Exception as exc:  # a task must report, not take the whole batch down
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


def embed_slides(
    slide_paths: Iterable[str | os.PathLike],
    settings: Settings,
    scheduler: str | None = None,
    on_report: Callable[[dict], None] | None = None,
    on_progress: Callable[[EmbedProgress], None] | None = None,
) -> list[dict]:
    """Embed every slide; serially, or one dask task per slide when a scheduler is given.

    Args:
        slide_paths: the slides.
        settings: extractor, store folder and extraction settings shared by all slides.
        scheduler: None (serial, in this process), ``"local:N"`` (a LocalCluster of N
            single-threaded worker processes) or a scheduler address (``tcp://host:8786``).
        on_report: called with each slide's report as it finishes.
        on_progress: serial mode only: called with each slide's progress.

    Returns:
        The reports, in the order of ``slide_paths``.

    """
    paths = [str(p) for p in slide_paths]
    settings.stores.mkdir(parents=True, exist_ok=True)
    if scheduler is None:
        reports = []
        for path in paths:
            reports.append(embed_slide_file(path, settings, on_progress))
            if on_report is not None:
                on_report(reports[-1])
        return reports
    return _embed_distributed(paths, settings, scheduler, on_report)


def _embed_distributed(paths: list[str], settings: Settings, scheduler: str,
                       on_report: Callable[[dict], None] | None) -> list[dict]:
    from distributed import Client, LocalCluster, as_completed  # only for cluster runs

    address, workers = parse_scheduler(scheduler)
    cluster = None
    if address == "local":
        workers = workers or max(1, (os.cpu_count() or 2) // 2)
        threads = max(1, (os.cpu_count() or 1) // workers)
        if settings.torch_threads is None:
            settings = replace(settings, torch_threads=threads)
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
    try:
        with Client(cluster if cluster is not None else address) as client:
            futures = {client.submit(embed_slide_file, path, settings, pure=False,
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
