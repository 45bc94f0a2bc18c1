"""Stain normalisation (Macenko): the ``stain`` colour variant of a composition's parts.

H&E slides from different labs, scanners and days differ in colour: the same nucleus is
blue-purple on one slide and pink-purple on the next. The ``stain`` variant maps every patch
of a slide onto one reference stain, so that a head sees less of that difference.

The method is Macenko et al.'s ("A method for normalizing histology slides for quantitative
analysis", ISBI 2009), written here in a few lines of numpy:

1. optical density ``OD = -ln((I + 1) / 256)`` per channel (white, 255, is OD 0);
2. background pixels (any channel's OD below :data:`BETA`) are dropped;
3. the plane of the two largest eigenvectors of the tissue ODs' covariance;
4. each tissue OD's angle in that plane; the 1st and 99th percentiles of the angles
   (:data:`ALPHA`) give the two stain vectors, hematoxylin being the one that absorbs more
   red;
5. each pixel's concentrations of the two stains by least squares; the 99th percentile of
   each is the slide's maximum concentration;
6. a patch is normalised by taking its concentrations, scaling them to the reference's
   maxima and recomposing them with the reference stain vectors. Steps 5-6 are one 3 x 3
   linear map in OD space (:attr:`StainEstimate.matrix`), so normalising a patch costs a
   table look-up, a 3 x 3 product and an exponential per pixel.

**One estimate per slide**, not per patch: a patch's own estimate is noisy (a 16 µm nucleus
crop has almost no eosin, and a per-patch 99th percentile would stretch whatever it has to
the reference maximum, erasing the very colour difference between a nucleus and stroma);
what differs between slides is the staining run, which one estimate per slide captures.
:func:`slide_stain` estimates it once per open slide from its tissue (the whole image when
it is small, else up to :data:`MAX_TILES` tissue tiles spread evenly over the slide's tissue
grid), at :data:`ESTIMATE_MPP` µm/px whatever the composition, and keeps it for as long as the
slide object lives. Everything is deterministic: the same file gives the same estimate in the
panel's extraction child, the CLI or a dask worker.

**Fallback**: when a slide has fewer than :data:`MIN_TISSUE_PIXELS` tissue pixels (blank
glass), or its ODs do not span two stains (a grayscale image, a single stain), the slide is
taken to be stained like the reference (:data:`REFERENCE`): its patches are projected onto the
reference H&E plane at the reference strength, never NaN. A warning says so, once per slide.

The reference stain vectors and maximum concentrations are those of Macenko's method as
published in the widely used reference implementation (Mitko Veta's ``normalizeStaining.m``,
later ported to Python by many, e.g. torchstain's defaults): H = (0.5626, 0.7201, 0.4062),
E = (0.2159, 0.8012, 0.5581), maxima 1.9705 and 1.0308. That implementation measures OD
against a background of 240; here it is measured against 256 so that white stays exactly
white (an offset of 0.065 OD, small against the maxima).
"""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from napari_dfl.core.slides.base import SlideReader
from napari_dfl.core.slides.tissue import tile_grid

__all__ = ["ALPHA", "BETA", "ESTIMATE_MPP", "MAX_TILES", "MIN_TISSUE_PIXELS", "REFERENCE",
           "StainEstimate", "StainWarning", "estimate_stain", "normalise_stain",
           "slide_stain", "slide_tissue_pixels"]

#: Reference stain vectors (columns: hematoxylin, eosin), unit optical densities in RGB.
REFERENCE_STAINS = np.array([[0.5626, 0.2159],
                             [0.7201, 0.8012],
                             [0.4062, 0.5581]])
