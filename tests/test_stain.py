"""The ``stain`` colour variant: Macenko normalisation, estimated once per slide.

Real pixels throughout: regions of the bundled CMU sample slide (CC0) and the Kather
CRC-VAL-HE-7K tiles (CC BY 4.0, ../shared/data). A "differently stained version" of an image
is made by taking its stain concentrations (least squares on its own Macenko stain vectors,
the residual kept) and recomposing them with another slide's stain vectors and strengths.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import shared_file
from napari_dfl.core.slides.factory import open_slide
from napari_dfl.core.slides.sampling import (
    VARIANTS,
    Composition,
    CompositionError,
    default_composition,
    sample_patches,
)
from napari_dfl.core.slides.stain import (
    REFERENCE,
    REFERENCE_MAX,
    REFERENCE_STAINS,
    StainWarning,
    estimate_stain,
    normalise_stain,
    slide_stain,
)

#: Stain vectors (columns H, E) of another lab: a Kather tile's, about 10° from the sample
#: slide's hematoxylin.
OTHER_STAINS = np.array([[0.51, 0.24], [0.76, 0.86], [0.40, 0.45]])
OTHER_STAINS = OTHER_STAINS / np.linalg.norm(OTHER_STAINS, axis=0)


def restained(rgb: np.ndarray, stains: np.ndarray, strength: tuple[float, float]) -> np.ndarray:
    """``rgb`` stained with ``stains`` at ``strength`` times its own concentrations."""
    od = -np.log((rgb.reshape(-1, 3).astype(np.float64) + 1.0) / 256.0)
    own = estimate_stain(rgb).stains
    concentrations = np.linalg.lstsq(own, od.T, rcond=None)[0]
    residual = od - (own @ concentrations).T
    new = (stains @ (concentrations * np.array(strength)[:, None])).T + residual
    return np.clip(256.0 * np.exp(-new) - 0.5, 0, 255).astype(np.uint8).reshape(rgb.shape)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 images."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def region(sample_slide_path) -> np.ndarray:
    """768 x 768 px of the sample slide's tissue at x20."""
    with open_slide(sample_slide_path) as slide:
        return slide.read_region((600.0, 1200.0), (768, 768), mpp=0.5)


def kather_tiles() -> list[np.ndarray]:
    """The 32 CRC-VAL-HE-7K tiles at hand (224 px RGB)."""
    folder = shared_file("kather_tiles/crc_val_he_7k")
    return [np.asarray(Image.open(path).convert("RGB"))
            for path in sorted(folder.glob("*/*.png"))]


def test_the_sample_slide_gets_a_plausible_stain_estimate(slide):
    estimate = slide_stain(slide)
    assert estimate.fallback is None and estimate.tissue_pixels > 100_000
    hematoxylin, eosin = estimate.stains.T
    assert hematoxylin[0] > eosin[0]  # hematoxylin absorbs more red
    # within 20° of the reference's directions, and not the same vector
    cosines = (estimate.stains * REFERENCE_STAINS).sum(axis=0)
    assert np.all(cosines > np.cos(np.radians(20))), cosines
    assert hematoxylin @ eosin < np.cos(np.radians(15))
    assert slide_stain(slide) is estimate  # estimated once per slide object


def test_a_restained_copy_of_a_slide_region_comes_back_close(region, tmp_path):
    """The same tissue stained two ways: the stain parts are far closer than the rgb parts."""
    other = restained(region, OTHER_STAINS, (0.8, 1.3))
    paths = []
    for name, pixels in (("own", region), ("other", other)):
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(pixels).save(paths[-1])
    composition = Composition(224, (0.5,), ("rgb", "stain"))
    coords = np.array([[0, 0], [300, 200], [500, 500], [100, 520]])
    parts = []
    for path in paths:
        with open_slide(path, mpp=0.5) as image:
            parts.append(sample_patches(image, coords, composition))
    before = distance(parts[0][:, 0], parts[1][:, 0])
    after = distance(parts[0][:, 1], parts[1][:, 1])
    assert before > 5.0  # the two stainings really differ
    assert after < 0.6 * before, (before, after)


