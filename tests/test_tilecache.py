"""The decoded-tile cache: bounded, shared across levels, invisible in the pixels."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_dfl import Slide
from napari_dfl.core.features.engine import spatial_order
from napari_dfl.core.slides.tilecache import TileLRU


def test_lru_is_bounded_in_bytes_and_evicts_oldest():
    cache = TileLRU(capacity=10)
    a, b, c = (np.full(4, v, np.uint8) for v in (1, 2, 3))
    cache.put("a", a)
    cache.put("b", b)
    assert cache.get("a") is a  # a is now the most recent
    cache.put("c", c)
    assert cache.get("b") is None and cache.get("a") is a and cache.get("c") is c
    assert cache.nbytes == 8
    cache.put("huge", np.zeros(11, np.uint8))
    assert cache.get("huge") is None


def test_cached_reads_equal_the_file_and_hit_the_cache(pyramid_tiff_path):
    with tifffile.TiffFile(pyramid_tiff_path) as tif:
        reference = tif.series[0].asarray(level=0)
    with Slide(pyramid_tiff_path) as slide:
        first = slide.read_region((300, 700), (600, 500))
        misses = slide.tile_cache.misses
        second = slide.read_region((310, 705), (600, 500))
        assert slide.tile_cache.misses == misses and slide.tile_cache.hits > 0
        coarse = slide.read_region((0, 0), (100, 100), downsample=4)
    np.testing.assert_array_equal(first, reference[700:1200, 300:900])
    np.testing.assert_array_equal(second, reference[705:1205, 310:910])
    # Levels share the cache under their own keys: level 2 pixels are not level 0's.
    assert np.abs(coarse.astype(int) - reference[:100, :100]).mean() > 1


def test_spatial_order_visits_strips_left_to_right():
    coords = np.array([[500, 1500], [0, 0], [900, 10], [0, 1100], [450, 0]])
    ordered = spatial_order(coords, strip=1024)
    assert ordered.tolist() == [[0, 0], [450, 0], [900, 10], [0, 1100], [500, 1500]]
