"""What every slide reader shares: levels, pixel size, and reading at a target pixel size.

:class:`~napari_dfl.core.slides.tiff.Slide` (tifffile), :class:`~napari_dfl.core.slides.image.
ImageSlide` (plain images) and :class:`~napari_dfl.core.slides.openslide_backend.OpenSlideSlide`
differ only in how they read a window of one level; choosing the level, resampling with the
exact fractional window, padding and the metadata summary live here.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from napari_dfl.core.errors import SlideError, SlideNotFoundError

#: Value used to pad regions that extend past the slide border (white glass).
BACKGROUND = 255


@dataclass(frozen=True)
class Level:
    """One resolution of the pyramid.

    Attributes:
        width: width in pixels.
        height: height in pixels.
        downsample: level-0 pixels per pixel of this level.
        computed: True when napari-dfl computed this level (the file has no such level).
    """

    width: int
    height: int
    downsample: float
    computed: bool = False


class SlideReader(ABC):
    """Base of the slide readers; subclasses set the attributes and read windows.

    Attributes:
        path: the file.
        format: a short format name.
        levels: the pyramid, finest first (computed levels last).
        mpp: level-0 microns per pixel, or None.
        mpp_source: where ``mpp`` came from, or None.
        objective_power: scanning objective, or None.
        icc_profile: the ICC colour profile embedded in the file, or None. It is reported,
            not applied: pixels are used as stored (see ``docs/slides.md``).
    """

    path: Path
    format: str
    levels: list[Level]
    mpp: float | None
    mpp_source: str | None
    objective_power: float | None = None
    icc_profile: bytes | None = None

    @property
    def readable_levels(self) -> int:
        """Number of levels :meth:`_read_window` reads directly (computed ones excluded)."""
        return sum(not level.computed for level in self.levels)

    @abstractmethod
    def _read_window(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels ``[y0:y1, x0:x1]`` of a level as RGB uint8, padded with white outside."""

    @abstractmethod
    def close(self) -> None:
        """Release the file."""

    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 ``(width, height)`` in pixels."""
        return self.levels[0].width, self.levels[0].height

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel of a level, or None when the slide has no mpp."""
        return None if self.mpp is None else self.mpp * self.levels[level].downsample

    def require_mpp(self) -> float:
        """Return the level-0 mpp or raise a message telling the user how to give it."""
        if self.mpp is None:
            raise SlideError(
                f"{self.path.name} does not record its pixel size (microns per pixel). "
                "Give it with --mpp (CLI) or the mpp field (GUI); 0.25 is typical at x40, "
                "0.5 at x20."
            )
        return self.mpp

    def best_level(self, downsample: float) -> int:
        """Index of the coarsest readable level whose downsample does not exceed ``downsample``."""
        best = 0
        for i, level in enumerate(self.levels[: self.readable_levels]):
            if level.downsample <= downsample * 1.001:
                best = i
        return best

    def read_region(
        self,
        location: tuple[float, float],
        size: tuple[int, int],
        mpp: float | None = None,
        *,
        downsample: float | None = None,
    ) -> np.ndarray:
        """Read a region as an RGB array, resampled to a target pixel size.

        Args:
            location: level-0 ``(x, y)`` of the region's top-left corner (may be negative or
                past the border: the outside is padded with white).
            size: ``(width, height)`` of the output in pixels.
            mpp: target microns per pixel (0.5 for x20). Requires the slide's mpp.
            downsample: alternatively, level-0 pixels per output pixel. Default 1.

        Returns:
            A ``(height, width, 3)`` uint8 array.
        """
        if mpp is not None:
            downsample = mpp / self.require_mpp()
        downsample = 1.0 if downsample is None else float(downsample)
        out_w, out_h = int(size[0]), int(size[1])
        level = self.best_level(downsample)
        level_ds = self.levels[level].downsample
        # The region in this level's pixel coordinates (fractional).
        fx0, fy0 = location[0] / level_ds, location[1] / level_ds
        fx1 = fx0 + out_w * downsample / level_ds
        fy1 = fy0 + out_h * downsample / level_ds
        x0, y0 = math.floor(fx0 + 1e-6), math.floor(fy0 + 1e-6)
        x1, y1 = math.ceil(fx1 - 1e-6), math.ceil(fy1 - 1e-6)
        window = self._read_window(level, x0, y0, x1, y1)
        if window.shape[1] == out_w and window.shape[0] == out_h:
            return window
        # The window starts at floor(f + 1e-6): clamp the offset a rounding hair below 0.
        box = (max(0.0, fx0 - x0), max(0.0, fy0 - y0), fx1 - x0, fy1 - y0)
        image = Image.fromarray(window).resize((out_w, out_h), Image.BILINEAR, box=box,
                                               reducing_gap=3.0)
        return np.asarray(image)

    def describe(self) -> dict:
        """A JSON-serialisable summary of the slide (no pixel data)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "width": self.dimensions[0],
            "height": self.dimensions[1],
            "levels": [
                {"width": lv.width, "height": lv.height, "downsample": round(lv.downsample, 4),
                 "computed": lv.computed}
                for lv in self.levels
            ],
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "icc_profile": describe_icc_profile(self.icc_profile),
        }

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return (f"{type(self).__name__}({self.path.name!r}, {w}x{h}, "
                f"levels={len(self.levels)}, mpp={self.mpp})")


def describe_icc_profile(profile: bytes | None) -> dict | None:
    """``{"bytes": n, "name": ...}`` of an embedded ICC profile, or None without one.

    The name is the profile's description as littlecms reads it (e.g. ``sRGB
    IEC61966-2.1``), or None when the profile cannot be parsed.
    """
    if not profile:
        return None
    name = None
    try:
        import io

        from PIL import ImageCms

        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))
        name = name.strip() or None
    except (OSError, ValueError, TypeError, ImportError):  # a damaged or exotic profile
        name = None
    return {"bytes": len(profile), "name": name}


def padded_window(read, width: int, height: int, x0: int, y0: int, x1: int,
                  y1: int) -> np.ndarray:
    """Read ``[y0:y1, x0:x1]`` of a ``width x height`` level, padding outside with white.

    ``read(y0, y1, x0, x1)`` reads inside the level; a window wholly inside is returned as
    read, without a padding buffer.
    """
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:
        return read(y0, y1, x0, x1)
    out = np.full((max(0, y1 - y0), max(0, x1 - x0), 3), BACKGROUND, dtype=np.uint8)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 > cx0 and cy1 > cy0:
        out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = read(cy0, cy1, cx0, cx1)
    return out


def check_file(path: Path) -> None:
    """Refuse a path that is not an existing regular file, saying what it is instead.

    A folder, a named pipe or a device would hang or fail later in a reader, with a
    message that does not say why.

    Raises:
        SlideNotFoundError: nothing at ``path``.
        SlideError: a folder or another kind of file.

    """
    if not path.exists():
        raise SlideNotFoundError(f"{path}: no such file. Check the path and try again.")
    if path.is_dir():
        raise SlideError(f"{path} is a folder; give the path of an image file inside it.")
    if not path.is_file():
        raise SlideError(f"{path} is not a regular file (a pipe or a device?); give the path "
                         "of a slide file.")


def validated_mpp(value: float | None, what: str) -> float | None:
    """``value`` as a positive finite float (None stays None).

    Raises:
        SlideError: naming ``what`` (e.g. ``"mpp"``) and the bad value.

    """
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise SlideError(f"{what} must be a positive number of microns per pixel, got {value!r}.")
    return number
