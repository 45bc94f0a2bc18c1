"""Lazy whole-slide images: a tifffile pyramid exposed as one dask array per level.

Opening a slide parses TIFF headers only; pixels are decoded when a region is asked for.
Coordinates are level-0 pixels, ``(x, y)`` for origins and ``(width, height)`` for sizes.
Magnification is expressed as a target pixel size in microns (x20 = 0.5 um/px, x5 = 2.0).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import tifffile
import zarr
from PIL import Image

from napari_dfl.core.errors import (
    CorruptSlideError,
    MissingMppWarning,
    NotATiffError,
    SlideError,
    UnsupportedSlideError,
)
from napari_dfl.core.slides.base import Level, SlideReader, check_file, padded_window
from napari_dfl.core.slides.metadata import read_physical_metadata
from napari_dfl.core.slides.tilecache import CachingStore, TileLRU

#: Extra levels are added until the coarsest one is at most this many pixels on a side.
COARSEST_LEVEL_MAX_PX = 2048
#: A TIFF without tiles is refused above this many pixels: every read would decode strips
#: spanning the whole width.
UNTILED_MAX_PIXELS = 20_000 * 20_000
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_ASSOCIATED = ("thumbnail", "label", "macro", "overview")


def _tiles_region(page, tiles: np.ndarray, downsample: float) -> str:
    """``"x 0-4096, y 8192-9216 at level 0"``: the level-0 box of some tiles of a page."""
    height, width = int(page.imagelength), int(page.imagewidth)
    tile_w = int(getattr(page, "tilewidth", 0) or width)
    tile_h = int(getattr(page, "tilelength", 0) or getattr(page, "rowsperstrip", 0) or height)
    across = max(1, -(-width // tile_w))
    rows, cols = tiles // across, tiles % across
    x0, x1 = cols.min() * tile_w, min(width, (cols.max() + 1) * tile_w)
    y0, y1 = rows.min() * tile_h, min(height, (rows.max() + 1) * tile_h)
    scale = float(downsample)
    return (f"x {int(x0 * scale):,}-{int(x1 * scale):,}, y {int(y0 * scale):,}-"
            f"{int(y1 * scale):,} in level-0 pixels")


def _check_tiff(path: Path) -> None:
    check_file(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic not in _TIFF_MAGICS:
        raise NotATiffError(
            f"{path.name} is not a TIFF-family slide (SVS, TIFF, OME-TIFF, NDPI); "
            "convert it to a pyramidal TIFF or install the [openslide] extra."
        )


@contextlib.contextmanager
def _quiet_tifffile():
    """Silence tifffile's log while parsing: problems surface as our own exceptions."""
    logger = logging.getLogger("tifffile")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _level_series(tif: tifffile.TiffFile) -> list[tuple[tifffile.TiffPageSeries, int]]:
    """Return ``(series, level index)`` pairs of the image pyramid, finest first."""
    if not tif.pages or not tif.series:
        raise CorruptSlideError(
            f"{Path(tif.filehandle.path).name} has a TIFF header but no readable image: the "
            "file is probably truncated or damaged. Copy it again from its source."
        )
    candidates = [
        s for s in tif.series if not any(word in (s.name or "").lower() for word in _ASSOCIATED)
    ]
    if not candidates:
        raise UnsupportedSlideError(f"{Path(tif.filehandle.path).name} holds no image series.")
    base = max(candidates, key=lambda s: _yx(s)[0] * _yx(s)[1])
    if len(base.levels) > 1:
        return [(base, i) for i in range(len(base.levels))]
    # Some writers store each level as its own series (no SubIFDs): gather tiled series of
    # the same aspect ratio and dtype that are smaller than the base.
    base_h, base_w = _yx(base)
    levels = [base]
    for series in candidates:
        if series is base or series.dtype != base.dtype or not series.pages[0].is_tiled:
            continue
        h, w = _yx(series)
        if h < base_h and abs(h / base_h - w / base_w) < 0.02:
            levels.append(series)
    return [(s, 0) for s in sorted(levels, key=lambda s: -_yx(s)[0])]


def _yx(series: tifffile.TiffPageSeries) -> tuple[int, int]:
    axes, shape = series.axes, series.shape
    return shape[axes.index("Y")], shape[axes.index("X")]


