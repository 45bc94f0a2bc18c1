"""Tissue detection and the tile grid on real slides."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import color

from napari_dfl import Slide, detect_tissue, tile_grid


def _saturation(rgb: np.ndarray) -> float:
    return float(color.rgb2hsv(rgb)[..., 1].mean())


@pytest.mark.parametrize("fixture", ["sample_slide_path", "pyramid_tiff_path"])
def test_mask_finds_tissue_not_background(fixture, request):
    with Slide(request.getfixturevalue(fixture)) as slide:
        mask = detect_tissue(slide)
        overview = slide.read_level(0)
    # The sample is a strip of skin on white glass: roughly a third is tissue.
    assert 0.25 < mask.fraction < 0.5
    assert mask.downsample == pytest.approx(overview.shape[0] / mask.mask.shape[0], rel=0.01)
    full = np.asarray(Image.fromarray(mask.mask).resize(overview.shape[1::-1], Image.NEAREST))
    tissue, glass = overview[full], overview[~full]
    # Glass is bright and grey, tissue is stained (saturated and darker).
    assert glass.mean() > 220 and tissue.mean() < glass.mean() - 40
    assert _saturation(tissue[None]) > 3 * _saturation(glass[None])


def test_mask_on_frozen_section_without_mpp(no_mpp_svs_path):
    with pytest.warns(UserWarning):
        slide = Slide(no_mpp_svs_path)
    mask = detect_tissue(slide)
    assert 0.5 < mask.fraction < 0.75
    # The slide corners are glass.
    assert not mask.mask[:20, :20].any() and not mask.mask[-20:, -20:].any()


def test_tile_grid_keeps_tissue_tiles(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        grid = tile_grid(slide, patch_size=224, mpp=0.5, min_tissue=0.5)
        everything = tile_grid(slide, patch_size=224, mpp=0.5, min_tissue=0)
        assert grid.tile_size == pytest.approx(224 * 0.5 / 0.499)
        assert everything.grid_shape == (13, 9) and len(everything) == 13 * 9
        assert 20 < len(grid) < len(everything)
        assert (grid.tissue_fraction >= 0.5).all()
        # Tiles kept are stained, tiles dropped are glass.
        kept = [slide.read_region(tuple(c), (56, 56), mpp=2.0) for c in grid.coords[:10]]
        dropped_coords = {tuple(c) for c in everything.coords} - {tuple(c) for c in grid.coords}
        dropped = [slide.read_region(c, (56, 56), mpp=2.0) for c in sorted(dropped_coords)[:10]]
        assert np.mean([_saturation(k) for k in kept]) > 2 * np.mean(
            [_saturation(d) for d in dropped])


def test_tile_grid_placement_helpers(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        grid = tile_grid(slide, patch_size=224, mpp=0.5)
    placed = grid.to_grid(np.arange(len(grid), dtype=float))
    assert placed.shape == grid.grid_shape
    assert np.isnan(placed).sum() == grid.grid_shape[0] * grid.grid_shape[1] - len(grid)
    cols = grid.grid_index[:, 1]
    np.testing.assert_allclose(grid.coords[:, 0], np.round(cols * grid.tile_size))
    np.testing.assert_allclose(grid.centers(), grid.coords + grid.tile_size / 2)


def test_tile_grid_needs_mpp_or_pixels(no_mpp_svs_path):
    with pytest.warns(UserWarning):
        slide = Slide(no_mpp_svs_path)
    with pytest.raises(Exception, match="microns per pixel"):
        tile_grid(slide, 224, mpp=0.5)
    pixels = tile_grid(slide, 256, mpp=None)
    assert pixels.tile_size == 256 and len(pixels) > 50


def test_a_slide_s_mask_is_computed_once_and_dropped_with_the_slide(sample_slide_path):
    import gc

    from napari_dfl.core.slides import tissue

    slide = Slide(sample_slide_path)
    first = detect_tissue(slide)
    assert detect_tissue(slide) is first  # a second tile grid reuses it
    assert not first.mask.flags.writeable  # shared: nobody may edit it
    small = detect_tissue(slide, max_size=512)
    assert small is not first and small.mask.shape != first.mask.shape
    other = Slide(sample_slide_path)
    assert detect_tissue(other) is not first
    np.testing.assert_array_equal(detect_tissue(other).mask, first.mask)
    import weakref

    alive = weakref.ref(slide)
    assert slide in tissue._MASKS
    del slide, first, small
    gc.collect()
    assert alive() is None, "the cache must not keep a closed slide alive"
