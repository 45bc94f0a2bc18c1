"""Physical metadata of TIFF-family slides: microns per pixel and objective power.

Sources, in order of trust: the Aperio ImageDescription (``MPP``, ``AppMag``), OME-XML
(``PhysicalSizeX`` with its unit, ``NominalMagnification``), Hamamatsu NDPI tags, and
finally the baseline TIFF resolution tags (only with a centimetre or inch unit, and only
when the value is plausible for a microscope: a 72 dpi default is not a pixel size).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import tifffile

# Plausible microscope pixel sizes; a TIFF's default 72 dpi (352 um/px) falls outside.
_MPP_RANGE = (0.02, 100.0)
_UNIT_TO_UM = {
    "pm": 1e-6, "nm": 1e-3, "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6,
}


@dataclass(frozen=True)
class PhysicalMetadata:
    """What a slide file says about its scale.

    Attributes:
        mpp: microns per pixel at level 0, or None when the file does not say.
        objective_power: scanning objective magnification (e.g. 20.0), or None.
        source: where ``mpp`` was read from (``"aperio"``, ``"ome"``, ``"ndpi"``,
            ``"tiff-resolution"``) or ``None``.

    """

    mpp: float | None
    objective_power: float | None
    source: str | None


def _plausible(mpp: float | None) -> float | None:
    if mpp is None or not (_MPP_RANGE[0] <= mpp <= _MPP_RANGE[1]):
        return None
    return float(mpp)


def _aperio(description: str) -> tuple[float | None, float | None]:
    mpp = re.search(r"\|\s*MPP\s*=\s*([0-9.eE+-]+)", description)
    mag = re.search(r"\|\s*AppMag\s*=\s*([0-9.eE+-]+)", description)
    return (
        float(mpp.group(1)) if mpp else None,
        float(mag.group(1)) if mag else None,
    )


def _ome(xml: str) -> tuple[float | None, float | None]:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None
    mpp = mag = None
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "Pixels" and mpp is None and "PhysicalSizeX" in element.attrib:
            unit = element.attrib.get("PhysicalSizeXUnit", "µm")
            factor = _UNIT_TO_UM.get(unit)
            if factor is not None:
                mpp = float(element.attrib["PhysicalSizeX"]) * factor
        elif tag == "Objective" and mag is None and "NominalMagnification" in element.attrib:
            mag = float(element.attrib["NominalMagnification"])
    return mpp, mag


def _resolution_tags(page: tifffile.TiffPage) -> float | None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    unit = int(tags["ResolutionUnit"].value)
    numerator, denominator = tags["XResolution"].value
    if not numerator or not denominator:
        return None
    pixels_per_unit = numerator / denominator
    if unit == 3:  # centimetre
        return 1e4 / pixels_per_unit
    if unit == 2:  # inch
        return 25400.0 / pixels_per_unit
    return None


def read_physical_metadata(tif: tifffile.TiffFile, page: tifffile.TiffPage) -> PhysicalMetadata:
    """Read the level-0 microns per pixel and objective power of an open TIFF.

    Args:
        tif: the open file.
        page: the first page of the level-0 image of the series being opened.

    Returns:
        The metadata found; fields are None when the file does not give them.

    """
    objective = None
    if tif.is_svs:
        mpp, objective = _aperio(page.description or "")
        if _plausible(mpp):
            return PhysicalMetadata(_plausible(mpp), objective, "aperio")
    if tif.is_ome and tif.ome_metadata:
        mpp, mag = _ome(tif.ome_metadata)
        objective = objective or mag
        if _plausible(mpp):
            return PhysicalMetadata(_plausible(mpp), objective, "ome")
    if tif.is_ndpi:
        ndpi_tags = getattr(page, "ndpi_tags", None) or {}
        magnification = ndpi_tags.get("Magnification")
        objective = objective or (float(magnification) if magnification else None)
        mpp = _plausible(_resolution_tags(page))
        return PhysicalMetadata(mpp, objective, "ndpi" if mpp else None)
    mpp = _plausible(_resolution_tags(page))
    return PhysicalMetadata(mpp, objective, "tiff-resolution" if mpp else None)
