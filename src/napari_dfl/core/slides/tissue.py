"""Tissue detection at low resolution and the grid of tissue tiles at a working magnification.

The mask is Otsu's threshold on HSV saturation (H&E stains are saturated, glass is not),
cleaned with morphology. Tiles are laid on a regular level-0 grid whose step is the tile's
level-0 extent; a tile is kept when enough of it is tissue.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage import filters, morphology

from napari_dfl.core.errors import SlideError
from napari_dfl.core.slides.tiff import Slide

#: Longest side, in pixels, of the image the tissue mask is computed on.
MASK_MAX_SIZE = 2048
#: Saturation below this is glass whatever Otsu says (guards against all-tissue slides,
#: where Otsu would split the tissue itself in two).
MIN_SATURATION = 0.05
#: Saturation above this is tissue whatever Otsu says.
MAX_THRESHOLD = 0.15


@dataclass(frozen=True)
class TissueMask:
    """A boolean tissue mask at low resolution.

    Attributes:
        mask: ``(rows, cols)`` boolean array, True on tissue.
        downsample: level-0 pixels per mask pixel.
        threshold: the saturation threshold used.

    """

    mask: np.ndarray
    downsample: float
    threshold: float

    @property
    def fraction(self) -> float:
        """Fraction of the slide area covered by tissue."""
        return float(self.mask.mean())


@dataclass(frozen=True)
class TileGrid:
    """Tissue tiles on a regular grid.

    Attributes:
        coords: ``(N, 2)`` int64 level-0 ``(x, y)`` of each tile's top-left corner.
        grid_index: ``(N, 2)`` int ``(row, col)`` of each tile in the full grid.
        grid_shape: ``(rows, cols)`` of the full grid (tissue or not).
        tile_size: level-0 pixels per tile side (the grid step).
        patch_size: output pixels per tile side at the working magnification.
        mpp: working microns per pixel, or None for a slide without mpp (then the grid is
            in level-0 pixels: ``tile_size == patch_size``).
        tissue_fraction: ``(N,)`` fraction of each tile that is tissue (NaN when the grid
            was made with ``min_tissue=0`` and no mask).

    """

    coords: np.ndarray
    grid_index: np.ndarray
    grid_shape: tuple[int, int]
    tile_size: float
    patch_size: int
    mpp: float | None
    tissue_fraction: np.ndarray

    def __len__(self) -> int:
        return len(self.coords)

    def centers(self) -> np.ndarray:
        """Level-0 ``(x, y)`` centres of the tiles, as float64."""
        return self.coords + self.tile_size / 2.0

    def to_grid(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Place one value (or vector) per tile into a ``(rows, cols, ...)`` array."""
        values = np.asarray(values)
        grid = np.full(self.grid_shape + values.shape[1:], fill,
                       dtype=np.result_type(values.dtype, np.asarray(fill).dtype))
        grid[self.grid_index[:, 0], self.grid_index[:, 1]] = values
        return grid


def _overview(slide: Slide, max_size: int) -> tuple[np.ndarray, float]:
    """An RGB overview at most ``max_size`` on its longer side, and its downsample.

    Decodes the coarsest level (file or computed) that is at least that large, then
    shrinks it: a one-level gigapixel slide is thus read through its lazy coarse levels.
    """
    chosen = 0
    for i, level in enumerate(slide.levels):
        if max(level.width, level.height) >= max_size:
            chosen = i
    rgb = slide.read_level(chosen)
    level = slide.levels[chosen]
    scale = max_size / max(level.width, level.height)
    if scale >= 1:
        return rgb, level.downsample
    size = (max(1, round(level.width * scale)), max(1, round(level.height * scale)))
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR, reducing_gap=2.0))
    return small, slide.dimensions[0] / size[0]


