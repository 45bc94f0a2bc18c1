"""Selected tiles as outlines over the slide: a ring per tile, the tissue left visible.

A filled cell per selected tile hides the tissue the pathologist wants to judge. The
selection is therefore drawn on the tile grid upsampled ``cell`` times: each selected tile
becomes the border of its ``cell x cell`` block (about an eighth of the tile wide), the
inside stays transparent. ``cell`` shrinks on large grids so that the image stays within
:data:`MAX_PIXELS` (one byte per pixel): drawing costs the same whatever the number of
selected tiles. Nothing here imports Qt or napari.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_CELL", "MAX_PIXELS", "MIN_CELL", "cell_size", "outline_image", "ring"]

#: Upper bound of the outline image's pixels (uint8: as many bytes).
MAX_PIXELS = 4_000_000
#: Largest and smallest number of outline pixels per tile side.
MAX_CELL, MIN_CELL = 16, 4


def cell_size(grid_shape: tuple[int, int], max_pixels: int = MAX_PIXELS) -> int:
    """Outline pixels per tile side for a grid of ``(rows, cols)`` tiles."""
    cells = max(1, int(grid_shape[0]) * int(grid_shape[1]))
    return int(np.clip(int(np.sqrt(max_pixels / cells)), MIN_CELL, MAX_CELL))


def ring(cell: int) -> np.ndarray:
    """``(cell, cell)`` uint8: 1 on the border of a tile (``cell // 8`` wide, at least 1)."""
    width = max(1, int(cell) // 8)
    block = np.ones((cell, cell), dtype=np.uint8)
    block[width:cell - width, width:cell - width] = 0
    return block


def outline_image(rows: np.ndarray, cols: np.ndarray, grid_shape: tuple[int, int],
                  cell: int) -> np.ndarray:
    """``(rows * cell, cols * cell)`` uint8: 1 on the outline of each listed tile, else 0.

    Args:
        rows: grid rows of the selected tiles (inside ``grid_shape``).
        cols: their grid columns.
        grid_shape: ``(rows, cols)`` of the tile grid.
        cell: outline pixels per tile side (:func:`cell_size`).

    """
    height, width = int(grid_shape[0]), int(grid_shape[1])
    out = np.zeros((height * cell, width * cell), dtype=np.uint8)
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if not len(rows):
        return out
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    chosen = np.zeros((r1 - r0, c1 - c0), dtype=np.uint8)
    chosen[rows - r0, cols - c0] = 1
    out[r0 * cell:r1 * cell, c0 * cell:c1 * cell] = np.kron(chosen, ring(cell))
    return out
