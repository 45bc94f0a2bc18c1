"""Opening any slide file with the reader that fits it (the one entry point for files).

TIFF-family files (SVS, pyramidal TIFF, OME-TIFF, NDPI) go to the tifffile reader, PNG,
JPEG and BMP images to the in-memory image reader, and other formats to the optional
OpenSlide backend when it is installed. DICOM slides (a ``.dcm`` file, or a folder of the
``.dcm`` files of one slide) go straight to OpenSlide.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from napari_dfl.core.errors import (
    MissingDependencyError,
    MissingMppWarning,
    NotATiffError,
    SlideError,
    UnsupportedSlideError,
)
from napari_dfl.core.slides.base import check_file, validated_mpp
from napari_dfl.core.slides.image import ImageSlide, is_plain_image
from napari_dfl.core.slides.openslide_backend import OpenSlideSlide, openslide_available
from napari_dfl.core.slides.probe import (
    DICOM_EXTENSIONS,
    OPENSLIDE_INSTALL,
    TIFF_EXTENSIONS,
    WSI_SOP_CLASS,
    dicom_files,
    dicom_meta,
    is_dicom,
)
from napari_dfl.core.slides.tiff import Slide

__all__ = ["open_slide"]


def _is_dicom_slide(path: Path) -> bool:
    """Whether ``path`` is a folder of ``.dcm`` files or a DICOM file (not a DICOM-TIFF).

    Raises:
        SlideError: a folder without ``.dcm`` files.

    """
    if path.is_dir():
        dicom_files(path)  # raises the message for a folder without .dcm files
        return True
    if not path.is_file():  # missing, a pipe, a device: check_file says which
        return False
    name = path.name.lower()
    return not name.endswith(TIFF_EXTENSIONS) and (name.endswith(DICOM_EXTENSIONS)
                                                   or is_dicom(path))


def _open_file(path: Path, mpp: float | None) -> Slide | OpenSlideSlide:
    """A TIFF-family slide, else (with the extra) one OpenSlide reads."""
    try:
        return Slide(path, mpp=mpp)
    except NotATiffError:
        if not openslide_available():
            raise
        try:
            return OpenSlideSlide(path, mpp=mpp)
        except SlideError:
            raise NotATiffError(
                f"{path.name} is neither a TIFF-family slide (SVS, TIFF, OME-TIFF, NDPI) "
                "nor a format OpenSlide reads (MIRAX, VMS, DICOM, ...); check the file, or "
                "convert it to a pyramidal TIFF."
            ) from None


def open_slide(path: str | os.PathLike, mpp: float | None = None,
               assumed_mpp: float | None = None) -> Slide | ImageSlide | OpenSlideSlide:
    """Open a whole-slide image or a plain image with the matching class.

    PNG, JPEG and BMP files (by signature, else by suffix) become :class:`ImageSlide`;
    everything else goes to :class:`Slide`, whose messages explain what it cannot open.
    Files that are not TIFFs go to the optional OpenSlide backend when it is installed
    (:class:`~napari_dfl.core.slides.openslide_backend.OpenSlideSlide`).
    A TIFF without a pyramid is a ``Slide`` too (it reads it lazily, with computed levels).
    A DICOM whole-slide image (a ``.dcm`` file of it, or the folder of its files: a folder is
    one slide) opens through OpenSlide, which reads every level of the series in the folder.

    Args:
        path: the file, or a DICOM slide's folder.
        mpp: microns per pixel given by the user; overrides the file's value.
        assumed_mpp: used only when neither ``mpp`` nor the file gives one; the slide's
            ``mpp_source`` is then ``"assumed"`` and a :class:`MissingMppWarning` says so.

    Returns:
        The opened slide.

    Raises:
        SlideError: the file cannot be opened; its subclasses and message say why.
        MissingDependencyError: a DICOM slide without the [openslide] extra.

    """
    path = Path(path)
    dicom = _is_dicom_slide(path)
    if dicom and not openslide_available():
        sop_class = None if path.is_dir() else dicom_meta(path).get("MediaStorageSOPClassUID")
        if sop_class not in (None, WSI_SOP_CLASS):
            raise UnsupportedSlideError(
                f"{path.name} is a DICOM image but not a whole-slide image (SOP class "
                f"{sop_class}); napari-dfl reads VL Whole Slide Microscopy images.")
        raise MissingDependencyError(
            f"{path.name} is a DICOM slide; reading it needs OpenSlide: {OPENSLIDE_INSTALL}.")
    if not dicom:
        check_file(path)
        if is_plain_image(path):
            return ImageSlide(path, mpp=mpp, assumed_mpp=assumed_mpp)
    assumed_mpp = validated_mpp(assumed_mpp, "assumed mpp")
    with warnings.catch_warnings():
        if assumed_mpp is not None:
            warnings.simplefilter("ignore", MissingMppWarning)
        if dicom:
            slide = OpenSlideSlide(path, mpp=validated_mpp(mpp, "mpp"))
        else:
            slide = _open_file(path, mpp)
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
