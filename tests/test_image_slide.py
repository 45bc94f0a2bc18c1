"""Plain images as slides: reading like Slide, mpp given or assumed, bad images refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_dfl import (
    CorruptSlideError,
    MissingMppWarning,
    NotATiffError,
    Slide,
    SlideError,
    SlideNotFoundError,
    UnsupportedSlideError,
    tile_grid,
)
from napari_dfl.core.slides import image as image_slide
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.core.slides.image import ImageSlide, probe_image
from napari_dfl.core.slides.sampling import Composition, sample_patches

ORIGIN = (1000, 1500)  # level-0 corner of the crop, on tissue


@pytest.fixture(scope="module")
def crop(sample_slide_path) -> np.ndarray:
    with Slide(sample_slide_path) as slide:
        return slide.read_region(ORIGIN, (600, 400))


@pytest.fixture
def png(tmp_path, crop):
    path = tmp_path / "crop.png"
    Image.fromarray(crop).save(path)
    return path


def test_png_reads_like_the_slide_it_was_cut_from(png, crop, sample_slide_path):
    with ImageSlide(png, mpp=0.499) as image, Slide(sample_slide_path) as slide:
        assert image.dimensions == (600, 400)
        assert (image.mpp, image.mpp_source, image.objective_power) == (0.499, "user", None)
        assert np.array_equal(image.read_region((0, 0), (600, 400)), crop)
        assert np.array_equal(image.read_level(0), crop)
        # Same resampling as Slide.read_region (lower magnification, fractional origin).
        for location, mpp in (((10.5, 20.25), 1.0), ((100, 50), 2.0)):
            expected = slide.read_region((ORIGIN[0] + location[0], ORIGIN[1] + location[1]),
                                         (64, 48), mpp=mpp)
            got = image.read_region(location, (64, 48), mpp=mpp)
            assert got.shape == (48, 64, 3)
            assert np.array_equal(got, expected)
        assert image.levels[0].downsample == 1.0 and len(image.level_arrays) == 1
        assert image.level_arrays[0].shape == (400, 600, 3)
        assert set(image.describe()) == set(slide.describe())


def test_read_region_pads_outside_with_white(png, crop):
    image = ImageSlide(png, mpp=0.5)
    region = image.read_region((-10, -20), (30, 40))
    assert (region[:20] == 255).all() and (region[:, :10] == 255).all()
    assert np.array_equal(region[20:, 10:], crop[:20, :20])
    assert (image.read_region((5000, 5000), (8, 8)) == 255).all()


def test_assumed_mpp_is_announced(png):
    with pytest.warns(MissingMppWarning, match=r"assuming 0\.5 microns per pixel.*--mpp"):
        image = ImageSlide(png, assumed_mpp=0.5)
    assert (image.mpp, image.mpp_source) == (0.5, "assumed")
    assert image.describe()["mpp_source"] == "assumed"


def test_no_mpp_warns_and_require_mpp_explains(png):
    with pytest.warns(MissingMppWarning, match="--mpp"):
        image = ImageSlide(png)
    with pytest.raises(SlideError, match="microns per pixel"):
        image.require_mpp()
    with pytest.raises(SlideError, match="positive"):
        ImageSlide(png, mpp=-1)


def test_tissue_grid_and_patches_work_on_images(png):
    image = ImageSlide(png, mpp=0.5)
    grid = tile_grid(image, 224, 0.5, min_tissue=0.5)
    assert grid.grid_shape == (1, 2) and len(grid) >= 1
    patches = sample_patches(image, grid.coords, Composition(224, (0.5, 2.0)))
    assert patches.shape == (len(grid), 4, 224, 224, 3)
    assert image.thumbnail(100).shape == (67, 100, 3)


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_other_formats(tmp_path, crop, suffix):
    path = tmp_path / f"crop{suffix}"
    Image.fromarray(crop).save(path)
    image = open_slide(path, mpp=0.5)
    assert isinstance(image, ImageSlide) and image.dimensions == (600, 400)
    assert np.abs(image.read_level(0).astype(int) - crop).mean() < 10  # lossy JPEG


def test_grayscale_and_transparency_become_rgb(tmp_path):
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((20, 30), 90, np.uint8)).save(gray)
    assert (ImageSlide(gray, mpp=0.5).read_level(0) == 90).all()
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:10, :, 3] = 255  # top half opaque red, bottom half transparent
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    pixels = ImageSlide(path, mpp=0.5).read_level(0)
    assert (pixels[:10] == (200, 0, 0)).all() and (pixels[10:] == 255).all()


def test_sixteen_bit_and_bilevel_refused(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((20, 20), np.uint16)).save(path)
    with pytest.raises(UnsupportedSlideError, match=r"16-bit.*8-bit RGB"):
        ImageSlide(path, mpp=0.5)
    mask = tmp_path / "mask.png"
    Image.new("1", (20, 20)).save(mask)
    with pytest.raises(UnsupportedSlideError, match="mask"):
        probe_image(mask)


def test_too_large_refused_before_decoding(png, monkeypatch):
    monkeypatch.setattr(image_slide, "MAX_PIXELS", 1000)
    with pytest.raises(UnsupportedSlideError, match=r"600 x 400.*pyramidal TIFF"):
        ImageSlide(png, mpp=0.5)
    # Pillow's own decompression-bomb guard is reported the same way.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UnsupportedSlideError, match="pyramidal TIFF"):
        probe_image(png)


def test_damaged_and_missing_files(tmp_path, png):
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    with pytest.raises(CorruptSlideError, match="truncated or damaged"):
        ImageSlide(truncated, mpp=0.5)
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    with pytest.raises(CorruptSlideError, match="not a readable image"):
        open_slide(fake)
    with pytest.raises(SlideNotFoundError, match="no such file"):
        open_slide(tmp_path / "absent.png")
    with pytest.raises(SlideError, match="folder"):
        ImageSlide(tmp_path)


def test_open_slide_dispatch(tmp_path, png, sample_slide_path):
    with open_slide(sample_slide_path) as slide:
        assert isinstance(slide, Slide) and slide.mpp_source == "aperio"
    # By content, not name: a PNG saved as .tif is an image, a text .svs is refused.
    disguised = tmp_path / "disguised.tif"
    disguised.write_bytes(png.read_bytes())
    assert isinstance(open_slide(disguised, mpp=0.5), ImageSlide)
    text = tmp_path / "notes.svs"
    text.write_text("patient notes")
    with pytest.raises(NotATiffError):
        open_slide(text)


def test_open_slide_assumes_mpp_for_tiff_without_one(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.full((256, 256, 3), 200, np.uint8), photometric="rgb")
    with pytest.warns(MissingMppWarning, match=r"assuming 0\.25"):
        slide = open_slide(path, assumed_mpp=0.25)
    assert isinstance(slide, Slide) and (slide.mpp, slide.mpp_source) == (0.25, "assumed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        given = open_slide(path, mpp=0.5)
    assert (given.mpp, given.mpp_source) == (0.5, "user")
