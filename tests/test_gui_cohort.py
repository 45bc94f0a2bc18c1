"""The slide-level model section in a real viewer, with a real MIL model and real embeddings.

The sample slide's tissue tiles are embedded by the real backbone (in the extraction child,
half of them first, through the panel's job runner); a small MIL model is trained
headlessly on synthetic slides made of those real embeddings, saved, loaded in the panel
and applied to the sample slide: the panel extracts the missing half and shows the
attention on the tile grid, lined up with the tissue, and a table row.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_dfl.core.features.store import EmbeddingStore

pytestmark = [pytest.mark.gui, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("slide_level", ROOT / "benchmarks" /
                                               "slide_level.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def train_model(store: EmbeddingStore, work: Path) -> Path:
    """A real MIL model on 8 synthetic slides of the store's real tile embeddings, saved."""
    from napari_dfl.core.features.store_folder import store_extractor
    from napari_dfl.core.slide_level.cohort import SlideEntry
    from napari_dfl.core.slide_level.config import MILConfig
    from napari_dfl.core.slide_level.model_files import save_slide_model
    from napari_dfl.core.slide_level.training import train_slide_model

    emb = store.embeddings()
    order = np.argsort(emb @ np.linalg.svd(emb - emb.mean(0), full_matrices=False)[2][0])
    background, planted = emb[order[: len(emb) // 2]], emb[order[-len(emb) // 4:]]
    extractor = store_extractor(store)
    rows, _ = bench.make_cohort(work / "cohort", background, planted, extractor.to_dict(), 8,
                                (6, 6), 0.12)
    entries = [SlideEntry(name, next((work / "cohort").glob(f"{Path(name).stem}__*")),
                          label, name) for name, label in rows]
    model = train_slide_model(entries, MILConfig(epochs=4, val_fraction=0.0), folds=0)
    assert model.extractor == extractor
    return save_slide_model(model, work / "model.dflslide")


@pytest.fixture
def cohort_panel(make_napari_viewer, qtbot, tmp_path, configure_fast):
    from napari_dfl.core.slide_level.prediction import slide_tiles
    from napari_dfl.workflows.jobs import as_events

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    configure_fast(widget, tmp_path / "stores", min_tissue=0.5)
    cohort = widget.slide_model
    session = widget.session
    slide, settings, embedder = session.working_slide(), session.settings, session.embedder()
    grid = slide_tiles(slide, settings.composition, settings.min_tissue)
    stores = []
    assert session.start_job(
        "Extract", lambda cancel: as_events("embedding", embedder.embed(
            slide, grid.coords[::2], cancel)), stores.append)
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=240_000)
    store = stores[0]
    assert store.missing(grid.coords).sum() == len(grid) // 2
    return viewer, widget, cohort, grid, train_model(store, tmp_path)


def test_predict_slide_shows_attention_on_tissue_and_a_table_row(cohort_panel, qtbot, notes,
                                                                 tmp_path):
    from napari_dfl._qt.overlays import tile_placement
    from napari_dfl._qt.slide_model_section import ATTENTION_NAME

    viewer, widget, cohort, grid, model_path = cohort_panel
    assert not cohort.predict_slide() and any("load a slide model" in m for m in notes)
    assert cohort.load(model_path)
    assert "normal, tumour" in cohort.info.text() and "patch 112 px" in cohort.info.text()
    assert cohort.predict_slide()
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=240_000)
    assert ATTENTION_NAME in viewer.layers, notes
    layer = viewer.layers[ATTENTION_NAME]
    [store_path] = (tmp_path / "stores").glob("*.dfl.zarr")
    assert not EmbeddingStore.open(store_path).missing(grid.coords).any()

    assert layer.data.shape == grid.grid_shape
    placement = tile_placement(grid.tile_size, widget.slide_layer)
    np.testing.assert_allclose(layer.scale, placement["scale"])
    np.testing.assert_allclose(layer.translate, placement["translate"])
    on_tissue = grid.to_grid(np.ones(len(grid), bool), False)
    assert on_tissue.sum() == len(grid) and 0 < len(grid) < on_tissue.size
    assert (layer.data[~on_tissue] == 0).all() and (layer.data[on_tissue] > 0).all()
    assert abs(float(layer.data[on_tissue].sum()) - 1.0) < 1e-4
    # each tile's centre, in world coordinates, reads that tile's attention from the layer
    attention = cohort.result.attention
    for i in np.linspace(0, len(grid) - 1, 7).astype(int):
        x, y = grid.centers()[i]
        assert layer.get_value((y, x), world=True) == pytest.approx(attention[i], rel=1e-5)

    assert cohort.table.rowCount() == 1
    cells = [cohort.table.item(0, c).text() for c in range(cohort.table.columnCount())]
    assert cells[0] == "CMU-1-Small-Region.svs" and cells[1] in ("normal", "tumour")
    assert abs(sum(float(v) for v in cells[2:]) - 1.0) < 2e-3 and len(cells) == 4

    # a model of another composition: told what to set, nothing started
    other = tmp_path / "other.dflslide"
    shutil.copytree(model_path, other)
    card = json.loads((other / "model_card.json").read_text())
    card["extractor"]["composition"]["patch_size"] = 224
    (other / "model_card.json").write_text(json.dumps(card))
    assert cohort.load(other)
    assert not cohort.predict_slide() and not widget.session.busy
    assert any("patch 224 px" in m and "Backbone and composition" in m for m in notes), notes
    # same backbone name and composition, other weights: the job reports, nothing raises
    card["extractor"]["composition"]["patch_size"] = 112
    card["extractor"]["backbone"]["weights_sha256"] = "0" * 64
    (other / "model_card.json").write_text(json.dumps(card))
    assert cohort.load(other)
    assert cohort.predict_slide()
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=60_000)
    assert any("backbone weights" in m for m in notes), notes
    assert cohort.table.rowCount() == 1

    # a folder that is not a slide model
    assert not cohort.load(tmp_path / "stores")
    assert any("not a slide model folder" in m for m in notes), notes
    assert cohort.model is not None and cohort.table.rowCount() == 1


def test_the_section_never_imports_the_backbone_stack():
    import subprocess
    import sys

    code = ("import sys, napari_dfl._qt.slide_model_section, "
            "napari_dfl.core.slide_level.model_files; "
            "bad = [m for m in ('timm', 'torchvision') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