#: Reference maximum (99th-percentile) concentrations of hematoxylin and eosin.
REFERENCE_MAX = np.array([1.9705, 1.0308])
#: OD below which, in any channel, a pixel is background (glass), not tissue.
BETA = 0.15
#: Percentile of the angles taken as the extreme stain directions (and 100 - ALPHA).
ALPHA = 1.0
#: Percentile of the concentrations taken as a slide's maximum.
MAX_PERCENTILE = 99.0
#: Fewer tissue pixels than this and the reference is assumed.
MIN_TISSUE_PIXELS = 1000
#: Pixel size (µm/px) at which a slide's tissue is read for its estimate (x20, or the slide's
#: own level 0 when coarser).
ESTIMATE_MPP = 0.5
#: A slide at most this many pixels at :data:`ESTIMATE_MPP` is read whole for its estimate.
WHOLE_MAX_PIXELS = 1 << 20
#: Otherwise, up to this many tissue tiles of :data:`TILE` pixels, spread over its tissue.
MAX_TILES = 16
TILE = 256
#: Tissue pixels used for the eigen-decomposition and the percentiles at most (an even
#: stride over the pixels beyond this).
MAX_PIXELS = 1 << 18
# ln((I + 1) / 256) of every uint8 value, negated: the optical density table.
_OD = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)


class StainWarning(UserWarning):
    """A slide's stain could not be estimated; its ``stain`` parts assume the reference."""


@dataclass(frozen=True, eq=False)
class StainEstimate:
    """The stain of one slide (or the reference), and the map that normalises it.

    Attributes:
        stains: ``(3, 2)`` unit optical-density vectors of hematoxylin and eosin (columns).
        max_concentrations: ``(2,)`` the 99th-percentile concentration of each stain.
        tissue_pixels: tissue pixels the estimate was made from (0 for the reference).
        fallback: why the reference was assumed instead of an estimate, or None.

    """

    stains: np.ndarray
    max_concentrations: np.ndarray
    tissue_pixels: int = 0
    fallback: str | None = field(default=None)

    @cached_property
    def matrix(self) -> np.ndarray:
        """``(3, 3)`` float32 map of a pixel's OD to its normalised OD (column vectors).

        Concentrations by least squares (the stains' pseudo-inverse), scaled to the
        reference's maxima, recomposed with the reference stains.
        """
        scale = REFERENCE_MAX / self.max_concentrations
        return (REFERENCE_STAINS @ np.diag(scale) @ np.linalg.pinv(self.stains)).astype(
            np.float32)

    def describe(self) -> str:
        """The estimate in words (for logs and warnings)."""
        if self.fallback:
            return f"reference stain assumed ({self.fallback})"
        h, e = (np.round(self.stains[:, k], 3).tolist() for k in range(2))
        return (f"H {h}, E {e}, max concentrations "
                f"{np.round(self.max_concentrations, 3).tolist()} from "
                f"{self.tissue_pixels} tissue pixels")


#: The reference stain: a slide stained like it is left as it is (up to the projection onto
#: the H&E plane). The fallback when a slide's own stain cannot be estimated.
REFERENCE = StainEstimate(REFERENCE_STAINS, REFERENCE_MAX)


def _reference(reason: str, tissue_pixels: int) -> StainEstimate:
    return StainEstimate(REFERENCE_STAINS, REFERENCE_MAX, tissue_pixels, reason)


