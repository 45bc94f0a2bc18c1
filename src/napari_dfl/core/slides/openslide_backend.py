"""OpenSlide as a second backend, for formats tifffile cannot read (MIRAX, VMS, DICOM...).

Optional: install with ``pip install napari-dfl[openslide]``. A DICOM slide is a series of
``.dcm`` files in one folder (one per level, plus label and overview images); it opens from
the folder or from any of its files, and its ``path`` is then the level-0 file, whichever
was given, so that stores and caches keyed on the file find it again. The class has the reading
interface of :class:`~napari_dfl.core.slides.tiff.Slide` (levels, lazy dask arrays per level,
``read_region`` at a target pixel size, ``thumbnail``, ``describe``), so the rest of the
core works with either. Transparent pixels (outside scanned areas) become white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
from PIL import Image

from napari_dfl.core.errors import (
    MissingMppWarning,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
)
from napari_dfl.core.slides.base import BACKGROUND, Level, SlideReader
from napari_dfl.core.slides.probe import WSI_SOP_CLASS, dicom_files, dicom_meta

#: Chunk side of the dask arrays napari reads.
CHUNK = 512


def openslide_available() -> bool:
    """Whether the optional OpenSlide backend can be imported."""
    try:
        import openslide  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def _rgb(region: Image.Image) -> np.ndarray:
    """Composite an RGBA OpenSlide region on white and return RGB uint8."""
    rgba = np.asarray(region, dtype=np.uint8)
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + BACKGROUND * (1 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def _dicom_meta_or_empty(path: Path) -> dict[str, str]:
    """:func:`dicom_meta` of a file, empty when it cannot be read."""
    try:
        return dicom_meta(path)
    except OSError:
        return {}


class _LevelReader:
    """Array-like view of one OpenSlide level for ``dask.array.from_array``."""

    def __init__(self, handle, level: int, downsample: float, size: tuple[int, int]) -> None:
        self._handle, self._level, self._downsample = handle, level, downsample
        self.shape = (size[1], size[0], 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3

    def __getitem__(self, index) -> np.ndarray:
        rows, cols = index[0], index[1]
        y0, y1, _ = rows.indices(self.shape[0])
        x0, x1, _ = cols.indices(self.shape[1])
        location = (round(x0 * self._downsample), round(y0 * self._downsample))
        region = self._handle.read_region(location, self._level, (x1 - x0, y1 - y0))
        return _rgb(region)[(slice(None), slice(None), *index[2:])]


def dicom_entry(folder: str | os.PathLike) -> Path:
    """The file to open a DICOM slide folder by: its largest whole-slide ``.dcm`` file.

    OpenSlide opens the whole series (every level in the folder) from any one of its files.

    Raises:
        SlideError: the folder holds no ``.dcm`` file, or none of a whole-slide image.

    """
    folder = Path(folder)
    files = dicom_files(folder)
    for file in files:
        try:
            if dicom_meta(file).get("MediaStorageSOPClassUID") == WSI_SOP_CLASS:
                return file
        except OSError:
            continue
    raise UnsupportedSlideError(
        f"{folder} holds {len(files)} .dcm file(s), but none is a DICOM whole-slide image "
        "(VL Whole Slide Microscopy); napari-dfl reads only those.")


def _dicom_level0_file(entry: Path, sop_instance: str | None) -> Path:
    """The file of the series' folder whose SOP instance is level 0's (else ``entry``)."""
    if not sop_instance:
        return entry
    if dicom_meta(entry).get("MediaStorageSOPInstanceUID") == sop_instance:
        return entry
    for file in dicom_files(entry.parent):
        try:
            if dicom_meta(file).get("MediaStorageSOPInstanceUID") == sop_instance:
                return file
        except OSError:
            continue
    return entry


class OpenSlideSlide(SlideReader):
    """A slide read through OpenSlide.

    Args:
        path: any format OpenSlide reads; for DICOM, a ``.dcm`` file of the slide or the
            folder of its files.
        mpp: level-0 microns per pixel, overriding the file's.
    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None) -> None:
        import openslide

        self.path = Path(path)
        if not self.path.exists():
            raise SlideNotFoundError(f"{self.path}: no such file. Check the path and try again.")
        if self.path.is_dir():
            self.path = dicom_entry(self.path)
        try:
            self._handle = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideError as exc:
            meta = _dicom_meta_or_empty(self.path)
            sop_class = meta.get("MediaStorageSOPClassUID", WSI_SOP_CLASS)
            if meta and sop_class != WSI_SOP_CLASS:
                raise UnsupportedSlideError(
                    f"{self.path.name} is a DICOM image but not a whole-slide image (SOP class "
                    f"{sop_class}); napari-dfl reads VL Whole Slide Microscopy images.") from exc
            raise SlideError(f"{self.path.name}: OpenSlide cannot read it ({exc}).") from exc
        props = self._handle.properties
        self.format = f"openslide-{openslide.OpenSlide.detect_format(str(self.path))}"
        if self.format == "openslide-dicom":
            self.path = _dicom_level0_file(
                self.path, props.get("dicom.MediaStorageSOPInstanceUID"))
        self.levels = [
            Level(w, h, float(ds))
            for (w, h), ds in zip(self._handle.level_dimensions,
                                  self._handle.level_downsamples, strict=True)
        ]
        self.level_arrays = [
            da.from_array(_LevelReader(self._handle, i, lv.downsample, (lv.width, lv.height)),
                          chunks=(CHUNK, CHUNK, 3), asarray=True, fancy=False)
            for i, lv in enumerate(self.levels)
        ]
        file_mpp = props.get("openslide.mpp-x")
        self.mpp = float(mpp) if mpp is not None else (float(file_mpp) if file_mpp else None)
        self.mpp_source = "user" if mpp is not None else ("openslide" if file_mpp else None)
        power = props.get("openslide.objective-power")
        self.objective_power = float(power) if power else None
        profile = getattr(self._handle, "color_profile", None)  # openslide-python >= 1.3
        self.icc_profile = profile.tobytes() if profile is not None else None
        if self.mpp is None:
            warnings.warn(f"{self.path.name} does not record its pixel size; give it with "
                          "--mpp (CLI) or the mpp field (GUI).", MissingMppWarning, stacklevel=2)

    def _read_window(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        # OpenSlide returns transparent pixels outside the slide: white once composited.
        downsample = self.levels[level].downsample
        region = self._handle.read_region((round(x0 * downsample), round(y0 * downsample)),
                                          level, (x1 - x0, y1 - y0))
        return _rgb(region)

    def read_level(self, level: int) -> np.ndarray:
        """Decode a whole level (use a coarse one)."""
        lv = self.levels[level]
        return _rgb(self._handle.read_region((0, 0), level, (lv.width, lv.height)))

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """An RGB overview at most ``max_size`` on its longer side."""
        return _rgb(self._handle.get_thumbnail((max_size, max_size)).convert("RGBA"))

    def close(self) -> None:
        """Release the file."""
        self._handle.close()
