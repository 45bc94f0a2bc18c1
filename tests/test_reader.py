"""The napari reader contribution: which files it claims, what it returns."""

from __future__ import annotations

import dask.array as da
import pytest

from bad_files import not_an_image, single_channel, sixteen_bit, truncated
from napari_dfl import CorruptSlideError
from napari_dfl._reader import napari_get_reader
from napari_dfl._sample_data import cmu1_small_region
from napari_dfl.core.slides.sample_slide import SAMPLE_SLIDE


def test_reader_returns_lazy_multiscale_rgb(sample_slide_path):
    reader = napari_get_reader(str(sample_slide_path))
    assert callable(reader)
    [(data, kwargs, layer_type)] = reader(str(sample_slide_path))
    assert layer_type == "image"
    assert kwargs["multiscale"] and kwargs["rgb"] and kwargs["contrast_limits"] == (0, 255)
    assert all(isinstance(level, da.Array) for level in data)
    assert [level.shape[:2] for level in data] == [(2967, 2220), (1483, 1110)]
    assert kwargs["metadata"]["mpp"] == pytest.approx(0.499)
    assert kwargs["metadata"]["warnings"] == []


def test_reader_passes_metadata_warning_for_missing_mpp(no_mpp_svs_path):
    [(_, kwargs, _)] = napari_get_reader(str(no_mpp_svs_path))(str(no_mpp_svs_path))
    assert kwargs["metadata"]["mpp"] is None
    assert "microns per pixel" in kwargs["metadata"]["warnings"][0]


def test_reader_accepts_a_list_of_one_path(pyramid_tiff_path):
    assert callable(napari_get_reader([str(pyramid_tiff_path)]))
    assert napari_get_reader([str(pyramid_tiff_path)] * 2) is None


def test_reader_declines_other_extensions_and_files(tmp_path):
    assert napari_get_reader(str(tmp_path / "image.png")) is None
    assert napari_get_reader(str(tmp_path / "absent.svs")) is None
    with pytest.warns(UserWarning, match="TIFF-family slide"):
        assert napari_get_reader(str(not_an_image(tmp_path))) is None


@pytest.mark.parametrize("builder", [sixteen_bit, single_channel])
def test_reader_leaves_non_rgb_images_to_other_readers(builder, tmp_path):
    with pytest.warns(UserWarning, match="built-in reader"):
        assert napari_get_reader(str(builder(tmp_path))) is None


def test_reader_raises_clear_error_on_damaged_slide(sample_slide_path, tmp_path):
    path = str(truncated(sample_slide_path, tmp_path, 0.5))
    reader = napari_get_reader(path)
    assert callable(reader)
    with pytest.raises(CorruptSlideError, match="truncated or damaged"):
        reader(path)


def test_sample_data_is_the_bundled_slide():
    assert SAMPLE_SLIDE.is_file()
    [(data, kwargs, _)] = cmu1_small_region()
    assert kwargs["name"] == "CMU-1-Small-Region.svs" and len(data) == 2


def test_get_reader_decides_from_the_header_without_opening_the_slide(sample_slide_path):
    """napari asks about every dropped file: the answer reads tags, not tiles (no dask,
    no zarr: the slide is not opened)."""
    import subprocess
    import sys

    code = ("import sys; from napari_dfl._reader import napari_get_reader; "
            f"reader = napari_get_reader({str(sample_slide_path)!r}); "
            "print(callable(reader), sorted(m for m in ('dask', 'zarr') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "True []", done.stderr


def test_layer_metadata_holds_plain_values(sample_slide_path):
    import json

    [(_, kwargs, _)] = napari_get_reader(str(sample_slide_path))(str(sample_slide_path))
    metadata = kwargs["metadata"]
    assert "slide" not in metadata and metadata["reader"] == "napari-dfl"
    assert metadata["path"] == str(sample_slide_path)
    assert json.loads(json.dumps(metadata)) == metadata  # no live object in it


def test_openslide_formats_are_claimed_by_extension(tmp_path):
    from napari_dfl.core.slides.openslide_backend import openslide_available

    path = not_an_image(tmp_path, ".mrxs")
    if openslide_available():
        assert callable(napari_get_reader(str(path)))  # opening it says what is wrong
    else:
        with pytest.warns(UserWarning, match=r"\[openslide\] extra"):
            assert napari_get_reader(str(path)) is None
