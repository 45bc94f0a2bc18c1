"""The sample slide shipped with the package, and its demo annotations.

CMU-1-Small-Region.svs (OpenSlide test data, CC0): real H&E skin, Aperio JPEG,
2220 x 2967 px at 0.499 µm/px. The demo annotations mark epidermis, dermis and background
regions on it.
"""

from __future__ import annotations

from pathlib import Path

from napari_dfl.core.slides.sampling import Composition

__all__ = ["SAMPLE_ANNOTATIONS", "SAMPLE_COMPOSITION", "SAMPLE_PATCH", "SAMPLE_SLIDE",
           "is_bundled_sample"]

#: The bundled slide (inside the installed package; never written to).
SAMPLE_SLIDE = Path(__file__).resolve().parents[2] / "sample_data" / "CMU-1-Small-Region.svs"
#: Demo annotations drawn on it: epidermis, dermis and background regions.
SAMPLE_ANNOTATIONS = SAMPLE_SLIDE.with_suffix(".geojson")
#: The sample's tile side at x20: the slide is a small region, and its ten demo regions give
#: 105 samples at 112 px against 25 at the 224 px default (too few to judge a head).
SAMPLE_PATCH = 112
#: The composition the demo (CLI) and the panel use on the sample: 112 px, x20 + x5 context,
#: RGB + gray, the context centred on every tile. Not the tissue default's nearest context:
#: that one halves the time of a whole slide, and the sample's 181 tiles take seconds either
#: way, while on its ten regions it cost -0.027 ± 0.025 of balanced accuracy (10 seeds) and
#: one seed's demo figure moved from 0.550 to 0.418 (docs/embedding.md).
SAMPLE_COMPOSITION = Composition(SAMPLE_PATCH)


def is_bundled_sample(path: str | Path) -> bool:
    """Whether a path is the bundled sample (the package's or the repository's copy)."""
    path = Path(path).resolve()
    return path in (SAMPLE_SLIDE, SAMPLE_SLIDE.resolve()) or (
        path.name == SAMPLE_SLIDE.name and path.parent.name == SAMPLE_SLIDE.parent.name)
