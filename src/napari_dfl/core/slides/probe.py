"""Whether a file is a slide napari-dfl reads, decided from its header alone.

napari asks every reader plugin about every file dropped on the viewer, so the answer must
be cheap: the TIFF magic and the first image directory's tags (bits, samples per pixel),
read by :mod:`tifffile` without decoding a pixel; the extension for the formats OpenSlide
reads (MIRAX, VMS, ...); for DICOM, the 128-byte preamble, the ``DICM`` magic and the file
meta group (its SOP class says whether it is a whole-slide image). A folder is a slide when
it holds the ``.dcm`` files of a DICOM slide. Opening the slide
(:func:`~napari_dfl.core.slides.factory.open_slide`) is the reader's work, done when napari
calls it; a damaged file is let through here so that the opening names what is wrong.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from napari_dfl.core.errors import NotATiffError, SlideError, UnsupportedSlideError
from napari_dfl.core.slides.base import check_file

__all__ = [
    "DICOM_EXTENSIONS",
    "OPENSLIDE_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "dicom_files",
    "dicom_meta",
    "has_dicom_files",
    "is_dicom",
    "probe_slide",
]

#: Extensions of TIFF-family slides (read by :class:`~napari_dfl.core.slides.tiff.Slide`).
TIFF_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".ome.tif", ".ome.tiff")
#: Extensions of slides only the optional OpenSlide backend reads.
OPENSLIDE_EXTENSIONS = (".mrxs", ".vms", ".vmu", ".svslide")
#: Extension of DICOM files; a DICOM slide is a folder of them (read by OpenSlide too).
DICOM_EXTENSIONS = (".dcm",)
#: SOP class of DICOM whole-slide images (VL Whole Slide Microscopy Image Storage).
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
#: What to install for the formats only OpenSlide reads.
OPENSLIDE_INSTALL = 'pip install "napari-dfl[openslide]"'

_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# Explicit-VR value representations whose length takes 4 bytes (after 2 reserved ones).
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
             b"UT", b"UV"}
_META_BYTES = 16384  # the file meta group is a few hundred bytes


def _openslide_available() -> bool:
    from napari_dfl.core.slides.openslide_backend import openslide_available

    return openslide_available()


def probe_slide(path: str | os.PathLike) -> str:
    """Say how a slide would be read, from its header only (no pixel is decoded).

    Args:
        path: the file, or a folder of the ``.dcm`` files of a DICOM slide.

    Returns:
        ``"tiff"`` (the TIFF reader) or ``"openslide"`` (the optional OpenSlide backend,
        DICOM included).
        A TIFF whose first directory cannot be parsed is ``"tiff"`` too: opening it raises
        the message that says what is damaged.

    Raises:
        SlideError: no such file, a folder without ``.dcm`` files or a pipe (from
            ``check_file``).
        NotATiffError: neither a TIFF nor a format OpenSlide reads here (a DICOM slide
            without the [openslide] extra, a ``.dcm`` file that is not DICOM).
        UnsupportedSlideError: a valid TIFF that is not an 8-bit RGB slide (16-bit,
            single-channel): napari's built-in reader is the one for it; a DICOM file
            that is not a whole-slide image (CT, MR...).

    """
    path = Path(path)
    if path.is_dir() and has_dicom_files(path):
        return _probe_dicom(dicom_files(path)[0], folder=path)
    check_file(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    name = path.name.lower()
    if magic not in _TIFF_MAGICS and (name.endswith(DICOM_EXTENSIONS) or is_dicom(path)):
        return _probe_dicom(path)
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


def is_dicom(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM Part 10: a 128-byte preamble, then ``DICM``."""
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def dicom_meta(path: str | os.PathLike) -> dict[str, str]:
    """The text elements of a DICOM file's meta group, by keyword, read from its header.

    Only the file meta information (group 0002, explicit VR little endian, a few hundred
    bytes after the ``DICM`` magic) is parsed: ``MediaStorageSOPClassUID``,
    ``MediaStorageSOPInstanceUID`` and ``TransferSyntaxUID`` when present.

    Returns:
        The keywords found; empty when the file is not DICOM Part 10.

    """
    names = {0x0002: "MediaStorageSOPClassUID", 0x0003: "MediaStorageSOPInstanceUID",
             0x0010: "TransferSyntaxUID"}
    with open(path, "rb") as handle:
        head = handle.read(_META_BYTES)
    if head[128:132] != b"DICM":
        return {}
    found: dict[str, str] = {}
    at = 132
    while at + 8 <= len(head):
        group = int.from_bytes(head[at:at + 2], "little")
        element = int.from_bytes(head[at + 2:at + 4], "little")
        if group != 0x0002:
            break
        vr = head[at + 4:at + 6]
        if vr in _LONG_VRS:
            length = int.from_bytes(head[at + 8:at + 12], "little")
            at += 12
        else:
            length = int.from_bytes(head[at + 6:at + 8], "little")
            at += 8
        if element in names and at + length <= len(head):
            found[names[element]] = head[at:at + length].rstrip(b"\x00 ").decode("ascii",
                                                                                  "replace")
        at += length
    return found


def has_dicom_files(folder: str | os.PathLike) -> bool:
    """Whether a folder holds a ``.dcm`` file (stops at the first; nothing is opened)."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.lower().endswith(DICOM_EXTENSIONS) and entry.is_file()
                       for entry in entries)
    except OSError:
        return False


def dicom_files(folder: str | os.PathLike) -> list[Path]:
    """The ``.dcm`` files of a folder, largest first (level 0 of a slide is usually largest).

    Raises:
        SlideError: the folder holds no ``.dcm`` file.

    """
    folder = Path(folder)
    with os.scandir(folder) as entries:
        files = [(entry.stat().st_size, entry.name) for entry in entries
                 if entry.name.lower().endswith(DICOM_EXTENSIONS) and entry.is_file()]
    if not files:
        raise SlideError(
            f"{folder} is a folder without .dcm files; a folder opens as a slide only when it "
            "holds the .dcm files of one DICOM slide. Give the path of a slide file instead.")
    files.sort(key=lambda item: (-item[0], item[1]))
    return [folder / name for _, name in files]


def _probe_dicom(path: Path, folder: Path | None = None) -> str:
    """``"openslide"`` for a DICOM whole-slide image, else the error that says what it is."""
    where = f"{folder} holds DICOM files, but {path.name}" if folder else path.name
    try:
        sop_class = dicom_meta(path).get("MediaStorageSOPClassUID")
    except OSError:
        return "openslide"  # unreadable now: opening it names the problem
    if sop_class is None:
        raise NotATiffError(f"{where} is not a DICOM file (no DICM header); check the file.")
    if sop_class != WSI_SOP_CLASS:
        raise UnsupportedSlideError(
            f"{where} is a DICOM image but not a whole-slide image (SOP class {sop_class}); "
            "napari-dfl reads VL Whole Slide Microscopy images. Open it with a DICOM reader.")
    if not _openslide_available():
        raise NotATiffError(
            f"{(folder or path).name} is a DICOM slide; reading it needs OpenSlide: "
            f"{OPENSLIDE_INSTALL}.")
    return "openslide"
