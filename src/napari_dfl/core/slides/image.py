"""Plain images (PNG, JPEG, BMP, small TIFF) opened as one-level slides.

Patch folders and nucleus-centre tables come as ordinary images, not pyramids. An
:class:`ImageSlide` decodes such an image once, holds it in memory, and offers the reading
interface of :class:`~napari_dfl.core.slides.tiff.Slide` (``dimensions``, ``mpp``, ``levels``,
``level_arrays``, ``read_region``, ``thumbnail``...), so sampling, tissue detection and
embedding treat it like any slide.

Plain images rarely record a trustworthy pixel size (72 or 96 dpi are writer defaults), so
their metadata is not read: the mpp is the one the user gives, else an *assumed* value,
announced with a :class:`~napari_dfl.core.errors.MissingMppWarning`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from napari_dfl.core.errors import (
    CorruptSlideError,
    MissingMppWarning,
    SlideError,
    UnsupportedSlideError,
)
from napari_dfl.core.slides.base import (
    BACKGROUND,
    Level,
    SlideReader,
    check_file,
    padded_window,
    validated_mpp,
)

#: Suffixes :func:`open_slide` sends to :class:`ImageSlide` (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
#: Plain images above this many pixels are refused: they are held in memory (3 bytes per
#: pixel) and belong in a tiled pyramidal TIFF. Below Pillow's decompression-bomb error
#: limit (2 x ``Image.MAX_IMAGE_PIXELS``), so that limit never fires first.
MAX_PIXELS = 12_000 * 12_000
#: Default pixel size assumed for plain images without a user-given one (x20).
DEFAULT_ASSUMED_MPP = 0.5
_IMAGE_MAGICS = (b"\x89PNG", b"\xff\xd8\xff", b"BM")
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_HIGH_DEPTH_MODES = ("I", "F")  # and every "I;16..." mode
_TO_RGB_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "L", "LA", "La", "P", "PA", "CMYK", "YCbCr",
                 "LAB", "HSV")


def _open_image(path: Path) -> Image.Image:
    """Open an image lazily (header only), turning Pillow's failures into our messages."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise UnsupportedSlideError(_too_large_message(path, None)) from exc
    except UnidentifiedImageError as exc:
        raise CorruptSlideError(
            f"{path.name} is not a readable image (PNG, JPEG, BMP or TIFF): the file is "
            "damaged or is something else with an image's name. Export it again."
        ) from exc
    except OSError as exc:
        raise CorruptSlideError(f"{path.name} cannot be read ({exc}).") from exc
    return image


def _too_large_message(path: Path, size: tuple[int, int] | None) -> str:
    dims = f"a {size[0]} x {size[1]} image" if size else "larger than Pillow allows"
    return (
        f"{path.name} is {dims}: plain images above {MAX_PIXELS // 1_000_000} megapixels are "
        "not held in memory. Convert it to a tiled pyramidal TIFF (for example: vips "
        "tiffsave IN OUT --tile --pyramid --compression jpeg) and open that."
    )


def _check_mode(path: Path, image: Image.Image) -> None:
    mode = image.mode
    if mode.startswith("I;16") or mode in _HIGH_DEPTH_MODES:
        raise UnsupportedSlideError(
            f"{path.name} holds 16-bit or floating-point pixels ({mode}); napari-dfl analyses "
            "8-bit RGB brightfield images. Open it with napari's built-in reader, or convert "
            "it to 8-bit RGB."
        )
    if mode == "1":
        raise UnsupportedSlideError(
            f"{path.name} is a black-and-white (1-bit) image, probably a mask; napari-dfl "
            "analyses RGB brightfield images."
        )
    if mode not in _TO_RGB_MODES:
        raise UnsupportedSlideError(
            f"{path.name} has pixel mode {mode}; napari-dfl analyses 8-bit RGB images. "
            "Convert it to 8-bit RGB."
        )


def probe_image(path: str | os.PathLike) -> tuple[int, int]:
    """Check a plain image's header without decoding its pixels.

    Args:
        path: a PNG, JPEG, BMP or TIFF file.

    Returns:
        ``(width, height)`` in pixels.

    Raises:
        SlideNotFoundError: the file does not exist.
        CorruptSlideError: the file is not a readable image.
        UnsupportedSlideError: too large, 16-bit, or not convertible to RGB.

    """
    path = Path(path)
    check_file(path)
    with _open_image(path) as image:
        size = image.size
        if size[0] * size[1] > MAX_PIXELS:
            raise UnsupportedSlideError(_too_large_message(path, size))
        _check_mode(path, image)
    return size


