"""Predicting one open slide with a slide model (the napari panel's core; no Qt).

A slide model (:mod:`napari_dfl.core.slide_level.model`) records the extractor of its training
stores
(backbone identity, composition, dimension). For one slide this module finds the store that
extractor wrote (:func:`store_for_model`), says what to change when the panel's backbone or
composition differ (:func:`extractor_mismatch`), lists the tissue tiles the model is applied
to (:func:`slide_tiles`) and predicts them (:func:`predict_tiles`), giving the probabilities
and the attention placed on the tile grid (:meth:`SlidePredictionResult.attention_grid`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.features.store import EmbeddingStore, StoreError, store_path_for
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.core.slides.tissue import TileGrid, tile_grid

if TYPE_CHECKING:  # core.mil imports torch: the napari panel imports this module at start-up
    from napari_dfl.core.slide_level.model import SlideModel

__all__ = [
    "DEFAULT_MIN_TISSUE",
    "SlidePredictionResult",
    "describe_extractor",
    "extractor_mismatch",
    "predict_tiles",
    "slide_tiles",
    "store_for_model",
]

#: Tissue share of a tile when the caller asks for 0: slide models are trained on tissue
#: tiles (``napari-dfl embed``'s default), never on glass.
DEFAULT_MIN_TISSUE = 0.5


def _plain(value: object) -> object:
    """JSON round trip, so that tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def describe_extractor(extractor: dict) -> str:
    """One line: backbone name and composition of an extractor identity."""
    backbone = extractor.get("backbone")
    name = backbone.get("name") if isinstance(backbone, dict) else backbone
    comp = extractor.get("composition") or {}
    zooms = ", ".join(f"{float(z):g}" for z in comp.get("zooms") or [])
    variants = "+".join(comp.get("variants") or [])
    return (f"backbone {name}, patch {comp.get('patch_size')} px, zooms {zooms} µm/px, "
            f"{variants or 'no variants'}")


def extractor_mismatch(extractor: dict, backbone: str, composition: Composition) -> str | None:
    """What to set in the panel so that its stores match the model, or None when they do.

    Args:
        extractor: the model's extractor identity (``SlideModel.extractor``).
        backbone: the panel's backbone preset name.
        composition: the panel's composition.

    """
    want = extractor.get("backbone")
    want_name = want.get("name") if isinstance(want, dict) else want
    same_comp = _plain(extractor.get("composition")) == _plain(composition.to_dict())
    if want_name == backbone and same_comp:
        return None
    panel = describe_extractor({"backbone": backbone, "composition": composition.to_dict()})
    return (f"the slide model was trained on embeddings of {describe_extractor(extractor)}; "
            f"the panel uses {panel}. Set the model's backbone and composition under "
            "'Backbone and composition' and predict again.")


def store_for_model(extractor: dict, slide_path: str | os.PathLike,
                    store_dir: str | os.PathLike) -> EmbeddingStore | None:
    """The slide's store written by the model's extractor under ``store_dir``, or None.

    The folder name depends only on the slide's stem and the extractor (see
    :func:`napari_dfl.core.features.store.store_path_for`); a store there whose extractor differs
    from the model's (or that cannot be read) counts as absent.
    """
    from napari_dfl.core.slide_level.model import extractor_of

    identity = {k: v for k, v in extractor.items() if k != "dim"}
    path = store_path_for(store_dir, slide_path, identity)
    if not Path(path).exists():
        return None
    try:
        store = EmbeddingStore.open(path)
    except StoreError:
        return None
    return store if _plain(extractor_of(store)) == _plain(extractor) else None


def slide_tiles(slide: Slide, composition: Composition, min_tissue: float) -> TileGrid:
    """The tissue tiles a slide model is applied to: the composition's grid.

    Args:
        slide: the slide (with its mpp).
        composition: its patch size and first zoom give the grid.
        min_tissue: minimum tissue share of a tile; 0 uses :data:`DEFAULT_MIN_TISSUE`.

    Raises:
        MILError: the slide has no such tile.

    """
    from napari_dfl.core.slide_level.model import MILError

    grid = tile_grid(slide, composition.patch_size, composition.zooms[0],
                     min_tissue=min_tissue if min_tissue > 0 else DEFAULT_MIN_TISSUE)
    if not len(grid):
        raise MILError(f"{slide.path.name} has no tile with at least "
                       f"{min_tissue or DEFAULT_MIN_TISSUE:g} tissue: lower 'min tissue'.")
    return grid


@dataclass
class SlidePredictionResult:
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


def predict_tiles(model: SlideModel, store: EmbeddingStore, grid: TileGrid,
                  slide: str) -> SlidePredictionResult:
    """Predict a slide from the embeddings of ``grid``'s tiles in ``store``.

    Raises:
        MILError: the store was written by another extractor than the model's, or lacks
            some of the tiles.

    """
    from napari_dfl.core.slide_level.model import MILError, extractor_of

    if _plain(extractor_of(store)) != _plain(model.extractor):
        raise MILError(f"{Path(store.path).name} holds embeddings of "
                       f"{describe_extractor(extractor_of(store))} (or other weights) but "
                       f"the model needs {describe_extractor(model.extractor)} with its "
                       "training weights: set those and predict again.")
    missing = int(store.missing(grid.coords).sum())
    if missing:
        raise MILError(f"{missing} of the slide's {len(grid)} tiles are not embedded yet: "
                       "predict again to extract them.")
    proba, attention = model.predict_embeddings(store.get(grid.coords))
    return SlidePredictionResult(slide, list(model.classes), proba, attention, grid)
