"""The optional OpenSlide backend reads what tifffile reads, the same way."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dfl import Slide
from napari_dfl.core.slides.openslide_backend import openslide_available

pytestmark = pytest.mark.skipif(
    not openslide_available(), reason="openslide not installed (pip install napari-dfl[openslide])")


def test_openslide_matches_tifffile_backend(sample_slide_path):
    from napari_dfl.core.slides.openslide_backend import OpenSlideSlide

    with OpenSlideSlide(sample_slide_path) as other, Slide(sample_slide_path) as slide:
        assert other.format == "openslide-aperio"
        assert other.dimensions == slide.dimensions and other.mpp == pytest.approx(0.499)
        assert other.objective_power == 20
        a = other.read_region((1100, 1500), (128, 128))
        b = slide.read_region((1100, 1500), (128, 128))
        assert np.abs(a.astype(int) - b).mean() < 3  # both decode the same JPEG tiles
        x5 = other.read_region((900, 1300), (64, 64), mpp=2.0)
        assert x5.shape == (64, 64, 3)
        chunk = np.asarray(other.level_arrays[0][1500:1628, 1100:1228])
        np.testing.assert_array_equal(chunk, a)
        assert max(other.thumbnail(256).shape[:2]) == 256


def test_open_slide_falls_back_to_openslide_for_non_tiff(tmp_path):
    from napari_dfl.core.errors import SlideError
    from napari_dfl.core.slides.factory import open_slide

    path = tmp_path / "notes.mrxs"
    path.write_text("not a slide")
    with pytest.raises(SlideError, match="nor a format OpenSlide reads"):
        open_slide(path)
