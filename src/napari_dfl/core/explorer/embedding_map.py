"""The embedding map behind the explorer: projected tiles, density image, selection.

A projection of 100,000 tiles drawn as 100,000 markers costs about a second per frame in
software OpenGL, and recolouring them costs as much again. The explorer therefore draws the
bulk as one density image (each pixel: how many tiles fall there, in the mean colour of
those tiles) and only the selected tiles as markers. Selection is a polygon test on
precomputed pixel positions and a tile is found from a point by a k-d tree: both are
milliseconds at 100,000 points. Nothing here imports Qt or napari.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_dfl.core.errors import DFLError

#: Side of the density image, in pixels.
BINS = 512


@dataclass
class EmbeddingMap:
    """Projected tiles of a slide: where each tile is in 2-D and on the slide.

    Attributes:
        xy: ``(N, 2)`` projection coordinates (PCA or UMAP).
        anchors: ``(N, 2)`` level-0 ``(x, y)`` sample anchors of the same tiles.
        tile_size: level-0 side of a tile (a sample's first patch).
        bins: side of the density image.
        radius: half-side in pixels of the square each point paints (None: from the number
            of points, so that a few dozen tiles stay visible and 100,000 stay sharp).
        slide_ids: ``(N,)`` index into ``slides`` of each tile's slide (None: all slide 0).
        slides: the slides' names; slide 0 is the one open in the viewer.

    """

    xy: np.ndarray
    anchors: np.ndarray
    tile_size: float
    bins: int = BINS
    radius: int | None = None
    slide_ids: np.ndarray | None = None
    slides: list[str] = field(default_factory=lambda: ["slide"])
    pixels: np.ndarray = field(init=False, repr=False)
    _tree: object = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        self.xy = np.asarray(self.xy, dtype=np.float64).reshape(-1, 2)
        self.anchors = np.asarray(self.anchors, dtype=np.int64).reshape(-1, 2)
        if len(self.xy) != len(self.anchors):
            raise DFLError(f"{len(self.xy)} projected points for {len(self.anchors)} tiles: "
                           "project the embeddings of these tiles again.")
        lo, hi = (self.xy.min(axis=0), self.xy.max(axis=0)) if len(self.xy) else \
            (np.zeros(2), np.ones(2))
        span = np.maximum(hi - lo, 1e-9).max() * 1.04  # one scale for both axes, a margin
        self.origin = (lo + hi) / 2.0 - span / 2.0
        self.scale = (self.bins - 1) / span
        # (row, col) pixel of each point: the second coordinate along the rows (the
        # explorer's camera shows rows upwards, so y grows up the screen as on a plot)
        col = (self.xy[:, 0] - self.origin[0]) * self.scale
        row = (self.xy[:, 1] - self.origin[1]) * self.scale
        self.pixels = np.stack([row, col], axis=1)
        self.slide_ids = np.zeros(len(self.xy), np.int64) if self.slide_ids is None else \
            np.asarray(self.slide_ids, dtype=np.int64).reshape(-1)
        if len(self.slide_ids) != len(self.xy):
            raise DFLError(f"{len(self.slide_ids)} slide labels for {len(self.xy)} tiles.")
        if self.radius is None:
            self.radius = int(np.clip(round(self.bins / (4 * np.sqrt(max(len(self), 1)))), 0, 4))

    def __len__(self) -> int:
        return len(self.xy)

    @property
    def on_open_slide(self) -> np.ndarray:
        """``(N,)`` bool: tiles of the slide open in the viewer (slide 0)."""
        return self.slide_ids == 0

    @property
    def centres(self) -> np.ndarray:
        """``(N, 2)`` level-0 ``(x, y)`` centres of the tiles."""
        return self.anchors + self.tile_size / 2.0

    # -- drawing -------------------------------------------------------------------------
    def density_rgba(self, colors: np.ndarray) -> np.ndarray:
        """``(bins, bins, 4)`` uint8: mean colour of the tiles in each pixel, alpha by count.

        Args:
            colors: ``(N, 3)`` RGB in [0, 1], one per tile.

        """
        n = self.bins
        flat = _flat_index(self.pixels, n)
        colors = np.asarray(colors, dtype=np.float64).reshape(len(self), 3)
        sums = [np.bincount(flat, minlength=n * n).astype(np.float64)]
        sums += [np.bincount(flat, weights=colors[:, c], minlength=n * n) for c in range(3)]
        planes = [self._splat(plane.reshape(n, n)) for plane in sums]
        counts = planes[0]
        filled = counts > 1e-9
        out = np.zeros((n, n, 4), dtype=np.float64)
        for channel in range(3):
            out[..., channel][filled] = planes[channel + 1][filled] / counts[filled]
        if filled.any():
            out[..., 3] = np.where(filled, 0.35 + 0.65 * np.log1p(counts) / np.log1p(counts.max()),
                                   0.0)
        return np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)

    def highlight_mask(self, selected: np.ndarray) -> np.ndarray:
        """``(bins, bins)`` bool: the pixels the selected points paint."""
        n = self.bins
        mask = np.zeros(n * n, dtype=bool)
        mask[_flat_index(self.pixels[np.asarray(selected, dtype=bool)], n)] = True
        mask = mask.reshape(n, n)
        if self.radius:
            from scipy.ndimage import maximum_filter

            mask = maximum_filter(mask, size=2 * self.radius + 1)
        return mask

    def _splat(self, plane: np.ndarray) -> np.ndarray:
        """Spread each pixel's sum over a square of side ``2 radius + 1`` (sums preserved)."""
        if not self.radius:
            return plane
        from scipy.ndimage import uniform_filter

        side = 2 * self.radius + 1
        return uniform_filter(plane, size=side, mode="constant") * side * side

    # -- selection -----------------------------------------------------------------------
    def in_polygon(self, vertices_rc: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: points inside a polygon given in density-image ``(row, col)``."""
        from matplotlib.path import Path as PolygonPath

        vertices = np.asarray(vertices_rc, dtype=np.float64).reshape(-1, 2)
        if len(vertices) < 3:
            return np.zeros(len(self), dtype=bool)
        return PolygonPath(vertices).contains_points(self.pixels)

    def tiles_in_polygon(self, vertices_xy: np.ndarray) -> np.ndarray:
        """``(N,)`` bool: tiles whose centre lies in a polygon of level-0 ``(x, y)``."""
        from matplotlib.path import Path as PolygonPath

        vertices = np.asarray(vertices_xy, dtype=np.float64).reshape(-1, 2)
        if len(vertices) < 3:
            return np.zeros(len(self), dtype=bool)
        return PolygonPath(vertices).contains_points(self.centres)

    def nearest(self, pixel_rc: Sequence[float], radius: float = 6.0) -> int | None:
        """The point nearest to a density-image ``(row, col)`` within ``radius`` pixels."""
        from scipy.spatial import cKDTree

        if not len(self):
            return None
        if self._tree is None:
            self._tree = cKDTree(self.pixels)
        distance, index = self._tree.query(np.asarray(pixel_rc, dtype=np.float64)[-2:])
        return int(index) if distance <= radius else None

    def tile_grid_positions(self) -> np.ndarray:
        """``(N, 2)`` int ``(row, col)`` of each tile on a grid of ``tile_size`` cells."""
        return np.floor(self.centres[:, ::-1] / self.tile_size).astype(np.int64)


def _flat_index(pixels: np.ndarray, n: int) -> np.ndarray:
    rc = np.clip(np.round(pixels).astype(np.int64), 0, n - 1)
    return rc[:, 0] * n + rc[:, 1]
