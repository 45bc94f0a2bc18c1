"""Metrics: values against scikit-learn and hand counts, JSON safety, and the PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn import metrics as skm

from napari_dfl.core.heads.metrics import classification_report
from napari_dfl.core.heads.plots import save_report_plots

CLASSES = ["tumour", "stroma", "immune"]
Y_TRUE = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 0, 1, 1, 2, 2, 2, 0])
PROBA = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.5, 0.2, 0.3],
                  [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.1, 0.4, 0.5], [0.1, 0.1, 0.8],
                  [0.2, 0.2, 0.6], [0.5, 0.1, 0.4]])


def test_report_matches_sklearn_and_hand_counts():
    report = classification_report(Y_TRUE, Y_PRED, PROBA, CLASSES)
    # recalls 3/4, 2/3, 2/3
    assert report["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 2 / 3) / 3)
    assert report["balanced_accuracy"] == pytest.approx(
        skm.balanced_accuracy_score(Y_TRUE, Y_PRED))
    assert report["cohen_kappa"] == pytest.approx(skm.cohen_kappa_score(Y_TRUE, Y_PRED))
    assert report["weighted_f1"] == pytest.approx(
        skm.f1_score(Y_TRUE, Y_PRED, average="weighted"))
    assert report["accuracy"] == pytest.approx(0.7) and report["n"] == 10
    assert report["confusion_matrix"] == [[3, 1, 0], [0, 2, 1], [1, 0, 2]]
    tumour = report["per_class"]["tumour"]
    assert tumour["precision"] == pytest.approx(3 / 4) and tumour["recall"] == pytest.approx(3 / 4)
    assert tumour["support"] == 4
    for c, name in enumerate(CLASSES):
        assert report["per_class"][name]["pr_auc"] == pytest.approx(
            skm.average_precision_score(np.equal(Y_TRUE, c), PROBA[:, c]))
        assert report["per_class"][name]["f1"] == pytest.approx(
            skm.f1_score(Y_TRUE, Y_PRED, average=None)[c])
    assert report["macro_pr_auc"] == pytest.approx(
        np.mean([report["per_class"][n]["pr_auc"] for n in CLASSES]))
    json.dumps(report, allow_nan=False)


def test_absent_class_and_undefined_values_are_null():
    y_true = np.array([0, 0, 1, 1])
    report = classification_report(y_true, np.array([0, 2, 1, 1]), None, CLASSES)
    immune = report["per_class"]["immune"]
    assert immune["support"] == 0 and immune["pr_auc"] is None and immune["recall"] is None
    assert immune["precision"] == 0.0  # predicted once, never right
    assert report["macro_pr_auc"] is None
    one = classification_report(np.zeros(3, int), np.zeros(3, int), None, CLASSES)
    assert one["cohen_kappa"] is None and one["balanced_accuracy"] == 1.0
    empty = classification_report(np.zeros(0, int), np.zeros(0, int), None, CLASSES)
    assert empty["n"] == 0 and empty["balanced_accuracy"] is None
    for value in (report, one, empty):
        json.dumps(value, allow_nan=False)


def test_report_refuses_bad_shapes():
    with pytest.raises(ValueError, match="differ in length"):
        classification_report(Y_TRUE, Y_PRED[:-1], None, CLASSES)
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        classification_report(Y_TRUE, Y_PRED + 1, None, CLASSES)
    with pytest.raises(ValueError, match="proba must be"):
        classification_report(Y_TRUE, Y_PRED, PROBA[:, :2], CLASSES)


@pytest.mark.parametrize("with_proba", [True, False])
def test_plots_written_atomically(tmp_path, with_proba):
    report = classification_report(Y_TRUE, Y_PRED, PROBA, CLASSES)
    out = save_report_plots(report, PROBA if with_proba else None, Y_TRUE, CLASSES,
                            tmp_path / "sub" / "report.png")
    assert out == tmp_path / "sub" / "report.png" and out.stat().st_size > 10_000
    with Image.open(out) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert width > 1.5 * height > 600  # two panels side by side
    assert [p.name for p in out.parent.iterdir()] == ["report.png"]  # no temp file left
