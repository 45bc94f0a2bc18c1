"""The panel's "Suggest settings…": napari-dfl select on the open slide's annotations.

A real viewer, the sample slide and its demo annotations, the real backbone in the panel's
extraction child. Two fields (192 and 224 px: 32 and 23 samples) keep the embedding short;
the CLI's defaults are checked against the CLI itself.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from napari_dfl.core.annotations.annotation import Annotation, read_geojson
from napari_dfl.core.features.preferred import load_preferred, preferred_path
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slides.sample_slide import SAMPLE_COMPOSITION, SAMPLE_SLIDE
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.workflows.embedding.child import ChildEmbedder
from napari_dfl.workflows.select import (
    DEFAULT_FIELDS,
    DEFAULT_FOLDS,
    SELECT_COMPOSITION,
    compare_settings,
    plan_suggestion,
)

pytestmark = [pytest.mark.gui, pytest.mark.slow]

FIELDS = (192, 224)


@pytest.fixture
def panel(make_napari_viewer, sample_slide_path, tmp_path):
    """The panel on the sample slide, its store folder in tmp_path, the test's fields."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    widget.form.store_edit.setText(str(tmp_path / "stores"))
    widget.form.store_edit.editingFinished.emit()
    widget.suggest.fields = FIELDS
    return viewer, widget


def demo_annotations(sample_slide_path) -> list[Annotation]:
    return read_geojson(sample_slide_path.with_suffix(".geojson"))


def wait_idle(widget, qtbot, timeout_s: float = 240) -> None:
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=int(timeout_s * 1000))


def test_the_panels_defaults_are_the_clis():
    from napari_dfl.cli import build_parser, select_settings

    args = build_parser().parse_args(["select", "x.svs"])
    assert DEFAULT_FIELDS == select_settings.DEFAULT_FIELDS == args.fields
    assert args.folds == DEFAULT_FOLDS
    assert (SELECT_COMPOSITION.zooms, SELECT_COMPOSITION.variants,
            SELECT_COMPOSITION.input_size) == (args.zooms, args.variants, args.input_size)


def test_suggest_ranks_like_the_cli_and_applies_only_on_click(panel, qtbot, tmp_path,
                                                             sample_slide_path):
    _viewer, widget = panel
    session, section = widget.session, widget.suggest
    assert not section.button.isEnabled()  # no annotations yet
    session.add_annotations(demo_annotations(sample_slide_path))
    assert section.button.isEnabled()
    section.button.click()
    assert session.busy and not section.button.isEnabled()
    assert "3 folds, not 5: a class has samples in only 3 regions" in section.summary.text()
    stages = []
    session.job_changed.connect(lambda job: stages.append(job and job.stage))
    wait_idle(widget, qtbot)
    assert "embedding" in stages, "the progress bar followed the embedding"

    suggestion = section.suggestion
    assert suggestion is not None, session.status
    assert (suggestion.plan.fields, suggestion.plan.folds) == (FIELDS, 3)
    shown = section.rows_shown()
    # 2 fields x {x20, x20 + x5} x {rgb, rgb + gray}, ranked, the suggestion marked, n and
    # folds; the settings in use (112 px) were not compared, so the suggestion is the best
    assert len(shown) == 8 and section.table.isVisible()
    assert shown[0][0].startswith("★ ") and not any(r[0].startswith("★") for r in shown[1:])
    assert sorted({r[2] for r in shown}) == ["23", "32"] and {r[3] for r in shown} == {"3"}
    for cells, row in zip(shown, suggestion.rows, strict=True):
        assert cells[1] == f"{row['balanced_accuracy']:.3f} ± {row['balanced_accuracy_sd']:.3f}"
    pick = suggestion.pick
    best = pick.row
    assert best is suggestion.rows[0] and pick.current is None
    assert f"suggested {shown[0][0][2:]} (balanced accuracy {best['balanced_accuracy']:.3f}" \
        in widget.status.text()
    assert "not among the candidates" in section.summary.text()
    # nothing is applied without the click
    assert session.settings.composition == SAMPLE_COMPOSITION
    assert not preferred_path().exists()

    # Same inputs, same numbers: the CLI's comparison on the same annotations exported as a
    # dataset, in the same store folder: nothing is embedded again, every row is the same.
    # (Its embedder is the panel's warm child: a store it finds is a store the CLI finds,
    # test_gui_store_reuse; loading the backbone here would only cost time.)
    exported = tmp_path / "drawn.geojson"
    assert widget.project.export_geojson(exported)
    progress = []
    cli_rows = compare_settings([f"{SAMPLE_SLIDE}:{exported}"], [session.settings.backbone],
                                FIELDS, Settings(composition=SELECT_COMPOSITION,
                                                 store_dir=session.settings.store_dir),
                                folds=suggestion.plan.folds, on_progress=progress.append,
                                make_embedder=ChildEmbedder)
    assert not progress, "the CLI found every embedding the panel's job stored"
    assert [r["candidate"] for r in cli_rows] == [r["candidate"] for r in suggestion.rows]
    for key in ("balanced_accuracy", "balanced_accuracy_sd", "samples", "folds"):
        np.testing.assert_allclose([r[key] for r in cli_rows],
                                   [r[key] for r in suggestion.rows], rtol=1e-6, err_msg=key)

    # Apply suggestion: the form shows the winner, and it is kept as select --apply does
    assert section.apply_button.isVisibleTo(widget) and section.apply_button.isEnabled()
    section.apply_button.click()
    measured = Composition.from_dict(best["composition"])
    assert measured.input_size == 224  # resolved: the backbone's own size ...
    expected = replace(measured, input_size=None)  # ... which is what is kept, as the CLI
    assert session.settings.composition == expected
    form = widget.form
    assert form.patch_spin.value() == expected.patch_size
    assert form.zooms_edit.text() == ", ".join(f"{z:g}" for z in expected.zooms)
    assert form.gray_check.isChecked() == ("gray" in expected.variants)
    assert form.backbone_combo.currentText() == best["backbone"]
    kept = load_preferred()
    assert (kept.backbone, kept.composition) == (best["backbone"], expected)
    record = json.loads(preferred_path().read_text())
    assert record["chosen"]["samples"] == best["samples"] and record["chosen"]["folds"] == 3
    assert record["chosen"]["datasets"] == [f"{SAMPLE_SLIDE} (the panel's annotations)"]
    assert "kept as the default of train, evaluate, embed and the panel" in widget.status.text()
    assert str(preferred_path()) in widget.status.text()

    # Suggest again with the winner in use (everything stored): it is marked in use, it is
    # the suggestion, and there is nothing to apply.
    section.button.click()
    wait_idle(widget, qtbot)
    again = section.rows_shown()
    assert again[0][0] == f"★ {shown[0][0][2:]} (in use)"
    assert not any("(in use)" in r[0] for r in again[1:])
    assert section.suggestion.pick.keeps_current
    assert "Your settings stay: nothing to apply." in section.summary.text()
    assert not section.apply_button.isVisibleTo(widget)
    assert "keep your settings" in widget.status.text()
    assert load_preferred().composition == expected  # unchanged

    # A ranking made on other annotations says so (it stays shown).
    assert "annotations changed" not in section.summary.text()
    session.add_annotations(demo_annotations(sample_slide_path)[:1])
    assert section.summary.text().startswith(
        "The annotations changed after this ranking (10 annotations then)")
    assert section.suggestion is not None and len(section.rows_shown()) == 8


