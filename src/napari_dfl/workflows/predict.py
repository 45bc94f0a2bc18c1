"""Whole-slide prediction with a head: one loop for the panel and the CLI.

Tiles whose embeddings are already stored are predicted at once; the rest are embedded (in
this process or in the extraction child, whichever the embedder does) and predicted batch
by batch as they are committed, so an overlay can fill in while the slide is computed. The
panel embeds the tiles nearest to the view's centre first; the CLI in the order that reads
the slide fastest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.head_files import check_compatible, head_extractor, load_head
from napari_dfl.core.heads.prediction_files import output_stems, save_prediction
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.core.slides.tissue import TileGrid, tile_grid
from napari_dfl.workflows.embedding.local import CancelCheck, Embedder, LocalEmbedder
from napari_dfl.workflows.jobs import Event, run

if TYPE_CHECKING:  # torch: the panel imports this module when it opens
    from napari_dfl.core.heads.model import TrainedHead

__all__ = ["predict_slide_files", "predict_tiles", "prediction_grid", "view_first"]


def view_first(coords: np.ndarray, tile_size: float,
               centre_xy: tuple[float, float] | None) -> np.ndarray:
    """Tile anchors sorted by distance from ``centre_xy``: the field of view fills in first."""
    if centre_xy is None or not len(coords):
        return coords
    centres = coords + tile_size / 2.0
    distance = np.hypot(centres[:, 0] - centre_xy[0], centres[:, 1] - centre_xy[1])
    return coords[np.argsort(distance, kind="stable")]


def prediction_grid(slide, settings: Settings) -> TileGrid:
    """The tiles a prediction covers: the working grid, tiles with ``min_tissue`` tissue."""
    composition = settings.composition
    return tile_grid(slide, composition.patch_size, composition.zooms[0],
                     min_tissue=settings.min_tissue)


def predict_tiles(slide, head: TrainedHead, grid: TileGrid, embedder: Embedder, *,
                  cancel: CancelCheck | None = None,
                  centre_xy: tuple[float, float] | None = None,
                  ) -> Generator[Event, None, TilePrediction]:
    """Predict every tile of ``grid``, embedding what the store lacks on the way.

    Yields ``("prediction", TilePrediction)`` once (the empty prediction to fill), then
    ``("proba", (coords, proba))`` for the stored tiles and for every committed batch,
    and the embedder's ``("embedding", progress)``.

    Args:
        slide: the open slide.
        head: the trained head; the embedder's settings must be its extractor's.
        grid: the tiles to predict.
        embedder: where missing embeddings are computed.
        cancel: checked between batches; what was predicted stays in the prediction.
        centre_xy: level-0 point whose tiles are embedded first (None: reading order).

    Returns:
        The prediction (complete unless cancelled, which raises).

    """
    prediction = TilePrediction.empty(grid, head.classes)
    yield "prediction", prediction
    store = embedder.known_store(slide)
    missing = grid.coords
    if store is not None:
        if store.dim != head.input_dim:
            raise DFLError(
                f"the head expects {head.input_dim}-dimensional embeddings but the store "
                f"holds {store.dim}: train again with this backbone and composition.")
        rows = store.lookup(grid.coords)
        stored = rows >= 0
        if stored.any():
            done = grid.coords[stored]
            proba = head.predict_proba(store.embeddings(rows[stored]))
            prediction.update(done, proba)
            yield "proba", (done, proba)
        missing = grid.coords[~stored]
    if not len(missing):
        return prediction
    order = "spatial" if centre_xy is None else "given"
    progress = embedder.embed(slide, view_first(missing, grid.tile_size, centre_xy), cancel,
                              order)
    try:
        while True:
            try:
                step = next(progress)
            except StopIteration as stop:
                store = stop.value
                break
            yield "embedding", step
            if len(step.committed):
                store = embedder.known_store(slide)
                proba = head.predict_proba(store.get(step.committed))
                prediction.update(step.committed, proba)
                yield "proba", (step.committed, proba)
    finally:
        progress.close()
    left = ~prediction.predicted  # tiles the store held that this run did not know of
    if left.any():
        proba = head.predict_proba(store.get(grid.coords[left]))
        prediction.update(grid.coords[left], proba)
        yield "proba", (grid.coords[left], proba)
    return prediction


def predict_slide_files(paths: Sequence[str | os.PathLike], head_path: str | os.PathLike,
                        out: str | os.PathLike, *, settings: Settings | None = None,
                        on_event: Callable[[str, object], None] | None = None,
                        on_done: Callable[[str, dict | None, str | None], None] | None = None,
                        ) -> int:
    """Predict slide files with a head folder and write their outputs; the failures' count.

    The backbone and composition are the head's; ``settings`` give the weights file (for a
    backbone loaded from one), the store folder, device, minimum tissue and mpp.

    Args:
        paths: the slide files.
        head_path: a head folder (``train`` wrote it).
        out: the output folder (arrays, QuPath GeoJSON, overlay PNG, a JSON summary each,
            named by :func:`~napari_dfl.core.heads.prediction_files.output_stems`: slides
            of the same name in different folders do not overwrite each other's).
        settings: run settings; their backbone and composition are replaced by the head's.
        on_event: called with every event of each slide's prediction.
        on_done: called per slide with its path and either its summary or an error text.

    Raises:
        DFLError: the head cannot be read, or its backbone cannot be loaded or does not
            fit it (nothing can be predicted then).

    """
    head, card = load_head(head_path)
    trained = head_extractor(card)
    settings = (settings or Settings()).with_(backbone=trained.name,
                                              composition=trained.composition)
    embedder = LocalEmbedder(settings)
    check_compatible(card, Extractor.of(embedder.backbone, settings.composition))
    failed = 0
    for path, stem in zip(paths, output_stems(paths), strict=True):
        try:
            summary = _predict_file(path, head, card, settings, embedder, out, on_event, stem)
        except DFLError as exc:
            failed += 1
            if on_done is not None:
                on_done(str(path), None, str(exc))
            continue
        if on_done is not None:
            on_done(str(path), summary, None)
    return failed


def _predict_file(path, head, card, settings, embedder, out, on_event, stem) -> dict:
    with open_slide(path, mpp=settings.mpp) as slide:
        grid = prediction_grid(slide, settings)
        if not len(grid):
            raise DFLError(f"{Path(path).name} has no tile with at least "
                           f"{settings.min_tissue:g} tissue: nothing to predict (lower "
                           "--min-tissue).")
        prediction = run(predict_tiles(slide, head, grid, embedder), on_event)
        files = save_prediction(prediction, slide, out, stem=stem, colors=card.get("colors"))
    return {"predicted": int(prediction.predicted.sum()), "counts": prediction.counts(),
            **files}
