"""The explorer's map (Qt-free): pixels, density image, polygon selection, nearest, colours."""

from __future__ import annotations

import numpy as np
import pytest

from napari_dfl.core.errors import DFLError
from napari_dfl.core.explorer.colours import label_colors, value_colors
from napari_dfl.core.explorer.embedding_map import EmbeddingMap
from napari_dfl.core.features.pca_colours import pca_colors


def clusters(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    which = rng.integers(0, 3, n)
    xy = centres[which] + rng.normal(scale=1.0, size=(n, 2))
    return xy, which


def test_pixels_keep_the_layout_and_the_density_counts_every_point():
    xy, which = clusters()
    anchors = np.stack([np.arange(len(xy)) % 50, np.arange(len(xy)) // 50], 1) * 100
    emap = EmbeddingMap(xy, anchors, tile_size=100.0, bins=128, radius=0)
    assert (emap.pixels >= 0).all() and (emap.pixels <= 127).all()
    # x grows along the columns, y along the rows (the explorer shows rows upwards)
    right, up = emap.pixels[which == 1].mean(0), emap.pixels[which == 2].mean(0)
    left = emap.pixels[which == 0].mean(0)
    assert right[1] > left[1] + 40 and up[0] > left[0] + 40
    palette = {"0": (1, 0, 0), "1": (0, 1, 0), "2": (0, 0, 1)}
    image = emap.density_rgba(label_colors(which.astype(str), palette))
    assert image.shape == (128, 128, 4) and image.dtype == np.uint8
    rc = np.round(emap.pixels[which == 1]).astype(int)
    greens = image[rc[:, 0], rc[:, 1]]
    assert (greens[:, 1] > 200).mean() > 0.9 and (greens[:, 3] > 0).all()
    assert (image[..., 3] > 0).sum() == len({tuple(p) for p in np.round(emap.pixels).astype(int)})


def test_polygon_selection_nearest_point_and_tiles_on_the_slide():
    xy, _which = clusters()
    anchors = np.stack([np.arange(len(xy)) % 50, np.arange(len(xy)) // 50], 1) * 100
    emap = EmbeddingMap(xy, anchors, tile_size=100.0, bins=256)
    cols = emap.pixels[:, 1]
    box = np.array([[-1, -1], [-1, 150], [300, 150], [300, -1]], float)
    np.testing.assert_array_equal(emap.in_polygon(box), cols < 150)
    assert not emap.in_polygon(box[:2]).any()
    i = 123
    assert emap.nearest(emap.pixels[i] + 0.01) == i
    assert emap.nearest([-500.0, -500.0]) is None
    slide_box = np.array([[0, 0], [1000, 0], [1000, 1000], [0, 1000]], float)  # (x, y)
    inside = emap.tiles_in_polygon(slide_box)
    np.testing.assert_array_equal(inside, (emap.centres < 1000).all(axis=1))
    np.testing.assert_array_equal(emap.tile_grid_positions(), anchors[:, ::-1] // 100)
    with pytest.raises(DFLError, match="project the embeddings"):
        EmbeddingMap(xy[:10], anchors[:9], tile_size=100.0)


def test_colours_are_reproducible_and_meaningful():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(200, 16))
    base[:100, 0] += 8.0  # two groups along one direction
    colours = pca_colors(base)
    assert colours.shape == (200, 3) and colours.dtype == np.uint8
    np.testing.assert_array_equal(colours, pca_colors(base.copy()))
    gap = np.abs(colours[:100].astype(float).mean(0) - colours[100:].astype(float).mean(0))
    assert gap.max() > 150  # the first component separates the two groups
    confidence = value_colors(np.array([0.0, 1.0, np.nan]))
    assert not np.allclose(confidence[0], confidence[1])
    np.testing.assert_allclose(confidence[2], (0.55, 0.55, 0.55))


def test_few_points_paint_larger_squares_and_the_selection_follows():
    xy, _which = clusters(n=60)
    anchors = np.zeros((60, 2), np.int64)
    emap = EmbeddingMap(xy, anchors, tile_size=100.0, bins=256)
    assert emap.radius == 4
    many = EmbeddingMap(*clusters(n=100_000)[:1], np.zeros((100_000, 2)), tile_size=1.0)
    assert many.radius == 0
    image = emap.density_rgba(np.ones((60, 3)) * 0.5)
    painted = image[..., 3] > 0
    assert 60 * 9 < painted.sum() <= 60 * 81  # squares of 9 x 9, some overlapping
    r, c = np.round(emap.pixels[0]).astype(int)
    assert painted[r - 4:r + 5, c - 4:c + 5].all()
    np.testing.assert_array_equal(image[painted][:, :3], 128)
    selected = np.zeros(60, bool)
    selected[0] = True
    mask = emap.highlight_mask(selected)
    assert mask[r - 4:r + 5, c - 4:c + 5].all() and mask.sum() == 81


def test_sibling_stores_are_those_of_the_same_extractor(tmp_path):
    from napari_dfl.core.explorer.colours import slide_colors
    from napari_dfl.core.explorer.projection import cached_projection, project_stores
    from napari_dfl.core.features.extractor import Extractor
    from napari_dfl.core.features.store import EmbeddingStore
    from napari_dfl.core.features.store_folder import sibling_stores, store_path_for
    from napari_dfl.core.slides.sampling import Composition

    extractor = Extractor({"name": "b", "weights_sha256": "1"}, Composition()).to_dict()
    other_weights = Extractor({"name": "b", "weights_sha256": "2"}, Composition()).to_dict()
    rng = np.random.default_rng(0)

    def make(slide: str, ex: dict, rows: int = 5, dim: int = 4) -> EmbeddingStore:
        identity = {**ex, "slide": {"name": slide}}
        store = EmbeddingStore.create_or_open(store_path_for(tmp_path, slide, identity),
                                              identity, dim)
        if rows:
            store.append(np.stack([np.arange(rows), np.zeros(rows)], 1).astype(np.int64),
                         rng.normal(size=(rows, dim)).astype(np.float32))
        return store

    first = make("a.svs", extractor)
    second = make("b.svs", extractor)
    make("c.svs", other_weights)       # another extractor: not in the cohort
    make("d.svs", extractor, rows=0)   # empty: skipped
    make("e.svs", extractor, dim=6)    # another dimension: skipped
    cohort = sibling_stores(first)
    assert [s.path for s in cohort] == [first.path, second.path]

    alone = project_stores([first], "pca")[0]
    together = project_stores(cohort, "pca")
    assert [len(p) for p in together] == [5, 5]
    # the joint projection is cached apart from the slide's own
    np.testing.assert_array_equal(cached_projection([first], "pca")[0], alone)
    np.testing.assert_array_equal(cached_projection(cohort, "pca")[1], together[1])
    colours = slide_colors(np.array([0, 0, 1, 2]))
    assert np.allclose(colours[0], colours[1]) and not np.allclose(colours[1], colours[2])


def test_clusters_find_planted_groups_largest_first_and_reproducibly():
    from sklearn.metrics import adjusted_rand_score

    from napari_dfl.core.explorer.clusters import ClusterCache, fingerprint, kmeans

    rng = np.random.default_rng(0)
    sizes = [300, 200, 100]  # three planted groups in 1,280-D
    centres = rng.normal(scale=4.0, size=(3, 1280)).astype(np.float32)
    truth = np.repeat(np.arange(3), sizes)
    x = centres[truth] + rng.normal(size=(len(truth), 1280)).astype(np.float32)
    cache = ClusterCache()
    labels = cache.labels(x, 3)
    assert adjusted_rand_score(truth, labels) > 0.99
    assert np.bincount(labels).tolist() == sizes, "cluster 0 is the largest"
    assert (cache.labels(x, 3) is labels) and (fingerprint(x), 3) in cache
    np.testing.assert_array_equal(ClusterCache().labels(x, 3), labels)  # recomputed: same
    with pytest.raises(DFLError, match="choose fewer clusters"):
        kmeans(x[:2], 3)
    with pytest.raises(DFLError, match="between 1 and"):
        kmeans(x, 0)
    small = ClusterCache(capacity=1)
    small.labels(x, 2)
    small.labels(x[:100], 2)
    assert (fingerprint(x), 2) not in small, "the oldest embeddings are forgotten"


def test_legends_count_their_tiles_and_name_the_missing():
    from napari_dfl.core.explorer.legend import categorical, continuous, from_labels

    colouring = from_labels("class", ["b", None, "a", "b", "zz"],
                            {"a": (1, 0, 0), "b": (0, 1, 0)}, missing="no class")
    assert [(e.name, e.count) for e in colouring.entries] == [("a", 1), ("b", 2), ("zz", 1),
                                                              ("no class", 1)]
    np.testing.assert_array_equal(colouring.members(colouring.entry("b").code),
                                  [True, False, False, True, False])
    np.testing.assert_allclose(colouring.colors[2], (1, 0, 0))
    assert categorical("x", [1, 1], ["empty", "full"], [(0, 0, 0), (1, 1, 1)]).entries[0].name \
        == "full", "categories without tiles are left out"
    with pytest.raises(DFLError, match="category codes"):
        categorical("x", [2], ["a", "b"], [(0, 0, 0), (1, 1, 1)])
    bar = continuous("confidence", np.array([0.5, 0.9, np.nan]), domain=(0.5, 1.0))
    assert bar.value_range == (0.5, 0.9) and not bar.categorical
    assert bar.colors.shape == (3, 3)


def test_outlines_leave_the_inside_clear_and_stay_bounded():
    from napari_dfl.core.explorer.outlines import MAX_PIXELS, MIN_CELL, cell_size, outline_image

    image = outline_image(np.array([1]), np.array([2]), (3, 4), 16)
    assert image.shape == (48, 64)
    block = image[16:32, 32:48]
    assert block[0].all() and block[-1].all() and block[:, 0].all() and block[:, -1].all()
    assert not block[2:-2, 2:-2].any(), "the tissue inside stays visible"
    assert image.sum() == block.sum(), "nothing else is drawn"
    assert not outline_image(np.array([], int), np.array([], int), (3, 4), 16).any()
    huge = (2000, 3000)
    assert cell_size(huge) == MIN_CELL or huge[0] * huge[1] * cell_size(huge) ** 2 <= MAX_PIXELS


def test_gallery_draws_members_reproducibly_and_shrinks_by_block_means():
    from napari_dfl.core.explorer.gallery import example_tiles, thumbnail

    mask = np.zeros(100, bool)
    mask[::3] = True
    drawn = example_tiles(mask, 12, seed=0)
    assert len(set(drawn.tolist())) == 12 and mask[drawn].all()
    np.testing.assert_array_equal(example_tiles(mask, 12, seed=0), drawn)
    assert example_tiles(mask, 50).tolist() == np.flatnonzero(mask).tolist()
    patch = np.arange(256 * 256 * 3, dtype=np.int64).reshape(256, 256, 3) % 251
    small = thumbnail(patch.astype(np.uint8), max_side=128)
    assert small.shape == (128, 128, 3)
    assert small[0, 0, 0] == round(patch[:2, :2, 0].mean())
    same = np.zeros((100, 90, 3), np.uint8)
    assert thumbnail(same).shape == (100, 90, 3)
