"""Projecting tile embeddings to 2-D: in a child for UMAP (the panel), headless for the CLI.

UMAP's numba compilation and threads stay out of the GUI process: the panel's projection
runs in the long-lived child of :mod:`napari_dfl.workflows.projection_service`
(:func:`projection_job`), which caches the result beside each store
(:mod:`napari_dfl.core.explorer.projection`) so that reopening is instant.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Generator, Sequence
from pathlib import Path

import numpy as np

from napari_dfl.core.explorer.projection import project_stores, save_scatter
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import slide_name, store_extractor
from napari_dfl.core.heads.head_files import check_compatible, load_head
from napari_dfl.core.util.atomic import atomic_path
from napari_dfl.workflows.embedding.local import CancelCheck
from napari_dfl.workflows.jobs import Event
from napari_dfl.workflows.projection_service import shared_projection_service

__all__ = ["project_store_files", "projection_job"]


def projection_job(store_paths: list[str], method: str, cancel: CancelCheck,
                   ) -> Generator[Event, None, list[np.ndarray]]:
    """Project stores in the process's projection child; yields ``("waiting", seconds)``.

    Returns the ``(N_i, 2)`` coordinates of each store. Cancel stops the child at once
    (nothing partial is cached); the next projection starts a new one.
    """
    return (yield from shared_projection_service().project(store_paths, method, cancel))


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
