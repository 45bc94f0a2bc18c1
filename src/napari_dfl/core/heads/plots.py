"""Figures of a validation: the confusion matrix and precision-recall curves, as a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_dfl.core.util.atomic import atomic_path

__all__ = ["save_report_plots"]


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
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        fig.savefig(out, format="png")
    return path
