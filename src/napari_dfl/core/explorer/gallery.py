"""Example patches of a group of tiles: a seeded draw of tiles and bounded thumbnails.

The explorer's gallery shows the patches a pathologist would look at to name a cluster or
a selection. The tiles are drawn at random but reproducibly (the same group and seed give
the same examples); a patch larger than :data:`THUMB_MAX` pixels is shrunk by an integer
factor (block means), so a thumbnail's pixels are the patch's own or their exact averages.
Nothing here imports Qt or napari.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GALLERY_SIZE", "THUMB_MAX", "example_tiles", "thumbnail"]

#: How many examples the gallery shows.
GALLERY_SIZE = 12
#: Largest side of a thumbnail, in pixels.
THUMB_MAX = 128


def example_tiles(mask: np.ndarray, count: int = GALLERY_SIZE, seed: int = 0) -> np.ndarray:
    """Indices of up to ``count`` tiles of ``mask`` (``(N,)`` bool), drawn with ``seed``."""
    members = np.flatnonzero(np.asarray(mask, dtype=bool))
    if len(members) <= count:
        return members
    return np.random.default_rng(seed).choice(members, size=int(count), replace=False)


def thumbnail(patch: np.ndarray, max_side: int = THUMB_MAX) -> np.ndarray:
    """``(h, w, 3)`` uint8: ``patch`` itself, or shrunk by the smallest integer factor that fits.

    Shrinking averages ``factor x factor`` blocks (the patch cropped to a multiple of it).
    """
    rgb = np.asarray(patch)[..., :3]
    factor = int(np.ceil(max(rgb.shape[:2]) / max_side)) if max(rgb.shape[:2]) else 1
    if factor <= 1:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = (rgb.shape[0] // factor) * factor, (rgb.shape[1] // factor) * factor
    blocks = rgb[:h, :w].reshape(h // factor, factor, w // factor, factor, 3)
    return np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)
