"""napari sample data: the bundled CC0 H&E slide CMU-1-Small-Region."""

from __future__ import annotations

from napari_dfl._reader import slide_layer_data
from napari_dfl.core.slides.sample_slide import SAMPLE_SLIDE


def cmu1_small_region() -> list[tuple]:
    """Return the sample slide as napari layer data (a lazy multiscale RGB image)."""
    return slide_layer_data(SAMPLE_SLIDE)
