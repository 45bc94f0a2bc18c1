"""Training a slide model from the panel, in a real viewer, on real tile embeddings.

The sample slide's tissue tiles are embedded once by the real backbone (in this process,
before any viewer; cached in the temp folder between sessions like test_mil's tiles). A
small cohort of synthetic slides is made of those real embeddings (odd slides hold a block
of the slide's most distinct tiles) in the panel's store folder, beside the sample slide's
own store. The panel trains on it as a user would (cohort CSV, folds, epochs, Train), shows
the cross-validated figures with their n and intervals, gives the same numbers as
``napari-dfl train-slides`` on the same inputs, predicts the open slide and shows the
attention on its tile grid. Cancel stops a training; bad cohorts give one line and lose
nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_dfl.core.features.store import EmbeddingStore

pytestmark = [pytest.mark.gui]

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("slide_level", ROOT / "benchmarks" /
                                               "slide_level.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture(scope="session")
def sample_store_folder(sample_slide_path):
    """A folder holding the sample slide's store (112 px, x20, RGB, tissue >= 0.5).

    Embedded by the real default backbone in this process (about 25 s on the shared CPU),
    once: the folder is kept in the temp folder between sessions, keyed by the panel's
    chosen extractor, the store format and the versions of napari-dfl, torch and timm (the
    preset's weights come with timm), so that the key costs no backbone load.
    """
    from importlib.metadata import version

    from napari_dfl import __version__
    from napari_dfl.core.features.settings import Settings
    from napari_dfl.core.features.store_format import STORE_FORMAT_VERSION
    from napari_dfl.core.slides.sampling import Composition
    from napari_dfl.workflows.slide_batch import embed_slides

    settings = Settings(composition=Composition(112, (0.5,), ("rgb",)), batch_size=16,
                        min_tissue=0.5)
    key = hashlib.sha256(json.dumps(
        [settings.chosen_extractor().to_dict(), STORE_FORMAT_VERSION, __version__,
         version("torch"), version("timm")], sort_keys=True).encode())
    folder = Path(tempfile.gettempdir()) / f"napari-dfl-slide-training-{key.hexdigest()[:12]}"
    if not folder.is_dir():  # embedded aside, then moved in whole: never half a store
        partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        [report] = embed_slides([sample_slide_path], replace(settings, store_dir=str(partial)))
        assert report["status"] == "ok", report
        try:
            partial.rename(folder)
        except OSError:  # another session moved its copy in first
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def write_cohort(stores: Path, n_slides: int = 10, targets: bool = False,
                 fraction: float = 0.12) -> Path:
    """Synthetic slides of the sample store's real embeddings in ``stores``; the CSV.

    Odd slides are ``tumour``: a block of ``fraction`` of their 6 x 6 tiles comes from the
    slide's most distinct tiles (the far end of the first principal axis). With ``targets``
    the CSV has a numeric column (the planted share plus noise) and a binary one (tumour or
    not).
    """
    from napari_dfl.core.features.store_folder import store_extractor

    [path] = stores.glob("CMU-1-Small-Region*.dfl.zarr")
    store = EmbeddingStore.open(path)
    emb = store.embeddings()
    order = np.argsort(emb @ np.linalg.svd(emb - emb.mean(0), full_matrices=False)[2][0])
    background, planted = emb[order[: len(emb) // 2]], emb[order[-len(emb) // 4:]]
    rows, masks = bench.make_cohort(stores, background, planted,
                                    store_extractor(store).to_dict(), n_slides, (6, 6), fraction)
    rng = np.random.default_rng(1)
    csv = stores.parent / ("targets.csv" if targets else "cohort.csv")
    lines = ["slide,label,share,mutated" if targets else "slide,label"]
    for name, label in rows:
        if targets:
            share = masks[name].mean() + rng.normal(0, 0.01)
            lines.append(f"{name},{label},{share:.4f},{int(label == 'tumour')}")
        else:
            lines.append(f"{name},{label}")
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv


@pytest.fixture
def training_panel(sample_store_folder, make_napari_viewer, tmp_path, configure_fast):
    """A panel on the sample slide, its store folder holding the slide's store."""
    stores = tmp_path / "stores"
    shutil.copytree(sample_store_folder, stores)
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    configure_fast(widget, stores, min_tissue=0.5)
    return viewer, widget, stores


def _train(widget, qtbot, csv, folds: int, epochs: int, targets: str = "") -> None:
    box = widget.slide_model.training
    assert box.set_cohort(csv)
    box.folds_spin.setValue(folds)
    box.epochs_spin.setValue(epochs)
    box.targets_edit.setText(targets)
    box.train_button.click()
    assert widget.session.busy
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=60_000)