def test_restained_kather_tiles_mostly_come_back_close():
    ratios = []
    for tile in kather_tiles():
        other = restained(tile, OTHER_STAINS, (1.25, 0.8))
        before = distance(tile, other)
        after = distance(normalise_stain(tile, estimate_stain(tile)),
                         normalise_stain(other, estimate_stain(other)))
        ratios.append(after / before)
    ratios = np.array(ratios)
    assert np.median(ratios) < 0.7, ratios.round(2)
    assert (ratios < 1.0).mean() >= 0.75, ratios.round(2)


def test_normalised_pixels_carry_the_reference_stain(region):
    normalised = normalise_stain(region, estimate_stain(region))
    again = estimate_stain(normalised)
    assert again.fallback is None
    angles = np.degrees(np.arccos(np.clip((again.stains * REFERENCE_STAINS).sum(axis=0),
                                          -1, 1)))
    assert np.all(angles < 5.0), angles
    np.testing.assert_allclose(again.max_concentrations, REFERENCE_MAX, rtol=0.2)


def test_white_stays_white(region, slide):
    estimate = slide_stain(slide)
    white = np.full((8, 8, 3), 255, np.uint8)
    assert np.all(normalise_stain(white, estimate) == 255)
    assert np.all(normalise_stain(white, REFERENCE) == 255)
    glass = np.all(region == 255, axis=-1)
    if glass.any():
        assert np.all(normalise_stain(region, estimate)[glass] == 255)


def test_a_near_empty_patch_falls_back_to_the_reference_without_nan(region):
    patch = np.full((224, 224, 3), 250, np.uint8)
    patch[:20, :20] = region[:20, :20]  # 400 tissue pixels at most
    estimate = estimate_stain(patch)
    assert estimate.fallback and "tissue pixels" in estimate.fallback
    assert np.all(np.isfinite(estimate.matrix))
    out = normalise_stain(patch, estimate)
    assert out.shape == patch.shape and out.dtype == np.uint8
    assert np.all(out[100:, 100:] >= 245)  # near-white glass stays near white


def test_a_grayscale_image_falls_back_and_cuts_without_error(region, tmp_path):
    gray = np.repeat(region.mean(axis=-1, keepdims=True).astype(np.uint8), 3, axis=-1)
    estimate = estimate_stain(gray)
    assert estimate.fallback and "one direction" in estimate.fallback
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    with open_slide(path, mpp=0.5) as image, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        patches = sample_patches(image, np.array([[100, 100]]),
                                 Composition(64, (0.5,), ("rgb", "stain")))
    assert [w.category for w in caught].count(StainWarning) == 1
    assert "reference" in str(next(w for w in caught if w.category is StainWarning).message)
    assert patches.shape == (1, 2, 64, 64, 3)
    # the same as projecting onto the reference stain plane: deterministic and finite
    np.testing.assert_array_equal(patches[0, 1], normalise_stain(patches[0, 0], REFERENCE))


def test_a_slide_with_no_tissue_is_told_once_and_still_cut(tmp_path):
    path = tmp_path / "glass.png"
    Image.fromarray(np.full((300, 300, 3), 246, np.uint8)).save(path)
    with open_slide(path, mpp=0.5) as image, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        composition = Composition(32, (0.5, 2.0), ("stain",))
        patches = sample_patches(image, np.array([[10, 10], [200, 200]]), composition)
    assert [w.category for w in caught].count(StainWarning) == 1
    assert "0 tissue pixels" in str(caught[0].message)
    assert patches.shape == (2, 2, 32, 32, 3) and patches.min() >= 240


def test_the_stain_variant_is_deterministic_across_slide_objects(sample_slide_path):
    composition = Composition(48, (0.5, 2.0), ("rgb", "gray", "stain"))
    coords = np.array([[800, 900], [1500, 2000]])
    cuts = []
    for _ in range(2):
        with open_slide(sample_slide_path) as slide:  # a fresh object: estimated again
            cuts.append(sample_patches(slide, coords, composition))
    np.testing.assert_array_equal(cuts[0], cuts[1])
    assert cuts[0].shape == (2, 6, 48, 48, 3)
    assert distance(cuts[0][:, 0], cuts[0][:, 2]) > 3.0  # stain is not rgb again


