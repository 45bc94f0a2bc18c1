"""Figures of a validation as a PNG.

The confusion matrix, precision-recall curves and, for a trained head, its learning curve.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dfl.core.util.atomic import atomic_path

__all__ = ["save_report_plots"]


def save_report_plots(report: dict, proba: np.ndarray | None, y_true: np.ndarray,
                      classes: list[str], path_png: str | os.PathLike, *,
                      history: Sequence | None = None, curve: str = "pr") -> Path:
    """Draw the confusion matrix, the PR curves and the learning curve into a PNG.

    The confusion matrix is normalised by row (recall on the diagonal) and annotated with
    the counts; the PR curves are one class against the rest, with their average precision
    and the number of samples they rest on; the learning curve (when ``history`` is given)
    shows the training and validation loss per epoch, the validation balanced accuracy and
    the epoch kept. The file is written atomically.

    Args:
        report: a :func:`classification_report` result (for the matrix and headline values).
        proba: ``(N, C)`` probabilities, or None (the PR panel then says so).
        y_true: ``(N,)`` true class indices.
        classes: class names.
        path_png: where to write the PNG.
        history: the epochs of a training (objects with ``epoch``, ``train_loss``,
            ``val_loss``, ``val_balanced_accuracy``, ``best_epoch``), or None.
        curve: ``"pr"`` (precision-recall) or ``"roc"`` (ROC curves with their AUC, as for
            slide models' out-of-fold predictions).

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
    panels = 3 if history else 2
    fig = Figure(figsize=(panels * size + 1, size), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels)
    ax_cm, ax_pr = axes[0], axes[1]
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
    if proba is not None and curve == "roc":
        _roc_curves(ax_pr, np.asarray(proba), y_true, classes)
    elif proba is None:
        ax_pr.text(0.5, 0.5, "no probabilities given", ha="center", va="center")
    else:
        proba = np.asarray(proba)
        for c, name in enumerate(classes):
            positives = y_true == c
            if not positives.any():
                continue
            precision, recall, _ = precision_recall_curve(positives, proba[:, c])
            auc = report.get("per_class", {}).get(name, {}).get("pr_auc")
            ax_pr.step(recall, precision, where="post",
                       label=f"{name} (AP {fmt(auc)}, n={int(positives.sum())})")
        if ax_pr.lines:
            ax_pr.legend(loc="lower left", fontsize=8)
    if curve != "roc" or proba is None:
        ax_pr.set_xlim(0, 1)
        ax_pr.set_ylim(0, 1.02)
        ax_pr.set_xlabel("recall")
        ax_pr.set_ylabel("precision")
        ax_pr.set_title(f"precision-recall, one class vs rest ({len(y_true)} validation "
                        "samples)" if proba is not None else
                        "precision-recall, one class vs rest", fontsize=9)
    if history:
        _learning_curve(axes[2], history)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        fig.savefig(out, format="png")
    return path


def _learning_curve(ax, history: Sequence) -> None:
    """Training and validation loss per epoch, validation balanced accuracy, epoch kept."""
    epochs = [h.epoch for h in history]
    ax.plot(epochs, [h.train_loss for h in history], label="training loss", color="tab:blue")
    val = [np.nan if h.val_loss is None else h.val_loss for h in history]
    if not np.all(np.isnan(val)):
        ax.plot(epochs, val, label="validation loss", color="tab:orange")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    best = history[-1].best_epoch
    ax.axvline(best, color="grey", linestyle="--", linewidth=1, label=f"kept: epoch {best}")
    accuracy = [np.nan if h.val_balanced_accuracy is None else h.val_balanced_accuracy
                for h in history]
    if not np.all(np.isnan(accuracy)):
        twin = ax.twinx()
        twin.plot(epochs, accuracy, color="tab:green", linestyle=":",
                  label="validation balanced accuracy")
        twin.set_ylim(0, 1.02)
        twin.set_ylabel("balanced accuracy")
        twin.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("learning curve", fontsize=9)


def _roc_curves(ax, proba: np.ndarray, y_true: np.ndarray, classes: list[str]) -> None:
    """ROC curves, one class against the rest (one curve for two classes), with AUC and n."""
    from sklearn.metrics import roc_auc_score, roc_curve

    shown = [1] if len(classes) == 2 else range(len(classes))
    for c in shown:
        positives = y_true == c
        if positives.all() or not positives.any():
            continue
        fpr, tpr, _ = roc_curve(positives, proba[:, c])
        auc = roc_auc_score(positives, proba[:, c])
        ax.plot(fpr, tpr, label=f"{classes[c]} (AUC {auc:.3f}, n={int(positives.sum())} "
                                f"of {len(y_true)})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    if ax.lines[:-1]:
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC, out-of-fold ({len(y_true)} slides)", fontsize=9)
