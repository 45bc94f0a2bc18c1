"""Shared context: x5 parts centred on their own grid's cells, each embedded once."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import assert_same_embeddings
from napari_dfl import tile_grid
from napari_dfl.core.features.engine import embed_coords
from napari_dfl.core.features.store_folder import open_store_for
from napari_dfl.core.slides.sampling import Composition, CompositionError, sample_patches
from napari_dfl.core.util.progress import drive as run

SHARED = Composition(context="shared")


def test_identity_of_a_shared_composition_and_old_ones_unchanged():
    assert "context" not in Composition().to_dict()  # stores and heads written before keep
    assert SHARED.to_dict()["context"] == "shared"   # their names; shared ones get their own
    assert Composition.from_dict(SHARED.to_dict()) == SHARED
    assert Composition.from_dict(Composition().to_dict()).context == "centred"
    assert "context shared" in SHARED.describe() and "shared" not in Composition().describe()
    assert not Composition(zooms=(0.5,), context="shared").shares_context  # nothing to share
    with pytest.raises(CompositionError, match="context must be one of centred, shared"):
        Composition(context="nearest")


def test_samples_of_one_cell_share_their_context_centre():
    # 224 px at 0.5 um/px on a 0.25 um/px slide: x20 fields of 448 px, x5 fields of 1,792 px
    centres = np.array([[100.0, 100.0], [1700.0, 1000.0], [1800.0, 100.0]])
    shared = SHARED.part_centres(centres, 1, 0.25)
    np.testing.assert_array_equal(shared[0], [896.0, 896.0])
    np.testing.assert_array_equal(shared[1], shared[0])         # same x5 cell
    np.testing.assert_array_equal(shared[2], [2688.0, 896.0])   # the next cell
    np.testing.assert_array_equal(SHARED.part_centres(centres, 0, 0.25), centres)
    np.testing.assert_array_equal(Composition().part_centres(centres, 1, 0.25), centres)


class _Counting:
    """A backbone that counts the patches it embeds."""

    def __init__(self, backbone) -> None:
        self._backbone, self.patches = backbone, 0

    def __getattr__(self, name):
        return getattr(self._backbone, name)

    def embed(self, patches):
        self.patches += len(patches)
        return self._backbone.embed(patches)


def test_each_context_is_embedded_once_and_rows_equal_the_plain_cut(slide, backbone, tmp_path):
    coords = tile_grid(slide, 224, 0.5).coords[:24]
    composition = SHARED.for_input(backbone.input_size)
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
    plain = settings_from(parser.parse_args(["embed", "s.svs"]))
    assert plain.composition.context == "centred"
    with pytest.raises(SystemExit):
        parser.parse_args(["embed", "s.svs", "--context", "nearest"])
