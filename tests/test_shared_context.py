"""Shared and nearest context: x5 parts on a grid of their own, each embedded once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import assert_same_embeddings
from napari_dfl import tile_grid
from napari_dfl.core.features.engine import embed_coords
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store_folder import open_store_for
from napari_dfl.core.slides.sample_slide import (
    SAMPLE_ANNOTATIONS,
    SAMPLE_COMPOSITION,
    SAMPLE_SLIDE,
)
from napari_dfl.core.slides.sampling import (
    TISSUE_COMPOSITION,
    Composition,
    CompositionError,
    default_composition,
    sample_patches,
)
from napari_dfl.core.util.progress import drive as run

SHARED = Composition(context="shared")
NEAREST = Composition(context="nearest")


def test_identity_of_a_shared_composition_and_old_ones_unchanged():
    assert "context" not in Composition().to_dict()  # stores and heads written before keep
    assert SHARED.to_dict()["context"] == "shared"   # their names; shared ones get their own
    assert Composition.from_dict(SHARED.to_dict()) == SHARED
    assert Composition.from_dict(Composition().to_dict()).context == "centred"
    assert "context shared" in SHARED.describe() and "shared" not in Composition().describe()
    single = Composition(zooms=(0.5,), context="nearest")  # nothing to share: one identity
    assert not single.shares_context and single == Composition(zooms=(0.5,))
    assert dataclasses.replace(TISSUE_COMPOSITION, zooms=(0.5,)).to_dict() == single.to_dict()
    assert Composition.from_dict(NEAREST.to_dict()) == NEAREST and NEAREST.shares_context
    assert "nearest context window" in NEAREST.describe()
    with pytest.raises(CompositionError, match="context must be one of centred, shared, nearest"):
        Composition(context="around")


def test_defaults_share_the_context_for_tissue_and_centre_it_on_cells():
    assert TISSUE_COMPOSITION.shares_context and TISSUE_COMPOSITION.context == "nearest"
    assert default_composition({"region"}) == TISSUE_COMPOSITION == Settings().composition
    assert default_composition({"point", "region"}) == TISSUE_COMPOSITION
    assert default_composition({"point"}).context == "centred"
    # a folder of tile images: one sample per image, nothing to share, so centred
    assert default_composition({"tile"}) == dataclasses.replace(TISSUE_COMPOSITION,
                                                                context="centred")
    # the small sample slide keeps a centred context (its 181 tiles take seconds either way)
    assert Composition(112) == SAMPLE_COMPOSITION and SAMPLE_COMPOSITION.context == "centred"


def test_samples_of_one_cell_share_their_context_centre():
    # 224 px at 0.5 um/px on a 0.25 um/px slide: x20 fields of 448 px, x5 fields of 1,792 px
    centres = np.array([[100.0, 100.0], [1700.0, 1000.0], [1800.0, 100.0]])
    shared = SHARED.part_centres(centres, 1, 0.25)
    np.testing.assert_array_equal(shared[0], [896.0, 896.0])
    np.testing.assert_array_equal(shared[1], shared[0])         # same x5 cell
    np.testing.assert_array_equal(shared[2], [2688.0, 896.0])   # the next cell
    np.testing.assert_array_equal(SHARED.part_centres(centres, 0, 0.25), centres)
    np.testing.assert_array_equal(Composition().part_centres(centres, 1, 0.25), centres)


def test_nearest_context_is_centred_on_the_middle_tile_of_each_3_by_3_block():
    # x20 tiles of 448 px on a 0.25 um/px slide: blocks of 3 x 3 tiles, 1,344 px a side
    tiles = np.array([[x, y] for y in range(6) for x in range(6)], dtype=float) * 448 + 224
    near = NEAREST.part_centres(tiles, 1, 0.25)
    assert len(np.unique(near, axis=0)) == 4  # 36 tiles, 4 blocks of 9
    middle = tiles[(tiles == [672.0, 672.0]).all(1)]  # the middle tile of the first block
    np.testing.assert_array_equal(NEAREST.part_centres(middle, 1, 0.25), middle)
    assert np.abs(near - tiles).max() == 448  # never more than one tile off its own centre
    assert np.abs(SHARED.part_centres(tiles, 1, 0.25) - tiles).max() == 672  # 1.5 tiles


class _Counting:
    """A backbone that counts the patches it embeds."""

    def __init__(self, backbone) -> None:
        self._backbone, self.patches = backbone, 0

    def __getattr__(self, name):
        return getattr(self._backbone, name)

    def embed(self, patches):
        self.patches += len(patches)
        return self._backbone.embed(patches)


@pytest.mark.parametrize("context", ["shared", "nearest"])
def test_each_context_is_embedded_once_and_rows_equal_the_plain_cut(slide, backbone, tmp_path,
                                                                     context):
    coords = tile_grid(slide, 224, 0.5).coords[:24]
    composition = Composition(context=context).for_input(backbone.input_size)
    counting = _Counting(backbone)
    store = open_store_for(slide, backbone, composition, tmp_path)
    run(embed_coords(slide, coords, counting, composition, store, batch_size=5, readers=2))
    assert len(store) == len(coords)

    centres = coords + composition.anchor_extent(slide.mpp) / 2.0
    cells = {tuple(c) for c in composition.part_centres(centres, 1, slide.mpp)}
    assert 1 < len(cells) < len(coords)
    variants = len(composition.variants)
    assert counting.patches == variants * (len(coords) + len(cells))  # not 4 per tile

    patches = sample_patches(slide, coords, composition)
    expected = backbone.embed(patches.reshape(-1, *patches.shape[2:]))
    expected = expected.reshape(len(coords), -1)
    assert_same_embeddings(store.get(coords), expected, backbone.precision)


def test_a_context_evicted_before_use_is_embedded_again(slide, backbone, tmp_path, monkeypatch):
    from napari_dfl.core.features import shared_context

    monkeypatch.setattr(shared_context, "CACHE_CELLS", 1)  # every context leaves at once
    coords = tile_grid(slide, 224, 0.5).coords[:12]
    composition = SHARED.for_input(backbone.input_size)
    store = open_store_for(slide, backbone, composition, tmp_path)
    run(embed_coords(slide, coords, backbone, composition, store, batch_size=3))
    centred = dataclasses.replace(composition, context="centred")
    assert len(store) == len(coords) and centred != composition
    patches = sample_patches(slide, coords, composition)
    expected = backbone.embed(patches.reshape(-1, *patches.shape[2:])).reshape(len(coords), -1)
    assert_same_embeddings(store.get(coords), expected, backbone.precision)



def test_the_cli_option_chooses_the_context():
    from napari_dfl.cli import build_parser
    from napari_dfl.cli.options import settings_from

    parser = build_parser()
    shared = settings_from(parser.parse_args(["embed", "s.svs", "--context", "shared"]))
    assert shared.composition.context == "shared" and shared.composition.shares_context
    centred = settings_from(parser.parse_args(["embed", "s.svs", "--context", "centred"]))
    assert centred.composition == dataclasses.replace(TISSUE_COMPOSITION, context="centred")
    plain = settings_from(parser.parse_args(["embed", "s.svs"]))
    assert plain.composition == TISSUE_COMPOSITION  # the tissue default
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "s.svs", "--context", "around"])


def test_a_batch_and_its_contexts_go_through_the_network_together_whatever_the_readers(
        slide, backbone, tmp_path):
    coords = tile_grid(slide, 224, 0.5).coords[:20]
    composition = NEAREST.for_input(backbone.input_size)
    contexts = {tuple(c) for c in composition.part_centres(
        coords + composition.anchor_extent(slide.mpp) / 2.0, 1, slide.mpp)}
    class Calls(_Counting):
        def __init__(self, backbone) -> None:
            super().__init__(backbone)
            self.calls: list[int] = []

        def embed(self, patches):
            self.calls.append(len(patches))
            return super().embed(patches)

    results = []
    for attempt in range(2):
        counting = Calls(backbone)
        store = open_store_for(slide, backbone, composition, tmp_path / str(attempt))
        # four readers cut batches ahead at once; contexts are still given out in batch order
        run(embed_coords(slide, coords, counting, composition, store, batch_size=5,
                         readers=4, order="given"))
        assert len(counting.calls) == 4  # 20 samples in batches of 5: one pass each
        assert sum(counting.calls) == 2 * (20 + len(contexts))  # each context once
        results.append(store.get(coords))
    np.testing.assert_array_equal(results[0], results[1])  # the same bits, run after run


def test_the_cli_select_reads_the_context_the_settings_in_use_read(tmp_path, monkeypatch):
    from napari_dfl.cli import main
    from napari_dfl.workflows import select

    seen = []

    def compare(datasets, backbones, fields, settings, **kwargs):
        seen.append(settings.composition)
        return []

    monkeypatch.setattr(select, "compare_settings", compare)
    points = tmp_path / "points.csv"
    points.write_text("image,x,y,label\na.png,10,10,x\nb.png,20,20,y\n")
    assert main(["select", str(points), "--out", str(tmp_path / "sel")]) == 1  # no rows
    assert seen[-1].context == "centred"  # points: the cells' default, centred
    regions = f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}"
    assert main(["select", regions, "--out", str(tmp_path / "sel")]) == 1
    assert seen[-1].context == TISSUE_COMPOSITION.context  # regions: the tissue default


def test_a_head_of_one_context_refuses_settings_or_embeddings_of_another():
    from napari_dfl.core.features.extractor import Extractor, ExtractorMismatchError

    backbone = {"name": "efficientnet-lite0", "weights_sha256": "0"}
    centred = Extractor(backbone, Composition())  # a head trained before: no context key
    nearest = Extractor(backbone, TISSUE_COMPOSITION)
    assert centred.differences(nearest) == ["context centred (now: nearest)"]
    assert nearest.differences(centred) == ["context nearest (now: centred)"]
    assert nearest.differences(Extractor(backbone, NEAREST)) == []
    with pytest.raises(ExtractorMismatchError, match="context centred \\(now: nearest\\)"):
        centred.require_same(nearest, "the head", "choose its settings again")


def test_a_folder_of_tiles_gets_a_centred_context_and_no_word_about_points(tmp_path, capsys):
    from napari_dfl.cli import build_parser
    from napari_dfl.cli.options import settings_from

    (tmp_path / "tiles" / "tumour").mkdir(parents=True)
    settings = settings_from(build_parser().parse_args(["evaluate", str(tmp_path / "tiles")]))
    assert settings.composition == dataclasses.replace(TISSUE_COMPOSITION, context="centred")
    assert "points only" not in capsys.readouterr().err
    points = tmp_path / "points.csv"
    points.write_text("image,x,y,label\na.png,10,10,x\n")
    settings = settings_from(build_parser().parse_args(["evaluate", str(points)]))
    assert settings.composition.patch_size == 32 and settings.composition.context == "centred"
    assert "points only: cell-sized fields of 32 px" in capsys.readouterr().err
