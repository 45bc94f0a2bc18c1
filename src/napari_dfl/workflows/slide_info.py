"""Describing a slide file: format, size, levels, pixel size, tissue share (``info``)."""

from __future__ import annotations

import os
import warnings

from napari_dfl.core.errors import MissingMppWarning
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.core.slides.tissue import detect_tissue

__all__ = ["describe_slide"]


def describe_slide(path: str | os.PathLike, mpp: float | None = None,
                   tissue: bool = True) -> dict:
    """The slide's summary (see ``SlideReader.describe``), tissue fraction and warnings.

    Raises:
        SlideError: the file cannot be opened; the message says why and what to do.

    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingMppWarning)
        slide = open_slide(path, mpp=mpp)
    with slide:
        summary = slide.describe()
        summary["tissue_fraction"] = round(detect_tissue(slide).fraction, 4) if tissue else None
        summary["warnings"] = [str(w.message) for w in caught]
    return summary
