"""napari sample data: the bundled CC0 H&E slide CMU-1-Small-Region."""

from __future__ import annotations

from pathlib import Path

from napari_dfl._reader import slide_layer_data

SAMPLE_SLIDE = Path(__file__).parent / "sample_data" / "CMU-1-Small-Region.svs"
#: Demo annotations drawn on the sample slide: epidermis, dermis and background regions.
SAMPLE_ANNOTATIONS = SAMPLE_SLIDE.with_suffix(".geojson")


def cmu1_small_region() -> list[tuple]:
    """Return the sample slide as napari layer data (a lazy multiscale RGB image)."""
    return slide_layer_data(SAMPLE_SLIDE)