def _as_rgb(array: da.Array, axes: str, name: str) -> da.Array:
    """Return the array as (Y, X, 3) uint8, or explain why that is not possible."""
    if array.dtype != np.uint8:
        raise UnsupportedSlideError(
            f"{name} holds {array.dtype} pixels; napari-dfl analyses 8-bit RGB brightfield "
            "slides. Open it with napari's built-in reader, or convert it to 8-bit RGB."
        )
    for axis in list(axes):
        if axis not in "YXSC" and array.shape[axes.index(axis)] == 1:
            array = array[tuple(0 if a == axis else slice(None) for a in axes)]
            axes = axes.replace(axis, "")
    channel_axis = next((a for a in "SC" if a in axes), None)
    if channel_axis is None or set(axes) != {"Y", "X", channel_axis}:
        raise UnsupportedSlideError(
            f"{name} is a single-channel or multi-dimensional image ({axes}); napari-dfl "
            "analyses RGB brightfield slides. Open it with napari's built-in reader instead."
        )
    array = da.moveaxis(array, axes.index(channel_axis), -1) if axes[-1] != channel_axis else array
    if array.shape[-1] not in (3, 4):
        raise UnsupportedSlideError(
            f"{name} has {array.shape[-1]} channels; napari-dfl analyses RGB slides."
        )
    return array[..., :3]


