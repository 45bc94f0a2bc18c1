"""An embedding store as an AnnData ``.h5ad`` file, to open the embeddings in scanpy.

One observation per stored sample: ``X`` holds the embeddings (N, D) float32,
``obsm["spatial"]`` the level-0 ``(x, y)`` top-left corner of each sample's working patch
(the store's coordinates, squidpy's key), ``obs`` any per-sample columns given (predictions,
see :mod:`napari_dfl.core.heads.store_predictions`) and the class of the annotation each
sample falls in, ``var`` the composition part of each column, and ``uns["napari_dfl"]`` the
extractor card (backbone identity, composition, slide fingerprint) and the store's
attributes, as JSON-able values, with their exact JSON text beside them.

``anndata`` is an optional dependency: ``pip install napari-dfl[anndata]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.errors import DFLError, require_module
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import slide_name, store_extractor
from napari_dfl.core.slides.sampling import Composition, CompositionError

__all__ = ["AnnDataExportError", "annotation_labels", "export_anndata",
           "require_anndata", "store_to_anndata"]

#: ``obs`` column of the annotation class each sample falls in ("" for none).
ANNOTATION_COLUMN = "annotation"


class AnnDataExportError(DFLError):
    """A column given for ``obs`` does not fit the store."""


def require_anndata() -> ModuleType:
    """The ``anndata`` module; :class:`MissingDependencyError` saying how to install it."""
    return require_module("anndata", "Writing AnnData (.h5ad) files", "anndata")


def _plain(value: Any) -> Any:
    """A JSON value as AnnData can write it: no None, lists of one type only."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        items = [v for v in value if v is not None]
        if all(isinstance(v, bool) for v in items) or all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in items) or all(
                isinstance(v, str) for v in items):
            return items
        return json.dumps(value)  # nested or mixed lists: their JSON text
    return value


def annotation_labels(coords: np.ndarray, extent: float,
                      annotations: Sequence[Annotation]) -> np.ndarray:
    """The class of the annotation each sample falls in, ``""`` where there is none.

    A sample is the square ``[x, x + extent)`` x ``[y, y + extent)`` of level-0 pixels; it
    falls in a region that contains its centre and in a point annotation that lies inside
    it. Where several do, the first annotation in the list wins.

    Args:
        coords: ``(N, 2)`` level-0 ``(x, y)`` top-left corners.
        extent: the samples' side in level-0 pixels.
        annotations: regions and points in level-0 pixels.

    """
    from shapely import STRtree, box, points  # shapely 2: vectorised geometry

    coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    labels = np.full(len(coords), "", dtype=object)
    if not len(coords) or not annotations:
        return labels
    centres = points(coords + extent / 2.0)
    boxes = box(coords[:, 0], coords[:, 1], coords[:, 0] + extent, coords[:, 1] + extent)
    geometries = [a.geometry for a in annotations]
    hits: dict[int, int] = {}
    tree = STRtree(geometries)
    for targets, predicate in ((centres, "within"), (boxes, "contains")):
        sample, found = tree.query(targets, predicate=predicate)
        for i, j in zip(sample.tolist(), found.tolist(), strict=True):
            is_point = annotations[j].geometry.geom_type in ("Point", "MultiPoint")
            if is_point == (predicate == "contains") and (i not in hits or j < hits[i]):
                hits[i] = j
    for i, j in hits.items():
        labels[i] = annotations[j].label
    return labels


def _extent(store: EmbeddingStore) -> float | None:
    value = store.attrs.get("patch_size_level0", store.attrs.get("tile_size_level0"))
    return float(value) if isinstance(value, int | float) and value > 0 else None


def _var_names(store: EmbeddingStore) -> tuple[list[str], list[str]]:
    """Column names ``"<part>:<j>"`` and each column's part (``"all"`` when unknown)."""
    data = store.identity.get("composition")
    parts: list[str] = []
    with contextlib.suppress(CompositionError, KeyError, TypeError, ValueError, AttributeError):
        parts = [f"{z:g}um/px {v}" for z, v in Composition.from_dict(data).parts()]
    if not parts or store.dim % len(parts):
        return [f"f{j}" for j in range(store.dim)], ["all"] * store.dim
    width = store.dim // len(parts)
    names = [f"{part}:{j}" for part in parts for j in range(width)]
    return names, [part for part in parts for _ in range(width)]


def store_to_anndata(store: EmbeddingStore, *, obs: Mapping[str, Any] | None = None,
                     annotations: Sequence[Annotation] | None = None,
                     uns: Mapping[str, Any] | None = None) -> Any:
    """The store as an in-memory ``anndata.AnnData`` (see the module docstring).

    Args:
        store: the embedding store.
        obs: extra per-sample columns, each of length N in the store's row order (NaN or
            ``""`` where a sample has no value).
        annotations: regions and points (level-0 pixels); adds the ``obs["annotation"]``
            column (:func:`annotation_labels`).
        uns: extra JSON-able entries for ``uns["napari_dfl"]``.

    Raises:
        AnnDataExportError: an ``obs`` column of the wrong length, or annotations for a store
            that does not record its patch size in level-0 pixels.
        MissingDependencyError: anndata is not installed.

    """
    anndata = require_anndata()
    coords = np.asarray(store.coords, dtype=np.int64)
    n = len(coords)
    columns: dict[str, np.ndarray] = {}
    for name, values in (obs or {}).items():
        column = np.asarray(values)
        if column.shape != (n,):
            raise AnnDataExportError(f"obs column {name!r} has shape {column.shape}; the store "
                                     f"{Path(store.path).name} has {n} samples.")
        columns[str(name)] = column.astype(object) if column.dtype.kind in "OUS" else column
    if annotations is not None:
        extent = _extent(store)
        if extent is None:
            raise AnnDataExportError(f"The store {Path(store.path).name} does not record its "
                                     "patch size in level-0 pixels, so samples cannot be "
                                     "matched to annotations; export without annotations.")
        columns[ANNOTATION_COLUMN] = annotation_labels(coords, extent, annotations)
    names, parts = _var_names(store)
    card: dict[str, Any] = {"identity": store.identity, "attrs": store.attrs}
    with contextlib.suppress(DFLError):  # an imported store names no extractor
        card["extractor"] = store_extractor(store).to_dict()
    card.update(uns or {})
    info = {**_plain(card), "card_json": json.dumps(card, sort_keys=True),
            "slide": slide_name(store), "store": Path(store.path).name,
            "spatial": "level-0 (x, y) pixels of each sample's top-left corner"}
    adata = anndata.AnnData(X=store.embeddings().astype(np.float32, copy=False),
                            obs=columns, var={"part": np.array(parts, dtype=object)},
                            obsm={"spatial": coords}, uns={"napari_dfl": info})
    adata.obs_names = [f"{x}_{y}" for x, y in coords.tolist()]
    adata.var_names = names
    adata.strings_to_categoricals()  # text columns as categories, as scanpy expects
    return adata


def export_anndata(store: EmbeddingStore, path: str | os.PathLike[str], *,
                   obs: Mapping[str, Any] | None = None,
                   annotations: Sequence[Annotation] | None = None,
                   uns: Mapping[str, Any] | None = None) -> Path:
    """Write :func:`store_to_anndata` as an ``.h5ad`` file, atomically.

    Arguments and errors as in :func:`store_to_anndata`; ``path`` is replaced if it exists.

    Returns:
        The path written.

    """
    adata = store_to_anndata(store, obs=obs, annotations=annotations, uns=uns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp.h5ad")
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path
