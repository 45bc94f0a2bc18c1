"""Compressed slides: the tile embeddings of a store placed on the slide's tile grid.

Neural image compression (Tellez et al.): the frozen encoder turns a gigapixel slide into a
``(H/t, W/t, D)`` grid of tile embeddings (``t`` = tile side in level-0 pixels), empty (zero,
``mask`` False) where there is no tissue. The grid is filled from the store chunk by chunk and
saved as one compressed ``.npz`` (float16 grid, mask, placement), written atomically. A PCA
false-colour image (first three principal components as RGB) makes it viewable: place it on
the slide with ``scale = tile_size`` and ``translate = 0`` (level-0 pixels).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.pca_colours import pca_colors
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import slide_name
from napari_dfl.core.util.atomic import atomic_path

__all__ = [
    "CompressError",
    "CompressedSlide",
    "compress_store",
    "grid_placement",
    "load_compressed",
    "pca_rgb",
    "save_compressed",
]

_CHUNK = 8192


class CompressError(DFLError):
    """A store cannot be compressed, or a compressed file is not readable."""


@dataclass
class CompressedSlide:
    """A slide as a grid of tile embeddings.

    Attributes:
        grid: ``(rows, cols, D)`` float16 embeddings in place, zero where there is no tissue.
        mask: ``(rows, cols)`` bool, True where a tile has an embedding.
        tile_size: level-0 pixels per grid cell (the napari ``scale``).
        name: the slide name (from the store identity).
        identity: the store's identity (slide, backbone, composition).

    """

    grid: np.ndarray
    mask: np.ndarray
    tile_size: float
    name: str
    identity: dict


def grid_placement(store: EmbeddingStore,
                   coords: np.ndarray | None = None) -> tuple[np.ndarray, tuple[int, int], float]:
    """Grid ``(row, col)`` of each store row, the grid shape and the tile size.

    The tile size is the store attribute ``patch_size_level0``; stores without it use the
    smallest non-zero step between anchors. The grid starts at level-0 ``(0, 0)``.

    Returns:
        ``(index (N, 2) int64 (row, col), (rows, cols), tile_size)``.

    Raises:
        CompressError: the store has no rows (no tissue tiles).

    """
    coords = store.coords if coords is None else coords
    if len(coords) == 0:
        raise CompressError(f"{store.path} has no tissue tiles (an empty store): embed the "
                            "slide again with a lower --min-tissue, or leave it out.")
    step = store.attrs.get("patch_size_level0")
    if not isinstance(step, (int, float)) or step <= 0:
        diffs = [np.diff(np.unique(coords[:, k])) for k in (0, 1)]
        diffs = np.concatenate([d[d > 0] for d in diffs])
        step = float(diffs.min()) if len(diffs) else 1.0
    step = float(step)
    index = np.rint(coords[:, ::-1] / step).astype(np.int64)
    rows, cols = (int(v) + 1 for v in index.max(axis=0))
    slide = store.identity.get("slide")
    dims = slide.get("dimensions") if isinstance(slide, dict) else None
    if isinstance(dims, list) and len(dims) == 2:
        rows, cols = max(rows, int(dims[1] // step)), max(cols, int(dims[0] // step))
    return index, (rows, cols), step


def compress_store(store: EmbeddingStore, chunk_rows: int = _CHUNK) -> CompressedSlide:
    """Build the compressed grid of a store, reading one chunk of rows at a time.

    Raises:
        CompressError: the store has no tissue tiles.

    """
    index, shape, step = grid_placement(store)
    grid = np.zeros((*shape, store.dim), np.float16)
    mask = np.zeros(shape, bool)
    start = 0
    for _, emb in store.iter_chunks(chunk_rows):
        idx = index[start:start + len(emb)]
        grid[idx[:, 0], idx[:, 1]] = emb
        mask[idx[:, 0], idx[:, 1]] = True
        start += len(emb)
    return CompressedSlide(grid, mask, step, slide_name(store), dict(store.identity))


def save_compressed(slide: CompressedSlide, path: str | os.PathLike) -> Path:
    """Write ``slide`` as a compressed ``.npz`` atomically (temp file + rename)."""
    path = Path(path)
    meta = json.dumps({"name": slide.name, "tile_size": slide.tile_size,
                       "identity": slide.identity})
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, grid=slide.grid, mask=slide.mask, rgb=pca_rgb(slide),
                            meta=np.array(meta))
    return path


def load_compressed(path: str | os.PathLike) -> CompressedSlide:
    """Read a file written by :func:`save_compressed` (never unpickles).

    Raises:
        CompressError: missing, not an npz, or lacking its arrays.

    """
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            grid, mask = data["grid"], data["mask"]
    except (OSError, ValueError, KeyError) as exc:
        raise CompressError(f"{path} is not a compressed slide written by napari-dfl "
                            f"compress ({exc}); compress the store again.") from None
    if grid.ndim != 3 or mask.shape != grid.shape[:2]:
        raise CompressError(f"{path}: grid {grid.shape} and mask {mask.shape} do not match.")
    return CompressedSlide(grid, mask, float(meta["tile_size"]), str(meta["name"]),
                           dict(meta["identity"]))


def pca_rgb(slide: CompressedSlide, background: int = 255) -> np.ndarray:
    """False-colour view: the first three principal components of the tissue cells as RGB.

    Each component is scaled to 0..255 between its 1st and 99th percentile; cells without
    tissue get ``background``. The sign of each component is fixed (largest loading
    positive) so the colours are reproducible.

    Returns:
        ``(rows, cols, 3)`` uint8.

    """
    rgb = np.full((*slide.mask.shape, 3), background, np.uint8)
    if slide.mask.sum() >= 2:
        rgb[slide.mask] = pca_colors(slide.grid[slide.mask])
    return rgb
