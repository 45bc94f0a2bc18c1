"""Writing small DICOM whole-slide images for the tests (VL Whole Slide Microscopy Image IOD).

One file per pyramid level, all of one series: TILED_FULL frames of baseline JPEG
(YBR_FULL_422), the pixel spacing in the shared functional groups (so OpenSlide gives the
mpp), ImageType ORIGINAL\\PRIMARY\\VOLUME\\NONE for level 0 and DERIVED\\...\\RESAMPLED for
the others. Also a plain CT-like DICOM, which is not a slide. Needs pydicom (the test extra).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _jpeg(tile: np.ndarray) -> bytes:
    """A baseline JPEG of one RGB tile, YCbCr with 4:2:2 chroma (DICOM's YBR_FULL_422)."""
    out = io.BytesIO()
    Image.fromarray(tile).save(out, format="JPEG", quality=95, subsampling=1)
    return out.getvalue()


def _tiles(pixels: np.ndarray, tile: int) -> tuple[np.ndarray, int, int]:
    """``pixels`` padded with white to whole tiles, and the tiles across and down."""
    height, width = pixels.shape[:2]
    across, down = -(-width // tile), -(-height // tile)
    padded = np.full((down * tile, across * tile, 3), 255, np.uint8)
    padded[:height, :width] = pixels
    return padded, across, down


def decoded(pixels: np.ndarray, tile: int) -> np.ndarray:
    """What a JPEG decoder gives back for a level written by :func:`write_level` (Pillow's)."""
    padded, across, down = _tiles(pixels, tile)
    out = np.empty_like(padded)
    for r in range(down):
        for c in range(across):
            window = (slice(r * tile, (r + 1) * tile), slice(c * tile, (c + 1) * tile))
            out[window] = np.asarray(Image.open(io.BytesIO(_jpeg(padded[window]))).convert("RGB"))
    return out[:pixels.shape[0], :pixels.shape[1]]


def downsample2(pixels: np.ndarray) -> np.ndarray:
    """The 2x downsample :func:`write_wsi` writes as level 1."""
    height, width = pixels.shape[:2]
    return np.asarray(Image.fromarray(pixels).resize((width // 2, height // 2), Image.BILINEAR,
                                                     reducing_gap=3.0))


def _meta(sop_class: str, sop_instance: str, syntax: str):
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = syntax
    return meta


def write_level(path: Path, pixels: np.ndarray, mpp: float, tile: int, series: dict,
                level0: bool) -> Path:
    """Write one level of a DICOM WSI: ``pixels`` (RGB uint8) in ``tile``-square frames.

    Args:
        path: the .dcm file to write.
        pixels: the level's ``(height, width, 3)`` pixels.
        mpp: this level's microns per pixel.
        tile: the frame side in pixels (edge frames are padded with white).
        series: the UIDs shared by the levels (``study``, ``series``, ``frame``).
        level0: whether this is the full-resolution level (its ImageType).

    """
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import generate_uid

    height, width = pixels.shape[:2]
    padded, across, down = _tiles(pixels, tile)
    frames = [_jpeg(padded[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile])
              for r in range(down) for c in range(across)]  # TILED_FULL: row by row

    ds = Dataset()
    sop_instance = generate_uid()
    ds.file_meta = _meta(WSI_SOP_CLASS, sop_instance, JPEG_BASELINE)
    ds.SOPClassUID, ds.SOPInstanceUID = WSI_SOP_CLASS, sop_instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = series["study"], series["series"]
    ds.FrameOfReferenceUID = series["frame"]
    ds.Modality = "SM"
    ds.ImageType = (["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if level0
                    else ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"])
    ds.InstanceNumber = 1 if level0 else 2
    ds.PatientName, ds.PatientID = "Test^Slide", "dfl-test"
    ds.ContainerIdentifier = "dfl-test-slide"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 3, "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
    ds.Rows, ds.Columns = tile, tile
    ds.NumberOfFrames = len(frames)
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.DimensionOrganizationType = "TILED_FULL"
    measures = Dataset()
    spacing_mm = f"{mpp / 1000:.10g}"
    measures.PixelSpacing = [spacing_mm, spacing_mm]  # row spacing, column spacing (mm)
    measures.SliceThickness = "0.001"
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    ds.ImagedVolumeWidth = width * mpp / 1000
    ds.ImagedVolumeHeight = height * mpp / 1000
    ds.ImagedVolumeDepth = 0.001
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def write_wsi(folder: Path, level0: np.ndarray, mpp: float, tile: int = 256) -> list[Path]:
    """Write a two-level DICOM WSI (``level0`` and its 2x downsample) into ``folder``.

    Returns:
        The two files, level 0 first.

    """
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    half = downsample2(level0)
    return [write_level(folder / "level-0.dcm", level0, mpp, tile, series, True),
            write_level(folder / "level-1.dcm", half, mpp * 2, tile, series, False)]


def write_ct(path: Path) -> Path:
    """Write a small CT-like DICOM (16-bit, one frame, uncompressed): a DICOM, not a slide."""
    from pydicom.dataset import Dataset
    from pydicom.uid import generate_uid

    ds = Dataset()
    sop_instance = generate_uid()
    ds.file_meta = _meta(CT_SOP_CLASS, sop_instance, EXPLICIT_LE)
    ds.SOPClassUID, ds.SOPInstanceUID = CT_SOP_CLASS, sop_instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "Test^CT", "dfl-ct"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = 32, 32
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.PixelData = (np.arange(32 * 32, dtype=np.uint16) % 4096).reshape(32, 32).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