def test_panel_trains_shows_cv_results_like_the_cli_and_predicts_the_slide(
        training_panel, qtbot, notes, tmp_path):
    from napari_dfl._qt.overlays import tile_placement
    from napari_dfl._qt.slide_model_section import ATTENTION_NAME
    from napari_dfl.cli import main
    from napari_dfl.core.slide_level.model_files import load_slide_model
    from napari_dfl.core.slide_level.prediction import slide_tiles

    viewer, widget, stores = training_panel
    section, box = widget.slide_model, widget.slide_model.training
    csv = write_cohort(stores)
    # the panel's defaults are train-slides' defaults
    assert (box.folds_spin.value(), box.epochs_spin.value(), box.seed_spin.value()) == (5, 20, 0)
    _train(widget, qtbot, csv, folds=2, epochs=2)
    assert box.trained is not None, notes
    model = box.trained.model
    assert section.model is model and model.classes == ["normal", "tumour"]
    text = box.results.toPlainText()
    m = model.metrics
    assert "Cross-validated, 2 grouped folds (held-out slides; CI: 95 %)" in text, text
    interval = "(perfect separation, no CI)" if m["auc"] in (0.0, 1.0) else "[CI "
    assert f"AUC {m['auc']:.3f} {interval}" in text, text
    assert f"balanced accuracy {m['balanced_accuracy']:.3f}" in text
    for k, name in enumerate(model.classes):  # n and the Wilson interval of each recall
        right = m["confusion_matrix"][k][k]
        line = next(x for x in text.splitlines() if x.strip().startswith(name))
        assert line.strip().startswith(f"{name}  n=5  ") and f"] ({right}/5)" in line, text
    assert "Trained on 10 slides (10 groups)" in text
    assert not box.problem.isVisible()

    # the CLI on the same cohort, folds, epochs and seed: the same cross-validated numbers
    out = tmp_path / "cli.dflslide"
    assert main(["train-slides", str(csv), "--stores", str(stores), "--out", str(out),
                 "--folds", "2", "--epochs", "2"]) == 0
    cli = load_slide_model(out).metrics
    for key in ("auc", "fold_auc", "balanced_accuracy", "confusion_matrix", "per_class"):
        assert cli[key] == m[key], key

    # predict the open slide with the freshly trained model: attention on its tile grid
    assert section.predict_button.isEnabled()
    section.predict_button.click()
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=60_000)
    assert ATTENTION_NAME in viewer.layers, notes
    session = widget.session
    grid = slide_tiles(session.working_slide(), session.settings.composition,
                       session.settings.min_tissue)
    layer = viewer.layers[ATTENTION_NAME]
    assert layer.data.shape == grid.grid_shape
    np.testing.assert_allclose(layer.scale, tile_placement(grid.tile_size,
                                                           widget.slide_layer)["scale"])
    on_tissue = grid.to_grid(np.ones(len(grid), bool), False)
    assert abs(float(layer.data[on_tissue].sum()) - 1.0) < 1e-4
    cells = [section.table.item(0, c).text() for c in range(section.table.columnCount())]
    assert cells[0] == "CMU-1-Small-Region.svs" and cells[1] in model.classes

    # saved from the panel: the folder train-slides writes, loaded back the same
    folder = box.save(tmp_path / "panel.dflslide")
    assert load_slide_model(folder).metrics == m
    assert (folder / "cv_validation.png").is_file()  # out-of-fold confusion and ROC

    # the same figure in the panel
    assert box.plots_button.isEnabled()
    dialog = box.show_plots()
    shown = _figure_of(dialog)
    assert dialog.isVisible() and shown.width() > 1.5 * shown.height()
    dialog.close()


def test_target_model_from_the_panel_shows_per_target_values_and_attention(
        training_panel, qtbot, notes, tmp_path):
    from napari_dfl._qt.slide_model_section import ATTENTION_NAME

    viewer, widget, stores = training_panel
    section, box = widget.slide_model, widget.slide_model.training
    csv = write_cohort(stores, targets=True)
    _train(widget, qtbot, csv, folds=2, epochs=3, targets="share, mutated")
    assert box.trained is not None, notes
    model = box.trained.model
    assert model.names == ["share", "mutated"]
    text = box.results.toPlainText()
    rows = {(r["target"], r["method"]): r for r in model.metrics["rows"]}
    r = rows[("share", "mil")]["pearson_r"]
    assert f"share: r {r:.3f} [CI " in text and "(n=10)" in text, text
    assert "mutated: AUC" in text and "(n=10, 5 positive)" in text, text
    assert "baseline" in text  # the pooled baseline's rows of the table
    assert section.attention_combo.isVisibleTo(section)
    assert [section.attention_combo.itemText(i) for i in range(2)] == ["share", "mutated"]

    section.predict_button.click()
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=60_000)
    result = section.result
    assert result.targets == ["share", "mutated"] and result.attention.shape[0] == 2
    headers = [section.table.horizontalHeaderItem(c).text()
               for c in range(section.table.columnCount())]
    assert headers == ["slide", "share", "mutated"]
    assert section.table.item(0, 2).text().startswith("P(1) ")
    layer = viewer.layers[ATTENTION_NAME]
    np.testing.assert_allclose(layer.data, result.attention_grid(0, fill=0.0))
    section.attention_combo.setCurrentIndex(1)
    np.testing.assert_allclose(viewer.layers[ATTENTION_NAME].data,
                               result.attention_grid(1, fill=0.0))
    assert layer.metadata["target"] == "mutated"
    folder = box.save(tmp_path / "genes.dflslide")  # with train-slides' reports
    assert {"cv_metrics.csv", "cv_metrics.png", "cv_predictions.csv"} <= {
        f.name for f in folder.iterdir()}
    dialog = box.show_plots()  # the per-target figure, in the panel
    assert dialog.isVisible() and not _figure_of(dialog).isNull()
    dialog.close()


