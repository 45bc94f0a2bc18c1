"""napari-dfl: Deep Feature Learning on histopathology whole-slide images.

The headless API. Importing this package imports neither Qt nor napari; the GUI lives in
``napari_dfl._qt`` and the napari contributions in ``_reader`` and ``_sample_data``.
"""

from napari_dfl._version import __version__
from napari_dfl.core.errors import (
    CorruptSlideError,
    DFLError,
    MissingMppWarning,
    NotATiffError,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
)
from napari_dfl.core.slides.base import Level
from napari_dfl.core.slides.tiff import Slide
from napari_dfl.core.slides.tissue import TileGrid, TissueMask, detect_tissue, tile_grid

__all__ = [
    "CorruptSlideError",
    "DFLError",
    "Level",
    "MissingMppWarning",
    "NotATiffError",
    "Slide",
    "SlideError",
    "SlideNotFoundError",
    "TileGrid",
    "TissueMask",
    "UnsupportedSlideError",
    "__version__",
    "detect_tissue",
    "tile_grid",
]
