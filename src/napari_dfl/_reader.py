"""napari reader: whole-slide images as lazy multiscale RGB image layers.

The layer's data coordinates are level-0 pixels, so annotations and overlays made on it
line up with the core's coordinates without conversion.

:func:`napari_get_reader` is called by napari for every file dropped on the viewer, so it
decides from the file's header only (:func:`~napari_dfl.core.slides.probe.probe_slide`: the
TIFF magic and the first directory's tags, the extension for OpenSlide formats, the DICOM
header); the slide is opened in the returned function. A folder is claimed only when it
holds ``.dcm`` files of a DICOM whole-slide image (one slide); other folders return None at
once, for other plugins. The layer's metadata holds plain values (the slide's
description, its path, the warnings of its opening), never the open slide: the panel opens
its own from the path.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from napari_dfl.core.errors import MissingMppWarning, NotATiffError, UnsupportedSlideError
from napari_dfl.core.slides.probe import (
    DICOM_EXTENSIONS,
    OPENSLIDE_EXTENSIONS,
    TIFF_EXTENSIONS,
    has_dicom_files,
    probe_slide,
)

# OpenSlide's and DICOM: with the [openslide] extra
EXTENSIONS = TIFF_EXTENSIONS + OPENSLIDE_EXTENSIONS + DICOM_EXTENSIONS

#: ``metadata["reader"]`` of the layers this reader makes (the panel lists those as slides).
READER_TAG = "napari-dfl"


def slide_layer_data(path: str | os.PathLike, mpp: float | None = None) -> list[tuple]:
    """Open a slide and describe it as one napari image layer.

    The layer's ``metadata`` is JSON-ready: the slide's ``describe()`` (``path``, ``format``,
    size, levels, ``mpp``...), ``warnings`` (messages of its opening) and ``reader``
    (:data:`READER_TAG`). The open file lives on only behind the layer's lazy arrays.

    Raises the core's ``SlideError`` subclasses, whose messages say what to do.
    """
    from napari_dfl.core.slides.factory import open_slide  # dask, zarr: when a slide opens

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingMppWarning)
        slide = open_slide(path, mpp=mpp)
    metadata = slide.describe()
    metadata["warnings"] = [str(w.message) for w in caught]
    metadata["reader"] = READER_TAG
    kwargs = {
        "name": Path(path).name,
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "metadata": metadata,
    }
    return [(slide.level_arrays, kwargs, "image")]


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return a reader for a whole-slide image, or None when napari-dfl cannot read it.

    Decided from the header alone, without opening the slide or decoding a pixel. Files
    that are not TIFFs (nor OpenSlide formats with the extra installed), and valid images
    that are not RGB slides (16-bit, single-channel; DICOM that is not a whole-slide image),
    return None with a warning so that napari offers its other readers. A folder is a slide
    when it holds ``.dcm`` files (a DICOM slide); any other folder returns None silently.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if os.path.isdir(path):
        if not has_dicom_files(path):
            return None
    elif not str(path).lower().endswith(EXTENSIONS) or not os.path.isfile(path):
        return None
    try:
        probe_slide(path)
    except (NotATiffError, UnsupportedSlideError) as exc:
        warnings.warn(str(exc), stacklevel=2)
        return None
    except Exception:
        # Unreadable now (permissions...): the reader will raise the specific message.
        pass
    return read_slide


def read_slide(path: str | list[str]) -> list[tuple]:
    """Read a slide for napari (see :func:`slide_layer_data`)."""
    if isinstance(path, list):
        path = path[0]
    return slide_layer_data(path)