def estimate_stain(rgb: np.ndarray) -> StainEstimate:
    """Macenko's estimate of the stain vectors and maximum concentrations of some pixels.

    Args:
        rgb: uint8 RGB pixels of any shape ``(..., 3)`` (a patch, tiles, a whole image).

    Returns:
        The estimate; the reference, with its ``fallback`` reason, when there are fewer than
        :data:`MIN_TISSUE_PIXELS` tissue pixels or they do not span two stains.

    """
    od = _OD[np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)]
    od = od[(od >= BETA).all(axis=1)]
    count = len(od)
    if count < MIN_TISSUE_PIXELS:
        return _reference(f"{count} tissue pixels, fewer than {MIN_TISSUE_PIXELS}", count)
    if count > MAX_PIXELS:
        od = od[:: -(-count // MAX_PIXELS)]
    od = od.astype(np.float64)
    values, vectors = np.linalg.eigh(np.cov(od, rowvar=False))
    if not np.all(np.isfinite(values)) or values[1] <= 1e-4 * max(values[2], 1e-12):
        return _reference("the tissue's colours vary along one direction only (a grayscale "
                          "image, or one stain)", count)
    plane = vectors[:, [2, 1]]
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # towards positive ODs
    projected = od @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, [ALPHA, 100.0 - ALPHA])
    ends = plane @ np.array([[np.cos(low), np.cos(high)], [np.sin(low), np.sin(high)]])
    ends /= np.linalg.norm(ends, axis=0, keepdims=True)
    if ends[:, 0] @ ends[:, 1] > np.cos(np.radians(2.0)):
        return _reference("the stains cannot be told apart (their directions are within 2°)",
                          count)
    stains = ends if ends[0, 0] >= ends[0, 1] else ends[:, ::-1]  # H absorbs more red
    concentrations = np.linalg.lstsq(stains, od.T, rcond=None)[0]
    maxima = np.percentile(concentrations, MAX_PERCENTILE, axis=1)
    if not (np.all(np.isfinite(maxima)) and np.all(maxima > 1e-3)
            and np.all(np.isfinite(stains))):
        return _reference("one of the two stains is absent", count)
    return StainEstimate(np.ascontiguousarray(stains), maxima, count)


def normalise_stain(rgb: np.ndarray, estimate: StainEstimate) -> np.ndarray:
    """Patches with their stain mapped onto the reference stain.

    Args:
        rgb: uint8 RGB pixels of any shape ``(..., 3)``.
        estimate: the stain of the slide they come from (:func:`slide_stain`).

    Returns:
        uint8 pixels of the same shape; white (255, 255, 255) stays white.

    """
    rgb = np.asarray(rgb, dtype=np.uint8)
    od = _OD[rgb.reshape(-1, 3)] @ estimate.matrix.T
    out = np.exp(-od)
    out *= 256.0
    out -= 0.5  # -1 to undo the +1 of the optical density, +0.5 to round
    np.clip(out, 0.0, 255.0, out=out)
    return out.astype(np.uint8).reshape(rgb.shape)


def slide_tissue_pixels(slide: SlideReader) -> np.ndarray:
    """The pixels a slide's stain is estimated from, ``(N, 3)`` uint8.

    Read at :data:`ESTIMATE_MPP` µm/px (the slide's level 0 when coarser, or without an
    mpp): the whole slide when it is at most :data:`WHOLE_MAX_PIXELS` pixels there, else up
    to :data:`MAX_TILES` tiles of :data:`TILE` pixels spread evenly over the tiles that are
    at least half tissue (over every tile when none is). Deterministic.
    """
    mpp = slide.mpp
    downsample = 1.0 if mpp is None else max(1.0, ESTIMATE_MPP / mpp)
    width, height = slide.dimensions
    size = (max(1, round(width / downsample)), max(1, round(height / downsample)))
    if size[0] * size[1] <= WHOLE_MAX_PIXELS:
        return slide.read_region((0, 0), size, downsample=downsample).reshape(-1, 3)
    read_mpp = None if mpp is None else mpp * downsample
    grid = tile_grid(slide, TILE, read_mpp, min_tissue=0.5)
    if len(grid) == 0:
        grid = tile_grid(slide, TILE, read_mpp, min_tissue=0.0)
    pick = np.unique(np.linspace(0, len(grid) - 1, min(MAX_TILES, len(grid))).round())
    return np.concatenate([
        slide.read_region((float(grid.coords[i, 0]), float(grid.coords[i, 1])), (TILE, TILE),
                          downsample=downsample).reshape(-1, 3)
        for i in pick.astype(np.int64)])


#: Estimates already made, per open slide object.
_ESTIMATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def slide_stain(slide: SlideReader) -> StainEstimate:
    """The stain of a slide, estimated once per slide object (thread-safe).

    The reading threads of an extraction all ask; the first estimates, the others wait for
    it and reuse it. A slide whose stain cannot be estimated gets the reference, with a
    :class:`StainWarning` saying why (once).
    """
    with _LOCK:
        found = _ESTIMATES.get(slide)
        if found is None:
            found = estimate_stain(slide_tissue_pixels(slide))
            _ESTIMATES[slide] = found
            if found.fallback:
                warnings.warn(f"{slide.path.name}: no stain estimate for the stain variant "
                              f"({found.fallback}); its patches are normalised as if "
                              "stained like the reference H&E.", StainWarning, stacklevel=2)
    return found