def _figure_of(dialog):
    """The pixmap a plots window shows."""
    from qtpy.QtWidgets import QScrollArea

    return dialog.findChild(QScrollArea).widget().pixmap()


def test_cancel_stops_the_training_and_keeps_the_model(training_panel, qtbot):
    _viewer, widget, stores = training_panel
    section, box = widget.slide_model, widget.slide_model.training
    csv = write_cohort(stores)
    _train(widget, qtbot, csv, folds=0, epochs=1)
    before, results = section.model, box.results.toPlainText()
    assert before is not None and "No cross-validation" in results
    box.epochs_spin.setValue(5000)
    box.folds_spin.setValue(5)
    box.train_button.click()
    qtbot.waitUntil(lambda: box.progress.value() >= 2, timeout=30_000)
    assert box.cancel_button.isEnabled() and "fold 1 of 5: epoch" in box.progress.format()
    box.cancel_button.click()
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=20_000)
    assert "cancelled" in box.problem.text() and "\n" not in box.problem.text()
    assert not [t for t in threading.enumerate() if t.name == "napari-dfl-slide-training"]
    assert section.model is before and box.results.toPlainText() == results
    assert box.train_button.isEnabled() and not box.cancel_button.isEnabled()


def test_bad_cohorts_give_one_line_and_lose_nothing(training_panel, qtbot, tmp_path):
    _viewer, widget, stores = training_panel
    section, box = widget.slide_model, widget.slide_model.training
    csv = write_cohort(stores)
    _train(widget, qtbot, csv, folds=0, epochs=1)
    before, results = section.model, box.results.toPlainText()

    def one_line_said(*words: str) -> str:
        text = box.problem.text()
        assert box.problem.isVisibleTo(box) and "\n" not in text and "Traceback" not in text
        assert all(w in text for w in words), text
        assert section.model is before and box.results.toPlainText() == results
        return text

    png = tmp_path / "picture.csv"  # not text at all
    png.write_bytes((ROOT / "docs" / "images").glob("*.png").__next__().read_bytes())
    assert not box.set_cohort(png)
    one_line_said("not a cohort CSV", "slide,label")
    other = tmp_path / "other.csv"
    other.write_text("name,value\na,1\n", encoding="utf-8")
    assert not box.set_cohort(other)
    one_line_said("no slide column", "name, value")
    assert box.cohort_csv == csv  # the cohort chosen before stays chosen

    absent = tmp_path / "absent.csv"
    absent.write_text("slide,label\nnowhere_1.svs,a\nnowhere_2.svs,b\n", encoding="utf-8")
    _train(widget, qtbot, absent, folds=0, epochs=1)
    one_line_said("Train slide model", "none of the slides", "napari-dfl embed")

    one_class = tmp_path / "one_class.csv"
    one_class.write_text("slide,label\n" + "".join(f"synth_{i:03d}.svs,normal\n"
                                                  for i in range(4)), encoding="utf-8")
    _train(widget, qtbot, one_class, folds=0, epochs=1)
    one_line_said("two classes")

    _train(widget, qtbot, csv, folds=9, epochs=1)  # 5 slides per class
    one_line_said("9-fold cross-validation needs", "add slides")

    _train(widget, qtbot, csv, folds=2, epochs=1, targets="nosuch")
    one_line_said("unknown target column", "nosuch")


def test_targets_text_is_split_into_columns_and_one_pattern():
    from napari_dfl.workflows.slide_level import split_targets

    assert split_targets(" A, B ,GENE_* ") == (["A", "B"], "GENE_*")
    assert split_targets("") == ([], None)
    with pytest.raises(Exception, match="one pattern at a time"):
        split_targets("A*,B*")
