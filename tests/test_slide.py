"""The core Slide on real slides: lazy levels, metadata, region reads, bad input."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import tifffile

from bad_files import (
    damaged_last_tile,
    huge_untiled,
    not_an_image,
    single_channel,
    sixteen_bit,
    truncated,
)
from napari_dfl import (
    CorruptSlideError,
    MissingMppWarning,
    NotATiffError,
    Slide,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
)
from napari_dfl.core.slides.tiff import COARSEST_LEVEL_MAX_PX


def test_svs_metadata_and_computed_level(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        assert slide.format == "aperio-svs"
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.mpp_source == "aperio"
        assert slide.objective_power == 20
        # One file level whose side exceeds the limit: a lazily computed level is added,
        # while the thumbnail, label and macro images are not levels.
        assert [lv.computed for lv in slide.levels] == [False, True]
        assert max(slide.levels[-1].width, slide.levels[-1].height) <= COARSEST_LEVEL_MAX_PX
        assert all(isinstance(a, da.Array) and a.dtype == np.uint8 for a in slide.level_arrays)
        assert slide.level_arrays[1].shape == (1483, 1110, 3)


def test_computed_level_is_the_average_of_level0(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        block = slide.read_region((1000, 1200), (64, 64))
        coarse = np.asarray(slide.level_arrays[1][600:632, 500:532]).astype(float)
        expected = block.reshape(32, 2, 32, 2, 3).astype(float).mean(axis=(1, 3))
        assert np.abs(coarse - expected).max() <= 1.0


def test_pyramidal_tiff_uses_file_levels_and_resolution_tags(pyramid_tiff_path):
    with Slide(pyramid_tiff_path) as slide:
        assert slide.format == "generic-tiff"
        assert [(lv.width, lv.height) for lv in slide.levels] == [
            (2220, 2967), (1110, 1483), (555, 741)]
        assert not any(lv.computed for lv in slide.levels)
        assert slide.mpp == pytest.approx(0.499, abs=1e-3)
        assert slide.mpp_source == "tiff-resolution"
        assert slide.level_mpp(2) == pytest.approx(0.499 * 4, rel=0.01)


def test_no_mpp_slide_warns_and_accepts_user_mpp(no_mpp_svs_path):
    with pytest.warns(MissingMppWarning, match="--mpp"):
        slide = Slide(no_mpp_svs_path)
    assert slide.mpp is None
    with pytest.raises(SlideError, match="microns per pixel"):
        slide.read_region((0, 0), (64, 64), mpp=0.5)
    slide.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Slide(no_mpp_svs_path, mpp=0.25) as slide:
            assert slide.mpp == 0.25 and slide.mpp_source == "user"
            assert slide.read_region((2000, 1500), (100, 100), mpp=0.5).shape == (100, 100, 3)


def test_read_region_matches_tifffile_at_level0(sample_slide_path):
    with tifffile.TiffFile(sample_slide_path) as tif:
        reference = tif.series[0].asarray()[1500:1700, 1100:1300]
    with Slide(sample_slide_path) as slide:
        region = slide.read_region((1100, 1500), (200, 200))
    np.testing.assert_array_equal(region, reference)


def test_read_region_at_lower_magnification_covers_wider_field(pyramid_tiff_path):
    with Slide(pyramid_tiff_path) as slide:
        x20 = slide.read_region((1000, 1400), (224, 224), mpp=0.5)
        x5 = slide.read_region((1000 - 336, 1400 - 336), (224, 224), mpp=2.0)
        # The centre quarter of the x5 patch is the x20 field, downsampled 4 times.
        centre = x5[84:140, 84:140].astype(float)
        shrunk = np.asarray(
            __import__("PIL.Image", fromlist=["Image"]).fromarray(x20).resize((56, 56))
        ).astype(float)
        assert np.abs(centre - shrunk).mean() < 12


def test_read_region_pads_outside_with_white(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        region = slide.read_region((-50, -50), (100, 100))
        assert (region[:50, :50] == 255).all()
        outside = slide.read_region((5000, 5000), (32, 32), mpp=2.0)
        assert (outside == 255).all()
        corner = slide.read_region((2200, 2950), (40, 40))
        assert (corner[20:, :] == 255).all() and (corner[:, 20:] == 255).all()


def test_thumbnail_shape(sample_slide_path):
    with Slide(sample_slide_path) as slide:
        thumb = slide.thumbnail(512)
    assert max(thumb.shape[:2]) == 512 and thumb.shape[2] == 3


def test_jpeg2000_svs_reads_tissue(no_mpp_svs_path):
    with pytest.warns(MissingMppWarning):
        slide = Slide(no_mpp_svs_path)
    region = slide.read_region((2000, 1500), (256, 256))
    assert region.std() > 10  # real texture, not a flat fill
    slide.close()


# -- bad input -------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(SlideNotFoundError, match="no such file"):
        Slide(tmp_path / "absent.svs")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(SlideError, match="folder"):
        Slide(tmp_path)


def test_not_an_image(tmp_path):
    with pytest.raises(NotATiffError, match="not a TIFF"):
        Slide(not_an_image(tmp_path))


@pytest.mark.parametrize("fraction", [0.001, 0.5])
def test_truncated_svs(sample_slide_path, tmp_path, fraction):
    with pytest.raises(CorruptSlideError, match="truncated or damaged"):
        Slide(truncated(sample_slide_path, tmp_path, fraction))


def test_truncated_pyramid_tiff(pyramid_tiff_path, tmp_path):
    with pytest.raises(CorruptSlideError):
        Slide(truncated(pyramid_tiff_path, tmp_path, 0.4))


def test_damaged_tile_data(pyramid_tiff_path, tmp_path):
    with pytest.raises(CorruptSlideError, match=r"(?i)damaged"):
        Slide(damaged_last_tile(pyramid_tiff_path, tmp_path))


def test_sixteen_bit(tmp_path):
    with pytest.raises(UnsupportedSlideError, match=r"uint16.*8-bit RGB"):
        Slide(sixteen_bit(tmp_path))


def test_single_channel(tmp_path):
    with pytest.raises(UnsupportedSlideError, match="single-channel"):
        Slide(single_channel(tmp_path))


def test_huge_untiled(tmp_path):
    with pytest.raises(UnsupportedSlideError, match="tiled pyramidal TIFF"):
        Slide(huge_untiled(tmp_path))


def test_invalid_user_mpp(sample_slide_path):
    with pytest.raises(SlideError, match="positive"):
        Slide(sample_slide_path, mpp=-1)


def test_fractional_windows_near_the_origin_do_not_fail(sample_slide_path):
    # Regression: a window origin a rounding hair above the requested one gave PIL a
    # negative box offset.
    from napari_dfl.core.slides.sampling import Composition, sample_patches

    with Slide(sample_slide_path) as slide:
        for anchor in ([44, 44], [10, 10], [500, 44]):
            patches = sample_patches(slide, np.array([anchor]), Composition(112, (0.5,), ("rgb",)))
            assert patches.shape == (1, 1, 112, 112, 3)


def test_ome_tiff_pyramid_with_physical_size(sample_slide_path, tmp_path):
    with Slide(sample_slide_path) as sample:
        level0 = sample.read_region((0, 0), (1024, 1024))
    path = tmp_path / "pyramid.ome.tif"
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=True) as tif:
        tif.write(level0, subifds=2, metadata={
            "axes": "YXS", "PhysicalSizeX": 250, "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 250, "PhysicalSizeYUnit": "nm"}, **options)
        tif.write(level0[::2, ::2], subfiletype=1, **options)
        tif.write(level0[::4, ::4], subfiletype=1, **options)
    with Slide(path) as slide:
        assert slide.format == "ome-tiff"
        assert [(lv.width, lv.downsample) for lv in slide.levels] == [
            (1024, 1.0), (512, 2.0), (256, 4.0)]
        assert slide.mpp == pytest.approx(0.25) and slide.mpp_source == "ome"
        np.testing.assert_array_equal(slide.read_region((100, 200), (64, 64)),
                                      level0[200:264, 100:164])
        assert slide.read_region((0, 0), (256, 256), mpp=1.0).shape == (256, 256, 3)
