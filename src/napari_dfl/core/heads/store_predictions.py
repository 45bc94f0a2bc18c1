"""Per-sample predictions of a store's rows, as columns for tables (AnnData ``obs``).

Two sources: a head applied to the store's embeddings (checked to fit the store's extractor
first), or a prediction file written by ``predict`` (``.prediction.npz``), matched to the
store's rows by their level-0 coordinates.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import store_extractor
from napari_dfl.core.heads.head_files import check_compatible, load_head
from napari_dfl.core.heads.prediction_files import load_arrays

__all__ = ["PREDICTED_COLUMN", "prediction_columns", "proba_columns"]

#: Column of the most probable class ("" where a sample has no prediction).
PREDICTED_COLUMN = "predicted_class"


def proba_columns(classes: list[str], proba: np.ndarray,
                  prefix: str = "") -> dict[str, np.ndarray]:
    """``{"<prefix>predicted_class": names, "<prefix>p_<class>": probabilities, ...}``.

    Rows of ``proba`` that are all NaN (no prediction) get ``""`` as their class.
    """
    proba = np.asarray(proba, dtype=np.float32)
    predicted = ~np.isnan(proba).all(axis=1) if len(proba) else np.zeros(0, bool)
    names = np.full(len(proba), "", dtype=object)
    if predicted.any():
        best = np.nanargmax(proba[predicted], axis=1)
        names[predicted] = np.asarray(classes, dtype=object)[best]
    out: dict[str, np.ndarray] = {f"{prefix}{PREDICTED_COLUMN}": names}
    for i, name in enumerate(classes):
        out[f"{prefix}p_{name}"] = proba[:, i]
    return out


def prediction_columns(store: EmbeddingStore, *, head: str | os.PathLike | None = None,
                       prediction: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """Predicted class and class probabilities of every row of ``store``.

    Args:
        store: the embedding store.
        head: a head folder; its classes are predicted from the store's embeddings.
        prediction: a ``.prediction.npz`` from ``predict``; rows whose coordinates it lacks
            get NaN probabilities and no class (a warning says how many).

    Returns:
        Columns in the store's row order (see :func:`proba_columns`); with both sources, the
        file's columns are prefixed ``file_``.

    Raises:
        HeadMismatchError: the head was trained on another extractor.
        DFLError: a file is missing or unreadable, or no row of the store is in the
            prediction file.

    """
    out: dict[str, np.ndarray] = {}
    if head is not None:
        trained, card = load_head(head)
        check_compatible(card, store_extractor(store))
        out.update(proba_columns(trained.classes, trained.predict_proba(store.embeddings())))
    if prediction is not None:
        tiles = load_arrays(prediction)
        index = {(int(x), int(y)): i for i, (x, y) in enumerate(tiles.grid.coords.tolist())}
        rows = np.array([index.get((int(x), int(y)), -1) for x, y in store.coords.tolist()],
                        dtype=np.int64)
        found = rows >= 0
        if len(rows) and not found.any():
            raise DFLError(f"No sample of the store {Path(store.path).name} is a tile of "
                           f"{Path(prediction).name}: it predicts another slide or another "
                           "tiling; give the prediction of this store's slide.")
        if not found.all():
            warnings.warn(f"{Path(prediction).name} has no prediction for "
                          f"{int((~found).sum())} of the store's {len(rows)} samples; they "
                          "get no class.", UserWarning, stacklevel=2)
        proba = np.full((len(rows), len(tiles.classes)), np.nan, dtype=np.float32)
        proba[found] = tiles.proba[rows[found]]
        out.update(proba_columns(tiles.classes, proba, "file_" if head is not None else ""))
    return out
