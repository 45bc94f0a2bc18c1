"""One store policy: what the CLI embedded, the panel reuses without computing anything.

The CLI runs as a user runs it (its own process, the default store folder); the panel then
opens the same slide with the same settings, takes the head the CLI trained and predicts
the whole slide: every embedding comes from the CLI's store, none is computed again.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.heads.head_files import load_head
from napari_dfl.core.slides.sample_slide import SAMPLE_ANNOTATIONS, SAMPLE_SLIDE
from napari_dfl.core.util.paths import STORES_ENV
from napari_dfl.workflows.embedding.service import shared_service
from napari_dfl.workflows.train import TrainingResult

pytestmark = [pytest.mark.gui, pytest.mark.slow]

FAST = ["--patch-size", "112", "--zooms", "0.5", "--variants", "rgb"]


def napari_dfl(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "napari_dfl.cli", *args], env=os.environ,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_cli_embed_then_panel_computes_nothing(make_napari_viewer, qtbot, tmp_path):
    stores = os.environ[STORES_ENV]
    embed = napari_dfl("embed", str(SAMPLE_SLIDE), *FAST)
    assert f"stores: {stores}" in embed.stderr, "the CLI says where the stores are"
    head_dir = tmp_path / "skin.dflhead"
    napari_dfl("train", f"{SAMPLE_SLIDE}:{SAMPLE_ANNOTATIONS}", "--out", str(head_dir), *FAST)
    [store_path] = list(__import__("pathlib").Path(stores).glob("*.dfl.zarr"))
    rows_before = len(EmbeddingStore.open(store_path))

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-dfl", "cmu1_small_region")
    _, widget = viewer.window.add_plugin_dock_widget("napari-dfl", "Deep Feature Learning")
    form = widget.form
    form.patch_spin.setValue(112)
    form.zooms_edit.setText("0.5")
    form.zooms_edit.editingFinished.emit()
    form.gray_check.setChecked(False)
    assert widget.session.settings.store_dir is None  # the default, as in the CLI
    # the panel preloaded the backbone in its child when the slide was picked: with its
    # identity, the CLI's store is found before any job runs (the explorer can open it)
    assert shared_service().wait_preloaded("efficientnet-lite0", 120)["ok"]
    slide = widget.session.working_slide()
    assert widget.session.embedder().known_store(slide).path == store_path
    head, card = load_head(head_dir)
    widget.session.set_result(TrainingResult.from_card(head, card))
    stages, messages = [], []
    widget.session.message.connect(lambda level, text: messages.append(text))
    widget.session.job_changed.connect(lambda job: stages.append(job and job.stage))
    widget.predict_button.click()
    qtbot.waitUntil(lambda: not widget.session.busy, timeout=240_000)

    prediction = widget.session.prediction
    assert prediction is not None and prediction.predicted.all(), messages
    assert "embedding" not in stages, "the panel computed embeddings the CLI had made"
    store = EmbeddingStore.open(store_path)
    assert len(store) == rows_before
    np.testing.assert_allclose(prediction.proba, head.predict_proba(store.get(
        prediction.grid.coords)), rtol=1e-5, atol=1e-6)
