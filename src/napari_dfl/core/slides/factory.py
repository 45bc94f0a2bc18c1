"""Opening any slide file with the reader that fits it (the one entry point for files).

TIFF-family files (SVS, pyramidal TIFF, OME-TIFF, NDPI) go to the tifffile reader, PNG,
JPEG and BMP images to the in-memory image reader, and other formats to the optional
OpenSlide backend when it is installed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from napari_dfl.core.errors import MissingMppWarning, NotATiffError, SlideError
from napari_dfl.core.slides.base import check_file, validated_mpp
from napari_dfl.core.slides.image import ImageSlide, is_plain_image
from napari_dfl.core.slides.openslide_backend import OpenSlideSlide, openslide_available
from napari_dfl.core.slides.tiff import Slide

__all__ = ["open_slide"]


def open_slide(path: str | os.PathLike, mpp: float | None = None,
               assumed_mpp: float | None = None) -> Slide | ImageSlide:
    """Open a whole-slide image or a plain image with the matching class.

    PNG, JPEG and BMP files (by signature, else by suffix) become :class:`ImageSlide`;
    everything else goes to :class:`Slide`, whose messages explain what it cannot open.
    Files that are not TIFFs go to the optional OpenSlide backend when it is installed
    (:class:`~napari_dfl.core.slides.openslide_backend.OpenSlideSlide`).
    A TIFF without a pyramid is a ``Slide`` too (it reads it lazily, with computed levels).

    Args:
        path: the file.
        mpp: microns per pixel given by the user; overrides the file's value.
        assumed_mpp: used only when neither ``mpp`` nor the file gives one; the slide's
            ``mpp_source`` is then ``"assumed"`` and a :class:`MissingMppWarning` says so.

    Returns:
        The opened slide.

    """
    path = Path(path)
    check_file(path)
    if is_plain_image(path):
        return ImageSlide(path, mpp=mpp, assumed_mpp=assumed_mpp)
    assumed_mpp = validated_mpp(assumed_mpp, "assumed mpp")
    with warnings.catch_warnings():
        if assumed_mpp is not None:
            warnings.simplefilter("ignore", MissingMppWarning)
        try:
            slide = Slide(path, mpp=mpp)
        except NotATiffError:
            if not openslide_available():
                raise
            try:
                slide = OpenSlideSlide(path, mpp=mpp)
            except SlideError:
                raise NotATiffError(
                    f"{path.name} is neither a TIFF-family slide (SVS, TIFF, OME-TIFF, NDPI) "
                    "nor a format OpenSlide reads (MIRAX, VMS, ...); check the file, or "
                    "convert it to a pyramidal TIFF."
                ) from None
    if slide.mpp is None and assumed_mpp is not None:
        slide.mpp, slide.mpp_source = assumed_mpp, "assumed"
        warnings.warn(
            f"{path.name} does not record its pixel size; assuming {assumed_mpp:g} microns "
            "per pixel. If that is wrong, give the real value with --mpp (CLI) or the mpp "
            "field (GUI).",
            MissingMppWarning,
            stacklevel=2,
        )
    return slide
