"""Predicting one slide's label with a slide model (the panel's and the CLI's core; no Qt).

A slide model records the extractor of its training stores. For one slide this module says
whether chosen settings can feed the model (:func:`extractor_problem`), lists the tissue
tiles the model is applied to (:func:`slide_tiles`) and predicts the slide from their
embeddings (:func:`predict_slide_label`), giving the class probabilities and the attention
of every tile, placed on the tile grid (:meth:`SlideLabelPrediction.attention_grid`).
Finding the slide's store is :func:`napari_dfl.core.features.store_folder.find_store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.store import EmbeddingStore, StoreError
from napari_dfl.core.features.store_folder import store_extractor
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.slides.tissue import TileGrid, tile_grid

if TYPE_CHECKING:  # the model module imports torch: the panel imports this one at start-up
    from napari_dfl.core.slide_level.model import SlideModel

__all__ = [
    "DEFAULT_MIN_TISSUE",
    "SlideLabelPrediction",
    "SlidePredictionError",
    "extractor_problem",
    "grid_embeddings",
    "predict_slide_label",
    "slide_tiles",
]

#: Tissue share of a tile when the caller asks for 0: slide models are trained on tissue
#: tiles (``napari-dfl embed``'s default), never on glass.
DEFAULT_MIN_TISSUE = 0.5


class SlidePredictionError(DFLError):
    """A slide cannot be predicted with this model; the message says what to change."""


def extractor_problem(model_extractor: Extractor, chosen: Extractor) -> str | None:
    """What to set so that ``chosen`` settings feed the model, or None when they do.

    Args:
        model_extractor: the extractor the slide model was trained on.
        chosen: the extractor the panel's (or the CLI's) settings choose.

    """
    differences = model_extractor.differences(chosen)
    if not differences:
        return None
    return (f"the slide model was trained on embeddings of {model_extractor.describe()}; "
            f"the settings choose {chosen.describe()} ({', '.join(differences)}). Set the "
            "model's backbone and composition under 'Backbone and composition' and predict "
            "again.")


def slide_tiles(slide, composition: Composition, min_tissue: float) -> TileGrid:
    """The tissue tiles a slide model is applied to: the composition's grid.

    Args:
        slide: the slide (with its mpp).
        composition: its patch size and first zoom give the grid.
        min_tissue: minimum tissue share of a tile; 0 uses :data:`DEFAULT_MIN_TISSUE`.

    Raises:
        SlidePredictionError: the slide has no such tile.

    """
    share = min_tissue if min_tissue > 0 else DEFAULT_MIN_TISSUE
    grid = tile_grid(slide, composition.patch_size, composition.zooms[0], min_tissue=share)
    if not len(grid):
        raise SlidePredictionError(f"{Path(slide.path).name} has no tile with at least "
                                   f"{share:g} tissue: lower 'min tissue'.")
    return grid


@dataclass
class SlideLabelPrediction:
    """A slide model's prediction for one slide.

    Attributes:
        slide: the slide's file name.
        classes: class names in output order.
        proba: ``(C,)`` class probabilities.
        attention: ``(N,)`` attention of the grid's tiles (sums to 1).
        grid: the tiles, in the order of ``attention``.

    """

    slide: str
    classes: list[str]
    proba: np.ndarray
    attention: np.ndarray
    grid: TileGrid

    @property
    def prediction(self) -> str:
        """The most probable class."""
        return self.classes[int(np.argmax(self.proba))]

    def attention_grid(self, fill: float = np.nan) -> np.ndarray:
        """``(rows, cols)`` float32 attention on the tile grid, ``fill`` off the tiles."""
        return self.grid.to_grid(self.attention.astype(np.float32), fill).astype(np.float32)


def grid_embeddings(model, store: EmbeddingStore, grid: TileGrid) -> np.ndarray:
    """The embeddings of ``grid``'s tiles in ``store``, checked against the model's extractor.

    Args:
        model: a slide model (classifier or multi-target) with its ``extractor``.
        store: the slide's store.
        grid: the tiles to predict from.

    Raises:
        SlidePredictionError: the store was written by another extractor than the model's,
            or lacks some of the tiles.

    """
    try:
        found = store_extractor(store)
    except StoreError as exc:
        raise SlidePredictionError(str(exc)) from None
    differences = model.extractor.differences(found) if model.extractor is not None else []
    if differences:
        raise SlidePredictionError(
            f"{Path(store.path).name} holds embeddings of {found.describe()} but the model "
            f"needs those of {model.extractor.describe()} ({', '.join(differences)}): set "
            "those and predict again.")
    missing = int(store.missing(grid.coords).sum())
    if missing:
        raise SlidePredictionError(f"{missing} of the slide's {len(grid)} tiles are not "
                                   "embedded yet: predict again to extract them.")
    return store.get(grid.coords)


def predict_slide_label(model: SlideModel, store: EmbeddingStore, grid: TileGrid,
                        slide: str) -> SlideLabelPrediction:
    """Predict a slide from the embeddings of ``grid``'s tiles in ``store``.

    Raises:
        SlidePredictionError: see :func:`grid_embeddings`.

    """
    proba, attention = model.predict_embeddings(grid_embeddings(model, store, grid))
    return SlideLabelPrediction(slide, list(model.classes), proba, attention, grid)