def _decode_rgb(path: Path) -> tuple[np.ndarray, str]:
    """Decode the whole image as ``(H, W, 3)`` uint8; transparency becomes white glass."""
    probe_image(path)
    with _open_image(path) as image:
        fmt = (image.format or path.suffix.lstrip(".")).lower()
        try:
            image.load()
            if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                image.mode == "P" and "transparency" in image.info
            ):
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (BACKGROUND,) * 3 + (255,))
                rgb = Image.alpha_composite(white, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
            raise CorruptSlideError(
                f"{path.name} cannot be decoded ({type(exc).__name__}: {exc}); the file is "
                "probably truncated or damaged. Copy it again from its source."
            ) from exc
    array = np.asarray(rgb, dtype=np.uint8).copy()
    array.flags.writeable = False
    return array, fmt


class ImageSlide(SlideReader):
    """A plain image held in memory, read like a one-level :class:`Slide`.

    Args:
        path: a PNG, JPEG, BMP or (small, non-pyramidal) TIFF file.
        mpp: microns per pixel given by the user (``mpp_source == "user"``).
        assumed_mpp: used when ``mpp`` is not given (``mpp_source == "assumed"``), with a
            :class:`MissingMppWarning` that names the value. Neither given: no mpp, a
            warning, and :meth:`require_mpp` raises.

    Raises:
        SlideNotFoundError: the file does not exist.
        CorruptSlideError: the file is not a readable image, or is truncated.
        UnsupportedSlideError: too large, 16-bit, 1-bit, or another unsupported mode.
        SlideError: an invalid mpp.

    """

    def __init__(self, path: str | os.PathLike, mpp: float | None = None,
                 assumed_mpp: float | None = None) -> None:
        self.path = Path(path)
        check_file(self.path)
        mpp = validated_mpp(mpp, "mpp")
        assumed_mpp = validated_mpp(assumed_mpp, "assumed mpp")
        self._array, self.format = _decode_rgb(self.path)
        height, width = self._array.shape[:2]
        self.levels: list[Level] = [Level(width, height, 1.0)]
        self.level_arrays: list[np.ndarray] = [self._array]
        self.objective_power = None
        if mpp is not None:
            self.mpp, self.mpp_source = mpp, "user"
        elif assumed_mpp is not None:
            self.mpp, self.mpp_source = assumed_mpp, "assumed"
            warnings.warn(
                f"{self.path.name} does not record its pixel size; assuming "
                f"{assumed_mpp:g} microns per pixel (x{10 / assumed_mpp:g}). If that is wrong, "
                "give the real value with --mpp (CLI) or the mpp field (GUI).",
                MissingMppWarning,
                stacklevel=2,
            )
        else:
            self.mpp, self.mpp_source = None, None
            warnings.warn(
                f"{self.path.name} does not record its pixel size (microns per pixel); "
                "give it with --mpp (CLI) or the mpp field (GUI) before extracting patches.",
                MissingMppWarning,
                stacklevel=2,
            )

    def _read_window(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        width, height = self.dimensions
        return padded_window(lambda a, b, c, d: self._array[a:b, c:d], width, height,
                             x0, y0, x1, y1)

    def read_level(self, level: int) -> np.ndarray:
        """The whole image as a read-only ``(height, width, 3)`` array (level 0 only)."""
        if level != 0:
            raise SlideError(f"{self.path.name} has one level (0); level {level} was asked.")
        return self._array

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """An RGB overview whose longer side is at most ``max_size`` pixels."""
        image = Image.fromarray(self._array)
        image.thumbnail((max_size, max_size), Image.BILINEAR)
        return np.asarray(image)

    def close(self) -> None:
        """Nothing to release: the pixels are freed with the object."""


def is_plain_image(path: str | os.PathLike) -> bool:
    """True when :func:`open_slide` would open the file as an :class:`ImageSlide`.

    Decided by content (PNG, JPEG and BMP signatures) and, for an unreadable or unknown
    signature, by suffix; TIFF-family files are never plain images here.
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError:
        return path.suffix.lower() in IMAGE_SUFFIXES
    if magic in _TIFF_MAGICS:
        return False
    return magic.startswith(_IMAGE_MAGICS) or path.suffix.lower() in IMAGE_SUFFIXES