def test_compositions_with_stain_round_trip_and_old_ones_keep_their_identity():
    composition = Composition(32, (0.5, 2.0), ("rgb", "gray", "stain"), 224)
    data = composition.to_dict()
    assert data["variants"] == ["rgb", "gray", "stain"]
    assert Composition.from_dict(data) == composition
    assert composition.describe() == ("32 px: x20 rgb | x20 gray | x20 stain | x5 rgb | "
                                      "x5 gray | x5 stain, read at 224 px")
    # the defaults hold no stain; a centred composition keeps the identity it had before
    assert default_composition({"region"}).variants == ("rgb", "gray")
    assert default_composition({"point"}).variants == ("rgb", "gray")
    assert Composition().to_dict() == {"patch_size": 224, "zooms": [0.5, 2.0],
                                       "variants": ["rgb", "gray"], "input_size": None}
    assert "stain" in VARIANTS
    with pytest.raises(CompositionError, match="rgb, gray, stain"):
        Composition(variants=("rgb", "macenko"))


def test_an_embedding_with_stain_has_one_part_per_variant(slide, backbone, tmp_path):
    from napari_dfl.core.features.engine import embed_coords
    from napari_dfl.core.features.store_folder import open_store_for
    from napari_dfl.core.util.progress import drive

    composition = Composition(64, (0.5,), ("rgb", "stain"), 64)
    coords = np.array([[700, 800], [1400, 1600], [1000, 2400]])
    store = open_store_for(slide, backbone, composition, tmp_path / "stores")
    drive(embed_coords(slide, coords, backbone, composition, store))
    vectors = store.get(coords)
    assert vectors.shape == (3, 2 * backbone.embed_dim)
    assert np.all(np.isfinite(vectors))
    rgb, stain = vectors[:, :backbone.embed_dim], vectors[:, backbone.embed_dim:]
    assert not np.allclose(rgb, stain, atol=1e-3)
    # the rgb part is what an rgb-only composition computes: stain only adds columns
    rgb_only = Composition(64, (0.5,), ("rgb",), 64)
    alone = open_store_for(slide, backbone, rgb_only, tmp_path / "stores")
    drive(embed_coords(slide, coords, backbone, rgb_only, alone))
    np.testing.assert_allclose(alone.get(coords), rgb, rtol=1e-4, atol=1e-4)
    assert store.identity["composition"]["variants"] == ["rgb", "stain"]


def test_the_cli_takes_stain_and_refuses_an_unknown_variant(capsys):
    from napari_dfl.cli import build_parser
    from napari_dfl.cli.options import settings_from

    parser = build_parser()
    args = parser.parse_args(["evaluate", "nuclei.csv", "--variants", "rgb,gray,stain",
                              "--patch-size", "32", "--zooms", "0.5,2", "--backbone",
                              "efficientnet-lite0", "--input-size", "auto"])
    settings = settings_from(args)
    assert settings.composition.variants == ("rgb", "gray", "stain")
    for bad, said in (("rgb,hsv", "unknown colour variant(s) hsv: choose among "
                                  "rgb,gray,stain"),
                      ("rgb,stain,rgb", "given twice")):
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(["evaluate", "nuclei.csv", "--variants", bad])
        assert exit_info.value.code == 2
        assert said in capsys.readouterr().err


def test_the_panel_has_a_stain_box_beside_rgb_and_gray(qtbot):
    from napari_dfl._qt.settings_form import SettingsForm
    from napari_dfl.workflows.session import Session

    session = Session()
    form = SettingsForm(session)
    qtbot.addWidget(form)
    assert not form.stain_check.isChecked()  # not in the default composition
    form.stain_check.setChecked(True)
    assert session.settings.composition.variants == ("rgb", "gray", "stain")
    form.gray_check.setChecked(False)
    assert session.settings.composition.variants == ("rgb", "stain")
    fresh = SettingsForm(session)
    qtbot.addWidget(fresh)
    assert fresh.stain_check.isChecked() and not fresh.gray_check.isChecked()