def test_cancel_keeps_the_panel_usable_and_the_store_intact(panel, qtbot, sample_slide_path):
    _viewer, widget = panel
    session, section = widget.session, widget.suggest
    section.fields = (64,)  # 347 samples: long enough to be cancelled while embedding
    session.add_annotations(demo_annotations(sample_slide_path))
    assert section.start()
    qtbot.waitUntil(lambda: session.job is not None and session.job.stage == "embedding"
                    and session.job.done > 0, timeout=180_000)
    widget.cancel_button.click()
    wait_idle(widget, qtbot, 60)
    # the section shows the job's end on the next turn of the event loop
    qtbot.waitUntil(lambda: "nothing was applied" in section.summary.text(), timeout=5000)

    assert "Suggest settings cancelled" in widget.status.text()
    assert section.suggestion is None and not section.table.isVisible()
    assert "nothing was applied" in section.summary.text()
    assert not section.apply_button.isVisibleTo(widget)
    assert section.button.isEnabled() and widget.train_button.isEnabled()
    assert session.settings.composition == SAMPLE_COMPOSITION and not preferred_path().exists()
    [store_path] = list(session.settings.stores.glob("*.dfl.zarr"))
    store = EmbeddingStore.open(store_path)  # what was committed is whole and readable
    store.verify()
    assert 0 < len(store) < 347
    assert np.isfinite(store.get(store.coords)).all()


def test_bad_input_is_one_line_and_writes_nothing(panel, qtbot):
    _viewer, widget = panel
    session, section = widget.session, widget.suggest
    assert not section.start()
    assert "Suggest settings: no annotations to compare settings on" in widget.status.text()

    session.add_class("only")
    widget.regions.add_rectangles(np.array([[1200, 800], [1600, 1200]]))
    widget.regions.add_rectangles(np.array([[200, 300], [600, 700]]))
    assert len(session.annotations) == 2
    assert not section.button.isEnabled()  # one class: nothing to compare
    assert not section.start()
    assert "only one class is annotated ('only')" in widget.status.text()

    session.add_class("other")  # a second class, in a single region: no grouped folds
    widget.regions.add_rectangles(np.array([[1200, 1800], [1600, 2200]]))
    assert section.button.isEnabled()
    section.button.click()
    assert not session.busy and section.suggestion is None
    status = widget.status.text()
    assert "too few regions or points to compare settings" in status
    assert "'other' 1" in status and "\n" not in status
    assert not session.settings.stores.exists() and not preferred_path().exists()


def test_a_field_where_a_class_has_one_region_is_left_out_and_said(slide, sample_slide_path):
    annotations = demo_annotations(sample_slide_path)
    plan = plan_suggestion(slide, annotations, Settings(), (112, 448))
    assert plan.fields == (112,) and plan.folds == 3 and plan.samples == {112: 105}
    assert list(plan.sample_sets) == [112] and len(plan.sample_sets[112]) == 105  # embedded
    assert plan.notes == ("448 px left out: regions or points with samples there: "
                          "'background' 1, 'dermis' 0, 'epidermis' 0 (each class needs 2).",)
    assert plan_suggestion(slide, annotations, Settings(), (112,), folds=2).folds == 2
