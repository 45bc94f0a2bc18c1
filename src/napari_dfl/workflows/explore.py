"""Projecting tile embeddings to 2-D: in a child for UMAP (the panel), headless for the CLI.

UMAP's numba compilation and threads stay out of the GUI process: the panel's projection
runs in a spawned child (:func:`projection_job`), which caches the result beside each store
(:mod:`napari_dfl.core.explorer.projection`) so that reopening is instant.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import Cancelled, DFLError, one_line
from napari_dfl.core.explorer.projection import project_store_paths, project_stores, save_scatter
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import slide_name, store_extractor
from napari_dfl.core.heads.head_files import check_compatible, load_head
from napari_dfl.core.util.atomic import atomic_path
from napari_dfl.core.util.process import exit_with_parent
from napari_dfl.workflows.embedding.local import CancelCheck
from napari_dfl.workflows.jobs import Event

__all__ = ["project_store_files", "projection_job"]


def _projection_child(paths: list[str], method: str, results) -> None:
    """Child process: project stores together (cached with them); put the parts or an error."""
    exit_with_parent()  # a killed panel leaves no projection running
    try:
        results.put(("ok", project_store_paths(paths, method)))
    except BaseException as exc:  # report everything: the parent must learn why
        results.put(("error", one_line(exc)))


def projection_job(store_paths: list[str], method: str, cancel: CancelCheck,
                   ) -> Generator[Event, None, list[np.ndarray]]:
    """Project stores in a spawned child; yields ``("waiting", seconds)`` while it runs.

    Returns the ``(N_i, 2)`` coordinates of each store. Cancel stops the child at once
    (nothing partial is cached).
    """
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    child = ctx.Process(target=_projection_child, args=(list(store_paths), method, results),
                        name="napari-dfl-projection", daemon=True)
    child.start()
    start = time.monotonic()
    try:
        while True:
            if cancel():
                raise Cancelled(f"{method.upper()} projection cancelled.")
            try:
                status, value = results.get(timeout=0.2)
            except queue.Empty:
                if not child.is_alive():
                    raise DFLError(f"the {method.upper()} process ended unexpectedly "
                                   f"(exit code {child.exitcode}).") from None
                yield "waiting", time.monotonic() - start
                continue
            if status == "error":
                raise DFLError(value)
            return value
    finally:
        if child.is_alive():
            child.terminate()
        child.join(2.0)


def project_store_files(paths: Sequence[str | os.PathLike], method: str,
                        out: str | os.PathLike, *, head_path: str | os.PathLike | None = None,
                        seed: int = 0) -> Path:
    """Project stores together; write a coordinates CSV per store and one scatter PNG.

    Points are coloured by the class ``head_path``'s head predicts, else by slide.

    Returns:
        The scatter PNG.

    Raises:
        DFLError: unreadable stores, stores of different extractors, or a head that does
            not fit them.

    """
    stores = [EmbeddingStore.open(path) for path in paths]
    parts = project_stores(stores, method, seed)
    head = None
    if head_path is not None:
        head, card = load_head(head_path)
        for store in stores:
            check_compatible(card, store_extractor(store))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = []
    for store, xy in zip(stores, parts, strict=True):
        name = slide_name(store)
        names = (np.asarray(head.classes)[head.predict(store.embeddings())] if head
                 else np.full(len(store), name))
        labels.append(names)
        with atomic_path(out / f"{Path(name).stem}.projection.csv") as tmp, \
                open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["x", "y", f"{method}_1", f"{method}_2", "label"])
            for (x, y), (u, v), label in zip(store.coords, xy, names, strict=True):
                writer.writerow([int(x), int(y), f"{u:.5f}", f"{v:.5f}", label])
    return save_scatter(np.concatenate(parts), np.concatenate(labels), out / "projection.png",
                        title=f"{method.upper()} of {sum(map(len, stores))} tiles")