def _saturation_value(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HSV saturation and value in [0, 1], computed in float32 without a full HSV image."""
    high = rgb.max(axis=-1).astype(np.float32)
    low = rgb.min(axis=-1).astype(np.float32)
    saturation = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    return saturation, high / 255.0


#: Masks already computed, per open slide object and overview size: a tile grid is laid
#: again for every prediction (auto mode: after each annotation), the mask stays the same.
_MASKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def detect_tissue(slide: Slide, max_size: int = MASK_MAX_SIZE) -> TissueMask:
    """The tissue mask of a slide, computed on an overview of about ``max_size`` pixels.

    The result is kept for as long as the slide object lives, so asking again is free;
    its array is read-only.

    Args:
        slide: the slide.
        max_size: longest side of the overview the mask is computed on.

    Returns:
        The mask and its downsample relative to level 0.

    """
    masks = _MASKS.setdefault(slide, {})
    if max_size not in masks:
        masks[max_size] = _compute_tissue(slide, max_size)
    return masks[max_size]


def _compute_tissue(slide: Slide, max_size: int) -> TissueMask:
    rgb, downsample = _overview(slide, max_size)
    saturation, value = _saturation_value(rgb)
    try:
        otsu = float(filters.threshold_otsu(saturation))
    except ValueError:  # a constant image
        otsu = MIN_SATURATION
    threshold = float(np.clip(otsu, MIN_SATURATION, MAX_THRESHOLD))
    mask = (saturation > threshold) & (value > 0.1)  # very dark = pen ink or scanner edge
    radius = max(1, round(max(mask.shape) / 1000))
    mask = morphology.closing(mask, morphology.disk(radius))
    min_area = max(16, mask.size // 5000)
    mask = morphology.remove_small_objects(mask, max_size=min_area)
    mask = morphology.remove_small_holes(mask, max_size=min_area)
    mask.flags.writeable = False
    return TissueMask(mask=mask, downsample=downsample, threshold=threshold)


def _tile_tissue_fraction(mask: TissueMask, coords: np.ndarray, tile_size: float) -> np.ndarray:
    """Fraction of tissue inside each level-0 square, from a summed-area table of the mask."""
    m = mask.mask.astype(np.float64)
    table = np.zeros((m.shape[0] + 1, m.shape[1] + 1))
    table[1:, 1:] = m.cumsum(0).cumsum(1)
    rows, cols = m.shape

    def clip_index(values: np.ndarray, upper: int) -> np.ndarray:
        return np.clip(np.round(values / mask.downsample).astype(np.int64), 0, upper)

    x0, y0 = clip_index(coords[:, 0], cols), clip_index(coords[:, 1], rows)
    x1 = clip_index(coords[:, 0] + tile_size, cols)
    y1 = clip_index(coords[:, 1] + tile_size, rows)
    x1, y1 = np.maximum(x1, np.minimum(x0 + 1, cols)), np.maximum(y1, np.minimum(y0 + 1, rows))
    area = np.maximum((x1 - x0) * (y1 - y0), 1)
    inside = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return inside / area


def grid_tiles_within(slide: Slide, patch_size: int, mpp: float | None,
                      bounds: tuple[float, float, float, float]) -> np.ndarray:
    """The tiles of ``tile_grid(slide, patch_size, mpp, min_tissue=0)`` that meet ``bounds``.

    The same level-0 corners, in the same row-major order, without laying the whole grid:
    for a slide of 100,000 px a side and small tiles, the whole grid has hundreds of
    thousands of tiles while a few annotations touch a few hundred.

    Args:
        slide: the slide.
        patch_size: tile side in pixels at the working magnification.
        mpp: working microns per pixel (None: level-0 pixels).
        bounds: level-0 ``(min_x, min_y, max_x, max_y)``.

    Returns:
        ``(N, 2)`` int64 level-0 ``(x, y)`` corners.

    """
    tile_size = patch_size * (mpp / slide.require_mpp()) if mpp is not None else float(patch_size)
    width, height = slide.dimensions
    n_cols, n_rows = max(1, int(width // tile_size)), max(1, int(height // tile_size))
    min_x, min_y, max_x, max_y = bounds
    # one tile of margin: corners are rounded to whole pixels
    c0, c1 = max(0, int(min_x // tile_size) - 1), min(n_cols - 1, int(max_x // tile_size) + 1)
    r0, r1 = max(0, int(min_y // tile_size) - 1), min(n_rows - 1, int(max_y // tile_size) + 1)
    if c0 > c1 or r0 > r1:
        return np.zeros((0, 2), np.int64)
    rr, cc = np.meshgrid(np.arange(r0, r1 + 1), np.arange(c0, c1 + 1), indexing="ij")
    index = np.stack([cc.ravel(), rr.ravel()], axis=1)
    return np.round(index * tile_size).astype(np.int64)


def tile_grid(
    slide: Slide,
    patch_size: int = 224,
    mpp: float | None = 0.5,
    min_tissue: float = 0.5,
    mask: TissueMask | None = None,
) -> TileGrid:
    """Lay a grid of tiles over the slide and keep those with enough tissue.

    Args:
        slide: the slide.
        patch_size: tile side in pixels at the working magnification.
        mpp: working microns per pixel (0.5 = x20). None uses level-0 pixels.
        min_tissue: minimum tissue fraction of a kept tile (0 keeps every tile).
        mask: a precomputed tissue mask; computed when omitted.

    Returns:
        The tissue tiles, in row-major order.

    """
    if patch_size <= 0:
        raise SlideError(f"patch size must be a positive number of pixels, got {patch_size}.")
    tile_size = patch_size * (mpp / slide.require_mpp()) if mpp is not None else float(patch_size)
    width, height = slide.dimensions
    n_cols, n_rows = max(1, int(width // tile_size)), max(1, int(height // tile_size))
    rr, cc = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    grid_index = np.stack([rr.ravel(), cc.ravel()], axis=1)
    coords = np.round(grid_index[:, ::-1] * tile_size).astype(np.int64)
    if mask is None and min_tissue > 0:
        mask = detect_tissue(slide)
    if mask is not None:
        fraction = _tile_tissue_fraction(mask, coords, tile_size)
    else:  # every tile wanted and no mask given: the fraction is unknown, not 1
        fraction = np.full(len(coords), np.nan)
    keep = fraction >= min_tissue if min_tissue > 0 else np.ones(len(coords), bool)
    return TileGrid(
        coords=coords[keep],
        grid_index=grid_index[keep],
        grid_shape=(n_rows, n_cols),
        tile_size=float(tile_size),
        patch_size=int(patch_size),
        mpp=mpp,
        tissue_fraction=fraction[keep],
    )
