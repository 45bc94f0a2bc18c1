"""Field of view apart from the network's input size, on the real sample slide and backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_dfl import tile_grid
from napari_dfl.core.features.engine import embed_coords
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.parts import part_columns, sub_compositions
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store_folder import open_store_for, store_path_for
from napari_dfl.core.project.folder import ProjectFile
from napari_dfl.core.slides.sampling import (
    TISSUE_COMPOSITION,
    Composition,
    CompositionError,
    sample_patches,
)
from napari_dfl.core.util.progress import drive as run

CELL = Composition(64, (0.5, 2.0), ("rgb",), 224)


@pytest.fixture(scope="module")
def coords(slide):
    return tile_grid(slide, 64, 0.5).coords[:6]


def _detail(patches: np.ndarray) -> float:
    """Mean absolute horizontal gradient: how much fine detail an image carries."""
    gray = patches.astype(np.float32).mean(axis=-1)
    return float(np.abs(np.diff(gray, axis=-1)).mean())


def test_each_part_shows_its_field_read_at_the_input_size(slide, coords):
    patches = sample_patches(slide, coords, CELL)
    assert patches.shape == (6, 2, 224, 224, 3)
    mpp = slide.require_mpp()
    centre = coords[0] + CELL.anchor_extent(mpp) / 2
    # the x5 part is its 128 µm field read at 128/224 µm/px (from the x20 level)
    half = 64 * 2.0 / mpp / 2
    context = slide.read_region((centre[0] - half, centre[1] - half), (224, 224),
                                mpp=128 / 224)
    np.testing.assert_array_equal(patches[0, 1], context)
    # what a part shows does not depend on the input size: the 64 px read looks the same
    small = sample_patches(slide, coords, Composition(64, (0.5, 2.0), ("rgb",)))
    assert small.shape == (6, 2, 64, 64, 3)
    shrunk = np.stack([np.asarray(Image.fromarray(p).resize((64, 64), Image.BILINEAR,
                                                            reducing_gap=3.0))
                       for p in patches[:, 1]])
    assert np.abs(shrunk.astype(int) - small[:, 1]).mean() < 2
    # ...but the context read at 224 px carries detail that 64 x5 pixels upsampled do not
    upsampled = np.stack([np.asarray(Image.fromarray(p).resize((224, 224), Image.BICUBIC))
                          for p in small[:, 1]])
    assert _detail(patches[:, 1]) > 1.5 * _detail(upsampled)


def test_the_backbone_size_is_the_default_input_and_is_recorded(slide, coords, backbone,
                                                                tmp_path):
    comp = Composition(64, (0.5,), ("rgb",))
    assert comp.input_size is None and comp.read_size == 64  # unresolved: as before
    store = open_store_for(slide, backbone, comp, tmp_path)
    run(embed_coords(slide, coords, backbone, comp, store, batch_size=4))
    recorded = Extractor.from_dict(store.identity, "the store").composition
    assert recorded.input_size == backbone.input_size == 224
    expected = backbone.embed(sample_patches(slide, coords, recorded)[:, 0])
    np.testing.assert_allclose(store.get(coords), expected, rtol=2e-2, atol=2e-2)
    # the settings' choice (backbone's size, not known yet) matches the store it wrote
    chosen = Settings(composition=comp).chosen_extractor()
    assert chosen.differences(Extractor.from_dict(store.identity)) == []


def test_files_without_an_input_size_keep_their_old_meaning(backbone):
    old = {"patch_size": 64, "zooms": [0.5, 2.0], "variants": ["rgb"]}
    legacy = Composition.from_dict(old)
    assert legacy.input_size == 64 and legacy.read_size == 64
    # a centred composition resolved to the backbone's 224 has the identity (and the store
    # name) it had before input sizes existed
    default = Extractor.of(backbone, Composition())
    assert default.composition.input_size == 224
    assert "input_size" not in default.composition.to_dict()
    record = json.loads(json.dumps(default.to_dict()))
    assert Extractor.from_dict(record).composition == default.composition
    # an old head on 64 px parts does not fit embeddings read at 224 px, and says why
    new = Extractor.of(backbone, Composition(64, (0.5, 2.0), ("rgb",)))
    old_head = Extractor(default.backbone, legacy)
    assert old_head.differences(new) == ["input_size 64 (now: 224)"]
    assert "read at 224 px" in new.describe()
    # parts read differently are stored apart
    a = Extractor.of(backbone, Composition(64, input_size=64)).to_dict()
    b = Extractor.of(backbone, Composition(64, input_size=224)).to_dict()
    assert store_path_for("f", "a.svs", a) != store_path_for("f", "a.svs", b)


def test_settings_and_projects_keep_the_choice():
    auto = Settings(composition=Composition(64, input_size=None))
    data = json.loads(json.dumps(auto.to_dict()))
    assert data["composition"]["input_size"] is None
    assert Settings.from_dict(data)[0].composition.input_size is None
    fixed = Settings(composition=Composition(64, input_size=160))
    assert Settings.from_dict(fixed.to_dict())[0].composition.input_size == 160
    # a version-1 project read every part at its patch size
    v1 = ProjectFile.from_json({"format_version": 1, "slide": "s.svs", "patch_size": 96,
                                "zooms": "0.5, 2", "classes": []}, [])
    assert v1.settings.composition.input_size == 96


@pytest.mark.parametrize("size", [8, 5000, 2.5, True, "224"])
def test_bad_input_sizes_are_explained(size):
    with pytest.raises(CompositionError, match="input size"):
        Composition(64, input_size=size)
    with pytest.raises(CompositionError, match="input size"):
        Composition.from_dict({"patch_size": 64, "zooms": [0.5], "variants": ["rgb"],
                               "input_size": size})


def test_smaller_compositions_are_cut_from_one_extraction(slide, coords, backbone, tmp_path):
    full = Composition(64, (0.5, 2.0), ("rgb", "gray"), 224)
    subs = sub_compositions(full)
    assert [s.describe() for s in subs] == [
        "64 px: x20 rgb, read at 224 px", "64 px: x20 rgb | x20 gray, read at 224 px",
        "64 px: x20 rgb | x5 rgb, read at 224 px", full.describe()]
    stores = tmp_path / "stores"
    big = open_store_for(slide, backbone, full, stores)
    run(embed_coords(slide, coords, backbone, full, big))
    context_rgb = subs[2]
    small = open_store_for(slide, backbone, context_rgb, stores)
    run(embed_coords(slide, coords, backbone, context_rgb, small))
    cut = big.get(coords)[:, part_columns(full, context_rgb, backbone.embed_dim)]
    np.testing.assert_allclose(cut, small.get(coords), rtol=1e-4, atol=1e-4)
    with pytest.raises(CompositionError, match="field of view and the input size"):
        part_columns(full, Composition(112, (0.5,), ("rgb",), 224), backbone.embed_dim)
    with pytest.raises(CompositionError, match="has no part"):
        part_columns(subs[0], context_rgb, backbone.embed_dim)


def test_the_panel_session_gives_points_cell_sized_fields(sample_slide_path, tmp_path):
    import shutil

    from shapely.geometry import MultiPoint

    from napari_dfl.core.annotations.annotation import Annotation
    from napari_dfl.core.slides.factory import open_slide
    from napari_dfl.workflows.session import Session

    copy = tmp_path / sample_slide_path.name  # not the bundled sample: built-in defaults
    shutil.copyfile(sample_slide_path, copy)
    session = Session()
    told = []
    session.message.connect(lambda level, text: told.append(text))
    session.set_slide(open_slide(copy))
    session.set_settings(session.settings.with_(store_dir=str(tmp_path / "stores")))
    assert session.settings.composition == TISSUE_COMPOSITION
    session.add_class("tumour")
    session.add_annotations([Annotation(MultiPoint([(900, 1200), (1000, 1300)]), "tumour")])
    assert session.extract()
    assert session.settings.composition == Composition(32)
    assert any("Points only: cell-sized fields of 32 px (16 µm" in t for t in told)
    assert session.samples is not None and len(session.samples.coords) == 2
    # a composition the user chose stays, even the built-in one
    session.set_settings(session.settings.with_(composition=TISSUE_COMPOSITION))
    assert session.extract() and session.settings.composition == TISSUE_COMPOSITION


def test_a_field_larger_than_the_slide_is_said_in_one_line(tmp_path, capsys):
    from napari_dfl.cli import main
    from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS, SAMPLE_SLIDE

    code = main(["train", f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}", "--patch-size", "4096",
                 "--zooms", "0.5", "--variants", "rgb", "--head", "linear",
                 "--out", str(tmp_path / "h.dflhead"), "--stores", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert "the field of view (4096 px at 0.5 µm/px: 2048 µm) is larger than" in err
    assert "choose a smaller patch size" in err and "Traceback" not in err
    # regions smaller than such a field yield no sample: that is said too, and nothing written
    assert code != 0 and "yields no samples" in err
    assert not (tmp_path / "h.dflhead").exists()
