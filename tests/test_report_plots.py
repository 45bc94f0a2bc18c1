"""The validation figure of a trained head: confusion matrix, PR curves, learning curve."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import shared_file
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.plots import save_report_plots
from napari_dfl.core.heads.training import fit


@pytest.fixture(scope="module")
def kather_head(backbone):
    """A head trained on real Kather tiles' embeddings (8 classes, each tile its own group)."""
    from napari_dfl.core.finetune.patches import embed_patches, load_patches
    from napari_dfl.core.slides.sampling import Composition

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = load_patches([shared_file("kather_tiles/crc_val_he_7k")],
                            Composition(224, (0.5,), ("rgb",)), mpp=0.5)
    x = embed_patches(backbone, data["patches"])
    groups = np.array([f"tile{i}" for i in range(len(x))])
    return fit(x, data["labels"], groups, TrainConfig(head="linear", max_epochs=15, seed=0))


def test_a_trained_head_keeps_its_validation_probabilities(kather_head):
    head = kather_head
    validation = head.validation
    n_val = head.data_summary["n_val"]
    assert validation["y_true"].shape == (n_val,) and validation["proba"].shape == (n_val, 8)
    np.testing.assert_allclose(validation["proba"].sum(1), 1.0, atol=1e-5)
    # the probabilities are the report's: the same predictions, the same confusion matrix
    predicted = validation["proba"].argmax(1)
    matrix = np.zeros((8, 8), int)
    np.add.at(matrix, (validation["y_true"], predicted), 1)
    assert matrix.tolist() == head.metrics["confusion_matrix"]


def test_the_figure_draws_pr_curves_and_the_learning_curve(kather_head, tmp_path):
    head = kather_head
    v = head.validation
    full = save_report_plots(head.metrics, v["proba"], v["y_true"], head.classes,
                             tmp_path / "full.png", history=head.history)
    bare = save_report_plots(head.metrics, None, np.empty(0, np.int64), head.classes,
                             tmp_path / "bare.png")
    full_image = np.asarray(Image.open(full).convert("L"), float)
    bare_image = np.asarray(Image.open(bare).convert("L"), float)
    height, width = full_image.shape
    assert width > 2.5 * height  # three panels: confusion, PR curves, learning curve
    assert bare_image.shape[1] < 2.5 * bare_image.shape[0]  # two without a history
    third = width // 3
    # the learning-curve panel is drawn (lines, not a blank area)
    assert full_image[:, 2 * third:].std() > 20
    # the PR panel differs from the one that says it has no probabilities
    bare_pr = bare_image[:, bare_image.shape[1] // 2:]
    assert np.abs(np.asarray(Image.fromarray(full_image[:, third:2 * third].astype(np.uint8))
                             .resize(bare_pr.shape[::-1]), float) - bare_pr).mean() > 5
