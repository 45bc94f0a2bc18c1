"""Classification metrics as JSON, and their picture as a PNG.

Values come from :mod:`sklearn.metrics`: balanced accuracy, Cohen's kappa and weighted F1
(the method's three), accuracy, the confusion matrix (rows are the true classes), and per
class precision, recall, F1, support and PR-AUC (average precision, one class against the
rest). Undefined values (kappa of a single-class set, PR-AUC of an absent class) are None,
so that the report is always valid JSON.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["classification_report", "save_report_plots"]


def _num(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None,
                          classes: list[str]) -> dict:
    """Compute the metrics of a prediction.

    Args:
        y_true: ``(N,)`` true class indices into ``classes``.
        y_pred: ``(N,)`` predicted class indices.
        proba: ``(N, C)`` class probabilities, or None (then PR-AUC is None).
        classes: class names, ``C`` of them.

    Returns:
        A JSON-serialisable dict: ``balanced_accuracy``, ``cohen_kappa``, ``weighted_f1``,
        ``accuracy``, ``macro_pr_auc``, ``n``, ``classes``, ``confusion_matrix`` (list of
        lists, rows = true, columns = predicted) and ``per_class``: ``{name: {precision,
        recall, f1, support, pr_auc}}``.

    Raises:
        ValueError: lengths or shapes do not match, or indices fall outside ``classes``.

    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true, dtype=np.int64).ravel()
    y_pred = np.asarray(y_pred, dtype=np.int64).ravel()
    n_classes = len(classes)
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true ({len(y_true)}) and y_pred ({len(y_pred)}) differ in length.")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if len(arr) and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} holds class indices outside 0..{n_classes - 1}.")
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.shape != (len(y_true), n_classes):
            raise ValueError(f"proba must be ({len(y_true)}, {n_classes}), got {proba.shape}.")
    labels = list(range(n_classes))
    report: dict = {"n": len(y_true), "classes": list(classes)}
    if len(y_true) == 0:
        report.update(balanced_accuracy=None, cohen_kappa=None, weighted_f1=None,
                      accuracy=None, macro_pr_auc=None,
                      confusion_matrix=[[0] * n_classes for _ in labels],
                      per_class={c: {"precision": None, "recall": None, "f1": None,
                                     "support": 0, "pr_auc": None} for c in classes})
        return report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from y_true / y_pred, kappa of one class
        report["balanced_accuracy"] = _num(skm.balanced_accuracy_score(y_true, y_pred))
        report["cohen_kappa"] = _num(skm.cohen_kappa_score(y_true, y_pred, labels=labels))
        report["weighted_f1"] = _num(skm.f1_score(y_true, y_pred, labels=labels,
                                                  average="weighted", zero_division=0))
        report["accuracy"] = _num(skm.accuracy_score(y_true, y_pred))
        precision, recall, f1, support = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0)
        report["confusion_matrix"] = skm.confusion_matrix(
            y_true, y_pred, labels=labels).astype(int).tolist()
        per_class, aucs = {}, []
        for c, name in enumerate(classes):
            positives = y_true == c
            auc = None
            if proba is not None and positives.any():
                auc = _num(skm.average_precision_score(positives, proba[:, c]))
                if auc is not None:
                    aucs.append(auc)
            per_class[name] = {
                "precision": _num(precision[c]) if support[c] or (y_pred == c).any() else None,
                "recall": _num(recall[c]) if support[c] else None,
                "f1": _num(f1[c]) if support[c] or (y_pred == c).any() else None,
                "support": int(support[c]),
                "pr_auc": auc,
            }
    report["per_class"] = per_class
    report["macro_pr_auc"] = float(np.mean(aucs)) if aucs else None
    return report


def save_report_plots(report: dict, proba: np.ndarray | None, y_true: np.ndarray,
                      classes: list[str], path_png: str | os.PathLike) -> Path:
    """Draw the confusion matrix and the PR curves side by side into a PNG (atomic write).

    The confusion matrix is normalised by row (recall on the diagonal) and annotated with
    the counts; the PR curves are one class against the rest, with their average precision.

    Args:
        report: a :func:`classification_report` result (for the matrix and headline values).
        proba: ``(N, C)`` probabilities, or None (the PR panel then says so).
        y_true: ``(N,)`` true class indices.
        classes: class names.
        path_png: where to write the PNG.

    Returns:
        The path written.

    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve

    path = Path(path_png)
    counts = np.asarray(report["confusion_matrix"], dtype=float)
    rows = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    n_classes = len(classes)
    size = max(4.5, 0.6 * n_classes + 3)
    fig = Figure(figsize=(2 * size + 1, size), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax_cm, ax_pr = fig.subplots(1, 2)
    image = ax_cm.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax_cm, fraction=0.046, label="fraction of true class")
    ticks = np.arange(n_classes)
    ax_cm.set_xticks(ticks, classes, rotation=45, ha="right")
    ax_cm.set_yticks(ticks, classes)
    ax_cm.set_xlabel("predicted")
    ax_cm.set_ylabel("true")
    for i in range(n_classes):
        for j in range(n_classes):
            ax_cm.text(j, i, f"{int(counts[i, j])}\n{norm[i, j]:.0%}", ha="center",
                       va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    ax_cm.set_title(f"balanced acc {fmt(report.get('balanced_accuracy'))}, kappa "
                    f"{fmt(report.get('cohen_kappa'))}, weighted F1 "
                    f"{fmt(report.get('weighted_f1'))}", fontsize=9)
    y_true = np.asarray(y_true, dtype=np.int64)
    if proba is None:
        ax_pr.text(0.5, 0.5, "no probabilities given", ha="center", va="center")
    else:
        proba = np.asarray(proba)
        for c, name in enumerate(classes):
            positives = y_true == c
            if not positives.any():
                continue
            precision, recall, _ = precision_recall_curve(positives, proba[:, c])
            auc = report.get("per_class", {}).get(name, {}).get("pr_auc")
            ax_pr.step(recall, precision, where="post", label=f"{name} (AP {fmt(auc)})")
        if ax_pr.lines:
            ax_pr.legend(loc="lower left", fontsize=8)
    ax_pr.set_xlim(0, 1)
    ax_pr.set_ylim(0, 1.02)
    ax_pr.set_xlabel("recall")
    ax_pr.set_ylabel("precision")
    ax_pr.set_title("precision-recall, one class vs rest", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            fig.savefig(out, format="png")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
