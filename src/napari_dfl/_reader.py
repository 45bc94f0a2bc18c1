"""napari reader: whole-slide images as lazy multiscale RGB image layers.

The layer's data coordinates are level-0 pixels, so annotations and overlays made on it
line up with the core's coordinates without conversion.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from napari_dfl.core.errors import MissingMppWarning, NotATiffError, UnsupportedSlideError
from napari_dfl.core.slides.factory import open_slide

EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".ome.tif", ".ome.tiff",
              # read through the optional OpenSlide backend when it is installed
              ".mrxs", ".vms", ".vmu", ".svslide")


def slide_layer_data(path: str | os.PathLike, mpp: float | None = None) -> list[tuple]:
    """Open a slide and describe it as one napari image layer.

    Raises the core's ``SlideError`` subclasses, whose messages say what to do.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingMppWarning)
        slide = open_slide(path, mpp=mpp)
    metadata = slide.describe()
    metadata["warnings"] = [str(w.message) for w in caught]
    metadata["slide"] = slide
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

    Files that are not TIFFs, and valid images that are not RGB slides (16-bit,
    single-channel), return None so that napari offers its other readers.
    """
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if not str(path).lower().endswith(EXTENSIONS) or not os.path.isfile(path):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingMppWarning)
            open_slide(path).close()
    except (NotATiffError, UnsupportedSlideError) as exc:
        warnings.warn(str(exc), stacklevel=2)
        return None
    except Exception:
        # A damaged slide: the reader will raise the specific message when napari calls it.
        pass
    return read_slide


def read_slide(path: str | list[str]) -> list[tuple]:
    """Read a slide for napari (see :func:`slide_layer_data`)."""
    if isinstance(path, list):
        path = path[0]
    return slide_layer_data(path)
