"""The extraction engine on the real sample slide with the real default backbone."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import assert_same_embeddings
from napari_dfl import Slide, tile_grid
from napari_dfl.core.features.engine import ExtractionCancelled, embed_coords
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import open_store_for
from napari_dfl.core.slides.sampling import Composition, CompositionError, sample_patches, to_gray
from napari_dfl.core.util.progress import drive as run


@pytest.fixture(scope="module")
def coords(slide):
    return tile_grid(slide, 224, 0.5).coords[:12]


@pytest.fixture(scope="module")
def full_run(slide, coords, backbone, tmp_path_factory):
    """An uninterrupted extraction of 12 tissue tiles."""
    store = open_store_for(slide, backbone, Composition(), tmp_path_factory.mktemp("full"))
    progress = []
    run(embed_coords(slide, coords, backbone, Composition(), store, batch_size=4),
        progress.append)
    return store, progress


def test_progress_and_store_contents(full_run, coords, backbone):
    store, progress = full_run
    assert [p.done for p in progress] == [0, 4, 8, 12]
    assert progress[-1].computed == 12 and progress[-1].fraction == 1.0
    assert len(store) == 12 and store.dim == 4 * backbone.embed_dim
    assert not store.missing(coords).any()
    assert store.attrs["parts"] == ["0.5um/px rgb", "0.5um/px gray", "2um/px rgb", "2um/px gray"]
    assert store.identity["backbone"]["weights_sha256"] == backbone.weights_sha256


def test_concatenation_order_is_zoom_major_then_variant(full_run, slide, coords, backbone):
    store, _ = full_run
    composition = Composition()
    patches = sample_patches(slide, coords[:2], composition)
    assert patches.shape == (2, 4, 224, 224, 3)
    # x20 gray is the luma of x20 rgb; the x5 patch is a different field of view.
    np.testing.assert_array_equal(patches[:, 1], to_gray(patches[:, 0]))
    assert (patches[:, 1, ..., 0] == patches[:, 1, ..., 2]).all()
    assert np.abs(patches[:, 2].astype(int) - patches[:, 0]).mean() > 10
    parts = [backbone.embed(patches[:, k]) for k in range(4)]
    expected = np.concatenate(parts, axis=1)
    assert_same_embeddings(store.get(coords[:2]), expected, backbone.precision)
    d = backbone.embed_dim
    stored = store.get(coords[:2])
    # Each block is closest to the part it should hold.
    for k in range(4):
        errors = [np.abs(stored[:, k * d:(k + 1) * d] - part).mean() for part in parts]
        assert int(np.argmin(errors)) == k


def test_rerun_computes_nothing(full_run, slide, coords, backbone):
    store, _ = full_run
    before = store.embeddings().copy()
    progress = []
    run(embed_coords(slide, coords, backbone, Composition(), store), progress.append)
    assert progress[-1].computed == 0 and progress[-1].done == 12
    np.testing.assert_array_equal(store.embeddings(), before)


def test_deterministic_across_runs(full_run, slide, coords, backbone, tmp_path):
    store, _ = full_run
    again = open_store_for(slide, backbone, Composition(), tmp_path)
    run(embed_coords(slide, coords[::-1], backbone, Composition(), again, batch_size=3))
    np.testing.assert_allclose(again.get(coords), store.get(coords), rtol=1e-3, atol=1e-3)


def test_cancelled_then_resumed_equals_uninterrupted(full_run, slide, coords, backbone,
                                                     tmp_path):
    store, _ = full_run
    partial = open_store_for(slide, backbone, Composition(), tmp_path)
    calls = iter(range(100))
    with pytest.raises(ExtractionCancelled, match="rerun computes only the rest"):
        run(embed_coords(slide, coords, backbone, Composition(), partial, batch_size=4,
                         cancel=lambda: next(calls) >= 1))
    kept = len(EmbeddingStore.open(partial.path))
    assert 0 < kept < 12
    reopened = open_store_for(slide, backbone, Composition(), tmp_path)
    progress = []
    run(embed_coords(slide, coords, backbone, Composition(), reopened, batch_size=4),
        progress.append)
    assert progress[-1].computed == 12 - kept
    np.testing.assert_allclose(reopened.get(coords), store.get(coords), rtol=1e-3, atol=1e-3)


def test_closing_the_generator_keeps_committed_batches(slide, coords, backbone, tmp_path):
    store = open_store_for(slide, backbone, Composition(), tmp_path)
    generator = embed_coords(slide, coords, backbone, Composition(), store, batch_size=4)
    assert next(generator).done == 0
    assert next(generator).done == 4  # batch 1 committed, batch 2 computed and being written
    generator.close()
    # Closing waits for the write in flight: no computed batch is lost.
    assert len(EmbeddingStore.open(store.path)) == 8


def test_border_samples_are_padded_not_dropped(slide, backbone, tmp_path):
    composition = Composition(patch_size=64, zooms=(0.5,), variants=("rgb",))
    corner = np.array([[slide.dimensions[0] - 20, slide.dimensions[1] - 20], [-30, -30]])
    patches = sample_patches(slide, corner, composition)
    assert (patches[0, 0, 30:, 30:] == 255).all() and (patches[1, 0, :20, :20] == 255).all()
    store = open_store_for(slide, backbone, composition, tmp_path)
    run(embed_coords(slide, corner, backbone, composition, store))
    assert len(store) == 2 and np.isfinite(store.embeddings()).all()


def test_two_slides_with_one_name_get_their_own_stores(slide, backbone, tmp_path,
                                                      pyramid_tiff_path):
    from napari_dfl.core.features.extractor import Extractor
    from napari_dfl.core.features.store_folder import (
        find_store,
        legacy_store_path,
        store_identity,
    )

    composition = Composition(patch_size=64, zooms=(0.5,), variants=("rgb",))
    folder = tmp_path / "out"
    first = open_store_for(slide, backbone, composition, folder)
    first.append(np.array([[0, 0]]), np.ones((1, first.dim), np.float32))
    other = tmp_path / "elsewhere" / slide.path.name
    other.parent.mkdir()
    shutil.copy(pyramid_tiff_path, other)
    extractor = Extractor.of(backbone, composition)
    with Slide(other) as twin:
        second = open_store_for(twin, backbone, composition, folder)
        assert second.path != first.path and len(second) == 0
        assert find_store(folder, twin, extractor).path == second.path
    assert len(EmbeddingStore.open(first.path)) == 1, "the first slide's store is untouched"
    assert find_store(folder, slide, extractor).path == first.path
    assert find_store(folder, slide.path, extractor) is not None  # by name: the newest

    # a store written before names held the content key is found and reused, not recomputed
    legacy_folder = tmp_path / "legacy"
    identity = store_identity(slide, extractor)
    legacy = EmbeddingStore.create_or_open(legacy_store_path(legacy_folder, slide.path,
                                                             identity), identity, first.dim)
    legacy.append(np.array([[0, 0]]), np.ones((1, first.dim), np.float32))
    assert find_store(legacy_folder, slide, extractor).path == legacy.path
    reopened = open_store_for(slide, backbone, composition, legacy_folder)
    assert reopened.path == legacy.path and len(reopened) == 1
    assert sorted(p.name for p in legacy_folder.iterdir()) == [legacy.path.name]


def test_invalid_compositions_are_explained():
    with pytest.raises(CompositionError, match="rgb, gray"):
        Composition(variants=("hsv",))
    with pytest.raises(CompositionError, match="positive"):
        Composition(zooms=(0.0,))
    assert Composition().describe() == "224 px: x20 rgb | x20 gray | x5 rgb | x5 gray"


def test_progress_carries_committed_anchors(full_run, coords):
    _, progress = full_run
    committed = np.concatenate([p.committed for p in progress])
    assert sorted(map(tuple, committed)) == sorted(map(tuple, coords))


def test_given_order_computes_the_first_coords_first(slide, coords, backbone, tmp_path):
    composition = Composition(patch_size=64, zooms=(0.5,), variants=("rgb",))
    store = open_store_for(slide, backbone, composition, tmp_path)
    wanted = coords[::-1]
    generator = embed_coords(slide, wanted, backbone, composition, store, batch_size=3,
                             order="given")
    next(generator)
    first = next(generator)
    np.testing.assert_array_equal(first.committed, wanted[:3])
    generator.close()


def test_a_store_records_its_precisions_and_a_mix_is_said(slide, coords, backbone, tmp_path):
    import warnings

    from napari_dfl.core.features.store_folder import MixedPrecisionWarning

    composition = Composition(patch_size=112, zooms=(0.5,), variants=("rgb",))
    other = "fp32" if backbone.precision != "fp32" else "bf16"
    store = open_store_for(slide, backbone, composition, tmp_path)
    assert store.attrs["precisions"] == [backbone.precision]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixedPrecisionWarning)  # same precision: silent
        run(embed_coords(slide, coords[:4], backbone, composition, store))
    # More rows, another precision: kept, said, and recorded for whoever reads the store
    with pytest.warns(MixedPrecisionWarning, match=f"--precision {backbone.precision}"):
        run(embed_coords(slide, coords[:8], backbone.with_precision(other), composition,
                         store))
    assert len(store) == 8
    assert EmbeddingStore.open(store.path).attrs["precisions"] == [backbone.precision, other]
    with warnings.catch_warnings():  # nothing left to compute: nothing to say
        warnings.simplefilter("error", MixedPrecisionWarning)
        run(embed_coords(slide, coords[:8], backbone.with_precision(other), composition,
                         store))
