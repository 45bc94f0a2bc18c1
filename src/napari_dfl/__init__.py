"""napari-dfl: Deep Feature Learning on histopathology whole-slide images.

The headless API. Importing this package imports neither Qt nor napari; the GUI lives in
``napari_dfl._qt`` and the napari contributions in ``_reader`` and ``_sample_data``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from napari_dfl._version import __version__

#: Public names and the modules that define them, imported on first use (PEP 562), so that
#: ``napari-dfl --help`` and the CLI's sub-commands do not pay for dask, zarr and tifffile.
_EXPORTS = {
    "CorruptSlideError": "napari_dfl.core.errors",
    "DFLError": "napari_dfl.core.errors",
    "MissingMppWarning": "napari_dfl.core.errors",
    "NotATiffError": "napari_dfl.core.errors",
    "SlideError": "napari_dfl.core.errors",
    "SlideNotFoundError": "napari_dfl.core.errors",
    "UnsupportedSlideError": "napari_dfl.core.errors",
    "Level": "napari_dfl.core.slides.base",
    "Slide": "napari_dfl.core.slides.tiff",
    "TileGrid": "napari_dfl.core.slides.tissue",
    "TissueMask": "napari_dfl.core.slides.tissue",
    "detect_tissue": "napari_dfl.core.slides.tissue",
    "tile_grid": "napari_dfl.core.slides.tissue",
}

if TYPE_CHECKING:  # what type checkers and IDEs see
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


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'napari_dfl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


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
