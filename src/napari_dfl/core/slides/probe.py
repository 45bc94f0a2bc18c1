"""Whether a file is a slide napari-dfl reads, decided from its header alone.

napari asks every reader plugin about every file dropped on the viewer, so the answer must
be cheap: the TIFF magic and the first image directory's tags (bits, samples per pixel),
read by :mod:`tifffile` without decoding a pixel; the extension for the formats OpenSlide
reads (MIRAX, VMS, ...). Opening the slide (:func:`~napari_dfl.core.slides.factory.open_slide`)
is the reader's work, done when napari calls it; a damaged file is let through here so
that the opening names what is wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from napari_dfl.core.errors import NotATiffError, UnsupportedSlideError
from napari_dfl.core.slides.base import check_file

__all__ = ["OPENSLIDE_EXTENSIONS", "TIFF_EXTENSIONS", "probe_slide"]

#: Extensions of TIFF-family slides (read by :class:`~napari_dfl.core.slides.tiff.Slide`).
TIFF_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".ome.tif", ".ome.tiff")
#: Extensions of slides only the optional OpenSlide backend reads.
OPENSLIDE_EXTENSIONS = (".mrxs", ".vms", ".vmu", ".svslide")

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _openslide_available() -> bool:
    from napari_dfl.core.slides.openslide_backend import openslide_available

    return openslide_available()


def probe_slide(path: str | os.PathLike) -> str:
    """Say how a slide would be read, from its header only (no pixel is decoded).

    Args:
        path: the file.

    Returns:
        ``"tiff"`` (the TIFF reader) or ``"openslide"`` (the optional OpenSlide backend).
        A TIFF whose first directory cannot be parsed is ``"tiff"`` too: opening it raises
        the message that says what is damaged.

    Raises:
        SlideError: no such file, or a folder or a pipe (from ``check_file``).
        NotATiffError: neither a TIFF nor a format OpenSlide reads here.
        UnsupportedSlideError: a valid TIFF that is not an 8-bit RGB slide (16-bit,
            single-channel): napari's built-in reader is the one for it.

    """
    path = Path(path)
    check_file(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    name = path.name.lower()
    if magic not in _TIFF_MAGICS:
        if name.endswith(OPENSLIDE_EXTENSIONS):
            if _openslide_available():
                return "openslide"
            raise NotATiffError(
                f"{path.name} is a slide format only OpenSlide reads; install the "
                "[openslide] extra (pip install 'napari-dfl[openslide]') to open it.")
        raise NotATiffError(
            f"{path.name} is not a TIFF-family slide (SVS, TIFF, OME-TIFF, NDPI); convert it "
            "to a pyramidal TIFF or install the [openslide] extra.")
    _check_first_directory(path)
    return "tiff"


def _check_first_directory(path: Path) -> None:
    """Refuse a TIFF whose first image is not 8-bit colour, from its tags only."""
    import tifffile

    logger = logging.getLogger("tifffile")
    previous = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            bits = page.bitspersample
            samples = page.samplesperpixel
            dtype = page.dtype
            ome = tif.is_ome
    except Exception:  # damaged: opening the slide names the damage
        return
    finally:
        logger.setLevel(previous)
    if bits != 8 or (dtype is not None and dtype.itemsize != 1):
        raise UnsupportedSlideError(
            f"{path.name} holds {dtype or f'{bits}-bit'} pixels; napari-dfl analyses 8-bit RGB "
            "brightfield slides. Open it with napari's built-in reader, or convert it to "
            "8-bit RGB.")
    # An OME-TIFF may hold its colour channels as separate planes: its opening decides.
    if samples < 3 and not ome:
        raise UnsupportedSlideError(
            f"{path.name} is a single-channel image; napari-dfl analyses RGB brightfield "
            "slides. Open it with napari's built-in reader instead.")
