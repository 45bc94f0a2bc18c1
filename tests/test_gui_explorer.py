"""The embedding explorer in real viewers: linked selection both ways, labelling, colours.

The slide's tiles are embedded once per module with the real backbone (a small composition
for the 2-core test machine); each test opens a fresh panel on the same store.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_dfl.core.annotations.annotation import read_geojson

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("explorer_stores")


@pytest.fixture
def explored(make_napari_viewer, sample_slide_path, store_dir, qtbot, configure_fast):
    """A panel that trained and predicted every tile, and its explorer opened with PCA."""
    from napari_dfl.core.heads.config import TrainConfig

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, panel = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    configure_fast(panel, store_dir)  # every tile, glass included
    panel.session.add_annotations(read_geojson(sample_slide_path.with_suffix(".geojson")))
    for job in (lambda: panel.train(TrainConfig(max_epochs=20, patience=5)), panel.predict):
        assert job()
        qtbot.waitUntil(lambda: not panel.session.busy, timeout=300000)
    panel.explorer.viewer_factory = lambda: make_napari_viewer(show=True)
    assert panel.explorer.open("pca")
    return viewer, panel, panel.explorer


def world_of_tiles(panel, centres_xy: np.ndarray) -> np.ndarray:
    layer = panel.slide_layer
    return centres_xy[:, ::-1] * np.asarray(layer.scale[-2:]) + np.asarray(layer.translate[-2:])


def test_lasso_in_the_explorer_lights_up_those_tiles_on_the_slide(explored):
    from napari_dfl._qt.explorer import HIGHLIGHT_NAME, LASSO_NAME, SLIDE_SELECTION_NAME

    viewer, panel, explorer = explored
    emap = explorer.map
    assert len(emap) >= len(panel.overlay.prediction.grid)
    # a lasso around the left half of the points
    rows, cols = emap.pixels[:, 0], emap.pixels[:, 1]
    mid = np.median(cols)
    polygon = np.array([[rows.min() - 1, cols.min() - 1], [rows.min() - 1, mid],
                        [rows.max() + 1, mid], [rows.max() + 1, cols.min() - 1]])
    explorer.viewer.layers[LASSO_NAME].add_polygons([polygon])
    expected = cols <= mid
    np.testing.assert_array_equal(explorer.selected, expected)
    assert 0 < expected.sum() < len(emap)
    slide_layer = viewer.layers[SLIDE_SELECTION_NAME]
    world = world_of_tiles(panel, emap.centres)
    lit = np.array([slide_layer.get_value(w, world=True)[3] for w in world]) == 255
    np.testing.assert_array_equal(lit, expected)
    highlight = explorer.viewer.layers[HIGHLIGHT_NAME].data
    on = highlight[np.round(rows).astype(int), np.round(cols).astype(int), 3] == 255
    assert on[expected].all()


def test_a_region_on_the_slide_lights_up_its_points(explored):
    from napari_dfl._qt.explorer import HIGHLIGHT_NAME, SLIDE_LASSO_NAME

    viewer, _panel, explorer = explored
    emap = explorer.map
    region = np.array([[0, 0], [0, 1100], [1500, 1100], [1500, 0]], float)  # (row, col)
    viewer.layers[SLIDE_LASSO_NAME].add_polygons([region])
    centres = emap.centres
    expected = (centres[:, 0] < 1100) & (centres[:, 1] < 1500)
    np.testing.assert_array_equal(explorer.selected, expected)
    highlight = explorer.viewer.layers[HIGHLIGHT_NAME].data[..., 3] == 255
    rc = np.round(emap.pixels).astype(int)
    assert highlight[rc[expected, 0], rc[expected, 1]].all()
    assert highlight.sum() <= expected.sum() * (2 * emap.radius + 1) ** 2
    assert not highlight[rc[~expected, 0], rc[~expected, 1]].all()


def test_click_centres_the_slide_and_hover_shows_the_patch(explored):
    viewer, panel, explorer = explored
    emap = explorer.map
    index = int(np.argmax(emap.centres[:, 0] + emap.centres[:, 1]))
    assert explorer.point_at(emap.pixels[index]) == index
    explorer.centre_slide_on(index)
    np.testing.assert_allclose(viewer.scene.camera.center[-2:],
                               world_of_tiles(panel, emap.centres[[index]])[0])
    assert explorer.selected.sum() == 1 and explorer.selected[index]
    patch = explorer.patch(index)
    x, y = emap.anchors[index]
    expected = panel.session.working_slide().read_region((float(x), float(y)), (112, 112), mpp=0.5)
    np.testing.assert_array_equal(patch, expected)
    explorer.controls.show_patch(patch, index)
    assert not explorer.controls.patch_view.pixmap().isNull()


def test_labelling_a_selection_makes_annotations_of_those_tiles(explored):
    from napari_dfl._qt import annotation_layers
    from napari_dfl.workflows.labelled import annotation_samples

    _viewer, panel, explorer = explored
    emap = explorer.map
    chosen = np.zeros(len(emap), bool)
    chosen[:: max(1, len(emap) // 7)] = True
    explorer.select(chosen)
    panel.session.set_active("dermis")
    before = len(panel.points.data)
    assert explorer.label_selection() == chosen.sum()
    added = np.asarray(panel.points.data)[before:]
    np.testing.assert_allclose(added, emap.centres[chosen][:, ::-1])
    assert set(annotation_layers.labels_of(panel.points)[before:]) == {"dermis"}
    # those annotations sample exactly the explored tiles: nothing new to embed
    session = panel.session
    slide = session.working_slide()
    samples = annotation_samples(slide, session.annotations, session.settings)
    store = session.embedder().known_store(slide)
    assert not store.missing(samples.coords).any()


def test_the_false_colour_map_lines_up_with_the_tissue(explored):
    from napari_dfl._qt.explorer import FALSE_COLOUR_NAME

    viewer, panel, explorer = explored
    explorer.false_colour_layer()
    layer = viewer.layers[FALSE_COLOUR_NAME]
    emap = explorer.map
    world = world_of_tiles(panel, emap.centres)
    values = np.array([layer.get_value(w, world=True) for w in world])
    assert (values[:, 3] == 255).all(), "every tile in the store is coloured"
    slide = panel.session.working_slide()
    thumb = slide.thumbnail(512)
    down = slide.dimensions[0] / thumb.shape[1]
    glass = np.array([thumb[int(y / down), int(x / down)].min() > 215
                      for x, y in emap.centres])
    assert 10 < glass.sum() < len(glass) - 10
    rgb = values[:, :3].astype(float)
    spread_glass = np.linalg.norm(rgb[glass] - rgb[glass].mean(0), axis=1).mean()
    gap = np.linalg.norm(rgb[glass].mean(0) - rgb[~glass].mean(0))
    assert gap > 2 * spread_glass, (gap, spread_glass)


def test_colour_modes_and_umap_for_real(explored, qtbot):
    from napari_dfl._qt.explorer import COLOR_MODES, DENSITY_NAME
    from napari_dfl.core.explorer.projection import cached_projection

    _viewer, panel, explorer = explored
    images = {}
    for mode in COLOR_MODES:
        explorer.controls.mode.setCurrentText(mode)
        images[mode] = explorer.viewer.layers[DENSITY_NAME].data.copy()
    assert len({im.tobytes() for im in images.values()}) == len(COLOR_MODES)
    alpha = images["prediction"][..., 3]
    assert (alpha > 0).sum() > len(explorer.map) // 4

    first = explorer.viewer
    first.close()  # the user closed the explorer window: opening again makes a new one
    assert explorer.open("umap")
    qtbot.waitUntil(lambda: not panel.session.busy, timeout=240000)
    store = panel.session.embedder().known_store(panel.session.working_slide())
    [xy] = cached_projection([store], "umap")
    assert xy.shape == (len(store), 2)
    np.testing.assert_allclose(explorer.map.xy, xy)
    assert explorer.is_open and explorer.viewer is not first


def test_a_cohort_view_colours_by_slide_and_labels_only_the_open_slide(explored, tmp_path,
                                                                       notes):
    import shutil

    from napari_dfl._qt.explorer import DENSITY_NAME
    from napari_dfl.workflows.embedding.service import ExtractionProcess, ExtractionRequest

    viewer, panel, explorer = explored
    settings, slide = panel.session.settings, panel.session.working_slide()
    other = tmp_path / "other-slide.svs"
    shutil.copyfile(slide.path, other)
    coords = np.array([[1000, 1500], [1112, 1500], [1000, 1612], [1112, 1612]], np.int64)
    job = ExtractionProcess(ExtractionRequest(
        slide_path=str(other), mpp=None, coords=coords, settings=settings)).start()
    while not job.finished:
        job.poll(0.2)
    assert job.outcome[0] == "finished", job.outcome

    single = len(explorer.map)
    assert explorer.open("pca", cohort=True)
    emap = explorer.map
    assert emap.slides[0] == slide.path.name and "other-slide.svs" in emap.slides
    assert len(emap) == single + len(coords)
    assert (emap.slide_ids != 0).sum() == len(coords)
    explorer.controls.mode.setCurrentText("slide")
    per_tile = explorer.colors("slide")
    ours = {tuple(c) for c in per_tile[emap.slide_ids == 0]}
    theirs = {tuple(c) for c in per_tile[emap.slide_ids != 0]}
    assert len(ours) == len(theirs) == 1 and ours != theirs
    image = explorer.viewer.layers[DENSITY_NAME].data
    r, c = np.round(emap.pixels[emap.slide_ids != 0][0]).astype(int)
    assert image[r, c, 3] > 0 and tuple(image[r, c, :3]) != (0, 0, 0)
    # the copy's tiles are the same pixels as the open slide's: one space, same places
    for anchor, xy in zip(emap.anchors[emap.slide_ids != 0], emap.xy[emap.slide_ids != 0],
                          strict=True):
        twins = (emap.anchors == anchor).all(axis=1) & (emap.slide_ids == 0)
        if twins.any():
            np.testing.assert_allclose(emap.xy[twins][0], xy, atol=1e-3)

    elsewhere = int(np.flatnonzero(emap.slide_ids != 0)[0])
    before_centre = tuple(viewer.scene.camera.center)
    explorer.centre_slide_on(elsewhere)
    assert tuple(viewer.scene.camera.center) == before_centre
    assert any("other-slide.svs" in m for m in notes)
    x, y = emap.anchors[elsewhere]
    from napari_dfl.core.slides.tiff import Slide

    expected = Slide(other).read_region((float(x), float(y)), (112, 112), mpp=0.5)
    np.testing.assert_array_equal(explorer.patch(elsewhere), expected)

    chosen = np.zeros(len(emap), bool)
    chosen[[0, 1, elsewhere]] = True
    explorer.select(chosen)
    panel.session.set_active("dermis")
    assert explorer.label_selection() == 2
    assert any("belong to other slides" in m for m in notes)
