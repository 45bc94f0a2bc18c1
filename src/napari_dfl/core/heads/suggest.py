"""Active learning: the tiles where the head is least certain, spread over the slide.

After a prediction, the tiles whose two highest class probabilities are closest (smallest
margin) are where one more label teaches the head most. Suggestions skip tiles that are
already annotated and keep a minimum distance from each other, so that ten suggestions are
ten different places rather than one ragged border.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely

from napari_dfl.core.annotations.annotation import POINT, REGION, Annotation
from napari_dfl.core.heads.tile_prediction import TilePrediction
from napari_dfl.core.slides.tissue import TileGrid


def margins(proba: np.ndarray) -> np.ndarray:
    """``(N,)`` top-1 minus top-2 probability per row (NaN rows stay NaN; 1 class: 1)."""
    proba = np.asarray(proba, dtype=np.float64).reshape(len(proba), -1)
    if proba.shape[1] < 2:
        return np.where(np.isnan(proba[:, 0]), np.nan, 1.0)
    top2 = np.sort(proba, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def annotated_tiles(grid: TileGrid, annotations: Sequence[Annotation]) -> np.ndarray:
    """``(N,)`` bool: tiles holding a point annotation or centred inside a region."""
    out = np.zeros(len(grid), dtype=bool)
    if not len(grid):
        return out
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(grid.grid_index)}
    centres = grid.centers()
    for ann in annotations:
        if ann.kind == POINT:
            for x, y in ann.points():
                i = index.get((int(y // grid.tile_size), int(x // grid.tile_size)))
                if i is not None:
                    out[i] = True
        elif ann.kind == REGION:
            out |= shapely.contains_xy(ann.geometry, centres[:, 0], centres[:, 1])
    return out


def suggest_tiles(prediction: TilePrediction, n: int = 20,
                  exclude: np.ndarray | None = None, min_distance: float = 2.0) -> np.ndarray:
    """Indices of up to ``n`` predicted tiles to label next, least certain first.

    Args:
        prediction: a (possibly partial) prediction; unpredicted tiles are never suggested.
        n: how many suggestions at most.
        exclude: ``(N,)`` bool, tiles not to suggest (already annotated).
        min_distance: minimum distance between two suggestions, in tiles (0: none).

    Returns:
        ``(k,)`` int64 indices into the prediction's tiles, ``k <= n``.

    """
    margin = margins(prediction.proba)
    candidates = ~np.isnan(margin)
    if exclude is not None:
        candidates &= ~np.asarray(exclude, dtype=bool)
    order = np.flatnonzero(candidates)
    order = order[np.argsort(margin[order], kind="stable")]
    positions = prediction.grid.grid_index.astype(np.float64)
    chosen: list[int] = []
    for i in order:
        if len(chosen) >= n:
            break
        if chosen and min_distance > 0:
            gaps = np.hypot(*(positions[chosen] - positions[i]).T)
            if gaps.min() < min_distance:
                continue
        chosen.append(int(i))
    return np.asarray(chosen, dtype=np.int64)
