"""DICOM whole-slide images: a folder of .dcm files (one slide) through the OpenSlide extra.

The slide is written here (tests/dicom_wsi.py, with pydicom) from a 1024 x 1024 region of
the bundled sample slide: two levels of 256-pixel baseline-JPEG frames, TILED_FULL, with the
sample's pixel size, so what OpenSlide reads back can be compared with the source pixels.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from napari_dfl.core.slides.openslide_backend import openslide_available

pytest.importorskip("pydicom", reason="pydicom writes the test DICOM (the [test] extra)")
needs_openslide = pytest.mark.skipif(
    not openslide_available(), reason='OpenSlide reads DICOM: pip install "napari-dfl[openslide]"')

ORIGIN = (512, 512)  # a region of the sample with tissue and background (57 % tissue)
SIDE = 1024
MPP = 0.499


@pytest.fixture(scope="module")
def source(sample_slide_path) -> np.ndarray:
    """The level-0 pixels the DICOM slide is written from."""
    from napari_dfl.core.slides.factory import open_slide

    with open_slide(sample_slide_path) as slide:
        assert slide.mpp == pytest.approx(MPP)
        return slide.read_region(ORIGIN, (SIDE, SIDE))


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory, source):
    """A folder holding a two-level DICOM WSI (level-0.dcm, level-1.dcm)."""
    from dicom_wsi import write_wsi

    folder = tmp_path_factory.mktemp("dicom") / "slide"
    write_wsi(folder, source, MPP, tile=256)
    return folder


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    """A CT-like DICOM: a DICOM file that is not a slide."""
    from dicom_wsi import write_ct

    return write_ct(tmp_path_factory.mktemp("ct") / "ct.dcm")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "napari_dfl.cli", *args],
                          capture_output=True, text=True, timeout=120)


@needs_openslide
@pytest.mark.parametrize("entry", ["folder", "level-0.dcm", "level-1.dcm"])
def test_a_dicom_slide_opens_from_its_folder_or_any_file(dicom_folder, entry):
    from napari_dfl.core.slides.factory import open_slide

    path = dicom_folder if entry == "folder" else dicom_folder / entry
    with open_slide(path) as slide:
        assert slide.format == "openslide-dicom"
        assert slide.mpp == pytest.approx(MPP) and slide.mpp_source == "openslide"
        assert [(lv.width, lv.height, lv.downsample) for lv in slide.levels] == [
            (SIDE, SIDE, 1.0), (SIDE // 2, SIDE // 2, 2.0)]
        # whichever was given, the slide is known by its level-0 file (stores, caches)
        assert slide.path == dicom_folder / "level-0.dcm"
        assert [a.shape for a in slide.level_arrays] == [(SIDE, SIDE, 3),
                                                          (SIDE // 2, SIDE // 2, 3)]


@needs_openslide
def test_dicom_pixels_match_the_source(dicom_folder, source):
    from dicom_wsi import decoded, downsample2
    from napari_dfl.core.slides.factory import open_slide

    jpeg0 = decoded(source, 256).astype(int)  # the source through the JPEG it is stored as
    half = downsample2(source)
    jpeg1 = decoded(half, 256).astype(int)
    assert np.abs(jpeg0 - source).mean() < 6  # quality 95: a few grey levels

    def off(a, b) -> float:
        return float(np.abs(np.asarray(a).astype(int) - b).mean())

    with open_slide(dicom_folder) as slide:
        region = slide.read_region((100, 260), (300, 200))
        assert region.shape == (200, 300, 3)
        # OpenSlide's decoding of the frames, where the writer put them: within a grey level
        assert off(region, jpeg0[260:460, 100:400]) < 1.0
        assert off(region, jpeg0[260:460, 132:432]) > 10  # a misplaced tile would show
        # a coarser pixel size reads level 1 (the source's 2x downsample)
        coarse = slide.read_region((0, 0), (SIDE // 2, SIDE // 2), mpp=2 * MPP)
        assert off(coarse, jpeg1) < 1.0
        assert off(slide.level_arrays[1][128:256, 256:384], jpeg1[128:256, 256:384]) < 1.0
        # across tile borders of level 0, as napari reads it
        assert off(slide.level_arrays[0][700:900, 500:800], jpeg0[700:900, 500:800]) < 1.0
        assert off(slide.level_arrays[0][700:900, 500:800], source[700:900, 500:800]) < 6


@needs_openslide
def test_dicom_tissue_detection_matches_the_same_pixels_as_a_png(dicom_folder, source,
                                                                 tmp_path):
    from napari_dfl.core.slides.factory import open_slide
    from napari_dfl.core.slides.tissue import detect_tissue

    png = tmp_path / "region.png"
    Image.fromarray(source).save(png)
    with open_slide(dicom_folder) as slide, open_slide(png, mpp=MPP) as image:
        dicom_fraction = detect_tissue(slide).fraction
        assert 0.4 < dicom_fraction < 0.75
        assert dicom_fraction == pytest.approx(detect_tissue(image).fraction, abs=0.03)


@needs_openslide
def test_info_describes_a_dicom_folder(dicom_folder, capsys):
    from napari_dfl.cli import main

    assert main(["info", str(dicom_folder), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "openslide-dicom"
    assert summary["mpp"] == pytest.approx(MPP)
    assert [(lv["width"], lv["downsample"]) for lv in summary["levels"]] == [(SIDE, 1.0),
                                                                              (SIDE // 2, 2.0)]
    assert 0.4 < summary["tissue_fraction"] < 0.75
    assert main(["info", str(dicom_folder / "level-1.dcm"), "--no-tissue"]) == 0
    assert "openslide-dicom" in capsys.readouterr().out


@needs_openslide
def test_embed_finds_the_same_store_from_the_folder_or_a_file(dicom_folder, tmp_path, capsys):
    from napari_dfl.cli import main

    args = ["--out", str(tmp_path), "--zooms", "0.5", "--variants", "rgb", "--json"]
    assert main(["embed", str(dicom_folder), *args]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["status"] == "ok" and first["computed"] == first["samples"] > 0
    # the slide is known by its level-0 file: given by another file, nothing is recomputed
    assert main(["embed", str(dicom_folder / "level-1.dcm"), *args]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["store"] == first["store"] and second["computed"] == 0


@needs_openslide
def test_dicom_errors_are_one_line(dicom_folder, ct_file, tmp_path, capsys):
    from napari_dfl.cli import main

    not_dicom = tmp_path / "noise.dcm"
    not_dicom.write_bytes(bytes(range(256)) * 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no slide here")
    ct_folder = tmp_path / "ct"
    ct_folder.mkdir()
    (ct_folder / "ct.dcm").write_bytes(ct_file.read_bytes())
    cases = [(ct_file, "is a DICOM image but not a whole-slide image"),
             (ct_folder, "none is a DICOM whole-slide image"),
             (empty, "is a folder without .dcm files"),
             (not_dicom, "OpenSlide cannot read it")]
    for path, expected in cases:
        assert main(["info", str(path)]) != 0
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("napari-dfl: error:") and expected in lines[0], lines[0]
    result = run_cli("info", str(ct_file))  # as a user runs it: no traceback
    [line] = result.stderr.strip().splitlines()
    assert result.returncode != 0 and line.startswith("napari-dfl: error: ct.dcm is a DICOM")


def test_without_openslide_a_dicom_slide_says_what_to_install(dicom_folder, ct_file,
                                                              monkeypatch):
    from napari_dfl.core.errors import MissingDependencyError, UnsupportedSlideError
    from napari_dfl.core.slides import factory, probe
    from napari_dfl.core.slides.factory import open_slide

    monkeypatch.setattr(factory, "openslide_available", lambda: False)
    monkeypatch.setattr(probe, "_openslide_available", lambda: False)
    for path in (dicom_folder, dicom_folder / "level-0.dcm"):
        with pytest.raises(MissingDependencyError,
                           match=r'pip install "napari-dfl\[openslide\]"'):
            open_slide(path)
        with pytest.raises(Exception, match=r'pip install "napari-dfl\[openslide\]"'):
            probe.probe_slide(path)
    with pytest.raises(UnsupportedSlideError, match="not a whole-slide image"):
        open_slide(ct_file)


def test_probe_reads_the_dicom_header_only(dicom_folder, ct_file, tmp_path):
    from napari_dfl.core.slides.probe import WSI_SOP_CLASS, dicom_meta, is_dicom

    meta = dicom_meta(dicom_folder / "level-1.dcm")
    assert meta["MediaStorageSOPClassUID"] == WSI_SOP_CLASS
    assert meta["TransferSyntaxUID"] == "1.2.840.10008.1.2.4.50"  # JPEG baseline
    assert dicom_meta(ct_file)["MediaStorageSOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
    png = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(png)
    assert is_dicom(ct_file) and not is_dicom(png) and dicom_meta(png) == {}


@needs_openslide
def test_napari_reader_claims_dicom_folders_and_files_only(dicom_folder, ct_file, tmp_path):
    from napari_dfl._reader import napari_get_reader

    assert callable(napari_get_reader(str(dicom_folder)))
    assert callable(napari_get_reader(str(dicom_folder / "level-1.dcm")))
    assert callable(napari_get_reader([str(dicom_folder)]))
    other = tmp_path / "zarr-like"
    other.mkdir()
    (other / ".zattrs").write_text("{}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # another plugin's folder: None, without a word
        assert napari_get_reader(str(other)) is None
        assert napari_get_reader(str(tmp_path)) is None
    with pytest.warns(UserWarning, match="not a whole-slide image"):
        assert napari_get_reader(str(ct_file)) is None
    [(arrays, kwargs, kind)] = napari_get_reader(str(dicom_folder))(str(dicom_folder))
    assert kind == "image" and kwargs["name"] == "slide"
    assert [a.shape for a in arrays] == [(SIDE, SIDE, 3), (SIDE // 2, SIDE // 2, 3)]
    assert kwargs["metadata"]["format"] == "openslide-dicom"
    assert kwargs["metadata"]["path"] == str(dicom_folder / "level-0.dcm")


def test_the_manifest_accepts_dicom_folders_and_files():
    from pathlib import Path

    import yaml

    import napari_dfl

    manifest = yaml.safe_load((Path(napari_dfl.__file__).parent / "napari.yaml").read_text())
    [slides] = [r for r in manifest["contributions"]["readers"]
                if r["command"] == "napari-dfl.get_reader"]
    assert slides["accepts_directories"] is True and "*.dcm" in slides["filename_patterns"]