def _coarser(array: da.Array) -> da.Array:
    """Halve a (Y, X, 3) level lazily by 2x2 averaging."""
    h, w = (array.shape[0] // 2) * 2, (array.shape[1] // 2) * 2
    even = array[:h, :w].rechunk({0: 1024, 1: 1024, 2: -1})
    return da.coarsen(np.mean, even, {0: 2, 1: 2}, trim_excess=True).astype(np.uint8)


class Slide(SlideReader):
    """A whole-slide image opened lazily.

    Args:
        path: an SVS, (pyramidal) TIFF, OME-TIFF or NDPI file.
        mpp: microns per pixel at level 0; overrides the file's value. Give it for slides
            whose metadata has none.

    Raises:
        SlideNotFoundError: the file does not exist.
        NotATiffError: the file is not a TIFF-family file.
        CorruptSlideError: the file is truncated or damaged.
        UnsupportedSlideError: a valid image that is not an 8-bit RGB slide.

    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        self.path = Path(path)
        _check_tiff(self.path)
        try:
            with _quiet_tifffile():
                self._tif = tifffile.TiffFile(self.path)
                series = _level_series(self._tif)
        except SlideError:
            raise
        except Exception as exc:  # tifffile raises many types on damaged files
            raise CorruptSlideError(
                f"{self.path.name} could not be parsed as a TIFF ({exc}); the file is "
                "probably truncated or damaged. Copy it again from its source."
            ) from exc
        self.format = self._format_name()
        self._check_ifd_chain()
        self._zarr_levels, self.levels, arrays = self._open_levels(series)
        arrays += self._extra_levels(arrays)
        self.level_arrays: list[da.Array] = arrays
        physical = read_physical_metadata(self._tif, series[0][0].pages[0])
        if mpp is not None and not (mpp > 0 and math.isfinite(mpp)):
            raise SlideError(f"mpp must be a positive number of microns per pixel, got {mpp}.")
        self.mpp: float | None = float(mpp) if mpp is not None else physical.mpp
        self.mpp_source: str | None = "user" if mpp is not None else physical.source
        self.objective_power: float | None = physical.objective_power
        profile = series[0][0].pages[0].tags.get(34675)  # InterColorProfile
        self.icc_profile = bytes(profile.value) if profile is not None and isinstance(
            profile.value, bytes | bytearray) else None
        if self.mpp is None:
            warnings.warn(
                f"{self.path.name} does not record its pixel size (microns per pixel); "
                "give it with --mpp (CLI) or the mpp field (GUI) before extracting patches.",
                MissingMppWarning,
                stacklevel=2,
            )

    # -- construction helpers -------------------------------------------------------------
    def _format_name(self) -> str:
        tif = self._tif
        for flag, name in (("is_svs", "aperio-svs"), ("is_ndpi", "hamamatsu-ndpi"),
                           ("is_ome", "ome-tiff"), ("is_philips", "philips-tiff")):
            if getattr(tif, flag, False):
                return name
        return "generic-tiff"

    def _open_levels(self, series: list[tuple[tifffile.TiffPageSeries, int]]):
        name = self.path.name
        base_h, base_w = _yx(series[0][0])
        first = series[0][0].pages[0]
        if not first.is_tiled and base_h * base_w > UNTILED_MAX_PIXELS and len(series) == 1:
            raise UnsupportedSlideError(
                f"{name} is a {base_w} x {base_h} image stored in strips, without tiles or a "
                "pyramid, so every read would decode whole rows of the slide. Convert it to a "
                "tiled pyramidal TIFF (for example: vips tiffsave IN OUT --tile --pyramid "
                "--compression jpeg) and open that."
            )
        zarr_levels, levels, arrays = [], [], []
        self.tile_cache = TileLRU()
        for s, index in series:
            axes = s.levels[index].axes
            try:
                store = CachingStore(s.aszarr(level=index), self.tile_cache, f"{len(levels)}")
                z = zarr.open_array(store, mode="r")
            except Exception as exc:
                raise CorruptSlideError(
                    f"{name}: level {len(levels)} cannot be read ({exc}). The file is probably "
                    "damaged; copy it again from its source."
                ) from exc
            array = _as_rgb(da.from_zarr(z), axes, name)
            h, w = array.shape[:2]
            zarr_levels.append((z, axes))
            levels.append(Level(w, h, (base_w / w + base_h / h) / 2))
            arrays.append(array)
        self._check_complete(series, levels)
        self._check_readable(zarr_levels[0][0])
        self._check_overview_cost(series, levels)
        return zarr_levels, levels, arrays

    def _check_ifd_chain(self) -> None:
        """Refuse a file whose last directory points past its end (a truncated copy).

        tifffile stops at such a pointer and the file opens without the levels or images
        stored after it: a pyramid level lost without a word.
        """
        tif = self._tif
        if getattr(tif, "is_ndpi", False):  # NDPI stores 64-bit offsets its own way
            return
        try:
            last = tif.pages[-1]
            header = tif.tiff
            handle = tif.filehandle
            handle.seek(last.offset)
            (count,) = struct.unpack(header.tagnoformat, handle.read(header.tagnosize))
            handle.seek(last.offset + header.tagnosize + count * header.tagsize)
            (following,) = struct.unpack(header.offsetformat, handle.read(header.offsetsize))
        except (IndexError, OSError, struct.error, AttributeError):
            return  # nothing to follow, or a layout this check does not know
        size = self.path.stat().st_size
        if following >= size:
            raise CorruptSlideError(
                f"{self.path.name} is truncated: it ends at {size:,} bytes, but its last "
                f"readable image points to more at byte {following:,} (pyramid levels or "
                "images stored after it are missing). Copy the file again from its source."
            )

    def _check_complete(self, series, levels: list[Level]) -> None:
        """Refuse a file whose stored tiles lie past its end (a truncated copy).

        A truncated file otherwise decodes its missing tiles as blank, and tissue detection
        and embedding go on silently over holes.
        """
        size = self.path.stat().st_size
        for number, ((s, index), level) in enumerate(zip(series, levels, strict=True)):
            pages = list(s.levels[index].pages)[:64]
            for page in pages:
                if page is None:
                    continue
                offsets = np.asarray(page.dataoffsets, dtype=np.int64)
                ends = offsets + np.asarray(page.databytecounts, dtype=np.int64)
                past = np.flatnonzero(ends > size)
                if not len(past):
                    continue
                region = _tiles_region(page, past, level.downsample)
                raise CorruptSlideError(
                    f"{self.path.name} is truncated: {len(past)} of {len(ends)} tiles of level "
                    f"{number} ({region}) lie past the end of the file ({size:,} bytes, "
                    f"{int(ends.max()):,} needed). Copy the file again from its source."
                )

    def _check_overview_cost(self, series, levels: list[Level]) -> None:
        """Refuse a huge slide without a pyramid: every overview would decode all of it.

        Tiles that are all empty (a header claiming pixels the file does not hold) are named
        as such.
        """
        coarsest = levels[-1]
        if coarsest.width * coarsest.height <= UNTILED_MAX_PIXELS:
            return
        base = levels[0]
        page = series[0][0].levels[series[0][1]].pages[0]
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if len(counts) and not counts.any():
            raise CorruptSlideError(
                f"{self.path.name} claims {base.width:,} x {base.height:,} pixels but holds "
                f"none: all {len(counts):,} of its tiles are empty (the file is "
                f"{self.path.stat().st_size:,} bytes). It is damaged or was never finished; "
                "copy it again from its source."
            )
        raise UnsupportedSlideError(
            f"{self.path.name} is a {base.width:,} x {base.height:,} image without a pyramid "
            f"(its smallest stored level is {coarsest.width:,} x {coarsest.height:,}): every "
            "overview would decode all of it. Convert it to a tiled pyramidal TIFF (for "
            "example: vips tiffsave IN OUT --tile --pyramid --compression jpeg) and open that."
        )

    def _check_readable(self, z: zarr.Array) -> None:
        """Decode the last tile of level 0: a truncated file fails here, not later."""
        try:
            index = tuple(slice(max(0, n - 1), n) for n in z.shape)
            z[index]
        except Exception as exc:
            raise CorruptSlideError(
                f"{self.path.name} is truncated or damaged: its last tile cannot be decoded "
                f"({type(exc).__name__}). Copy the file again from its source."
            ) from exc

    def _extra_levels(self, arrays: list[da.Array]) -> list[da.Array]:
        extra, coarsest = [], arrays[-1]
        base_w = self.levels[0].width
        while max(coarsest.shape[:2]) > COARSEST_LEVEL_MAX_PX:
            coarsest = _coarser(coarsest)
            h, w = coarsest.shape[:2]
            self.levels.append(Level(w, h, base_w / w, computed=True))
            extra.append(coarsest)
        return extra

    def _read_window(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        lv = self.levels[level]
        return padded_window(lambda a, b, c, d: self._read_zarr(level, a, b, c, d),
                             lv.width, lv.height, x0, y0, x1, y1)

    def _read_zarr(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        z, axes = self._zarr_levels[level]
        index = []
        for axis, n in zip(axes, z.shape, strict=True):
            if axis == "Y":
                index.append(slice(y0, y1))
            elif axis == "X":
                index.append(slice(x0, x1))
            elif axis in "SC" and n > 1:
                index.append(slice(None))
            else:
                index.append(0)
        try:
            block = np.asarray(z[tuple(index)])
        except Exception as exc:  # a codec error means damaged tile data
            raise CorruptSlideError(
                f"{self.path.name}: pixels at level {level}, x {x0}-{x1}, y {y0}-{y1} cannot "
                f"be decoded ({type(exc).__name__}: {exc}). The file is damaged; copy it again."
            ) from exc
        kept = [a for a, i in zip(axes, index, strict=True) if not isinstance(i, int)]
        channel = next(a for a in kept if a in "SC")
        if kept[-1] != channel:
            block = np.moveaxis(block, kept.index(channel), -1)
        return block[..., :3]

    def read_level(self, level: int) -> np.ndarray:
        """Decode a whole level (use a coarse one) as a ``(height, width, 3)`` array.

        Computed with dask's local threaded scheduler, also inside a dask.distributed
        worker (whose default client would try to ship the file-backed graph elsewhere).
        """
        if level < len(self._zarr_levels):
            level_info = self.levels[level]
            return self._read_window(level, 0, 0, level_info.width, level_info.height)
        return self.level_arrays[level].compute(scheduler="threads")

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """An RGB overview whose longer side is at most ``max_size`` pixels."""
        width, height = self.dimensions
        downsample = max(width, height) / max_size
        level = len(self.levels) - 1
        while level > 0 and self.levels[level].downsample > downsample:
            level -= 1
        if self.levels[level].downsample > downsample:
            level = 0
        image = Image.fromarray(self.read_level(level))
        image.thumbnail((max_size, max_size), Image.BILINEAR)
        return np.asarray(image)

    def close(self) -> None:
        """Release the file handle."""
        self._tif.close()
