"""Measuring a head honestly: grouped splits, cross-validation, metrics as JSON and PNG.

Values come from :mod:`sklearn.metrics`: balanced accuracy, Cohen's kappa and weighted F1
(the method's three), accuracy, the confusion matrix (rows are the true classes), and per
class precision, recall, F1, support and PR-AUC (average precision, one class against the
rest). Undefined values (kappa of a single-class set, PR-AUC of an absent class) are None,
so that the report is always valid JSON.

Splits never put one group (slide, annotation region, source image) on both sides:
neighbouring tiles of one region are near-duplicates, and a split that separates them
measures memory, not generalisation. :func:`grouped_split` and :func:`cross_validate` are
also exported by :mod:`napari_dfl.core.heads.training`.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.util.atomic import atomic_path

if TYPE_CHECKING:
    from napari_dfl.core.heads.training import TrainConfig

__all__ = ["classification_report", "cross_validate", "grouped_split", "save_report_plots"]


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
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        fig.savefig(out, format="png")
    return path


# -- grouped splits and cross-validation ------------------------------------------------
def _kfold(n_splits: int, seed: int, groups: np.ndarray):
    """StratifiedGroupKFold, or StratifiedKFold when every sample is its own group.

    Both give the same kind of split then; StratifiedGroupKFold's per-group loop would take
    seconds for tens of thousands of singleton groups.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if len(np.unique(groups)) == len(groups):
        return StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


def grouped_split(labels: np.ndarray, groups: np.ndarray, val_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and validation with no group on both sides.

    ``StratifiedGroupKFold(n_splits=round(1 / val_fraction))`` (fewer splits when there are
    fewer groups); of its folds, the validation fold is the first, in seeded order, that
    leaves every class some training samples and holds as many classes as possible. A class
    whose samples all lie in one group cannot be validated honestly: it stays in training
    only, with a warning. With fewer than two groups, or ``val_fraction == 0``, the
    validation set is empty.

    Args:
        labels: ``(N,)`` class of each sample (any comparable values).
        groups: ``(N,)`` group of each sample (slide, annotation region, source image).
        val_fraction: target share held out, in ``[0, 0.5]``.
        seed: seed of the fold assignment.

    Returns:
        ``(train_idx, val_idx)`` sorted int64 index arrays.

    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    n = len(labels)
    everything, nothing = np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, group_ids = np.unique(groups, return_inverse=True)
    n_groups = int(group_ids.max()) + 1 if n else 0
    if val_fraction <= 0 or n_groups < 2:
        if val_fraction > 0:
            warnings.warn("All samples come from one group (slide, region or image): "
                          "no honest validation is possible, training without one.",
                          stacklevel=2)
        return everything, nothing
    classes, y = np.unique(labels, return_inverse=True)
    groups_per_class = [np.unique(group_ids[y == c]) for c in range(len(classes))]
    single = [c for c, g in enumerate(groups_per_class) if len(g) == 1]
    pinned = np.isin(group_ids, [groups_per_class[c][0] for c in single])
    if single:
        names = ", ".join(repr(str(classes[c])) for c in single)
        warnings.warn(f"class(es) {names} have all their samples in one group: they are "
                      "kept in training only and not validated; annotate them on another "
                      "slide or image for an honest validation.", stacklevel=2)
    free = ~pinned
    free_groups = np.unique(group_ids[free])
    n_splits = min(max(2, round(1.0 / val_fraction)), len(free_groups))
    free_idx = everything[free]
    folds = []
    while n_splits >= 2 and not folds:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "least populated class"
                folds = list(_kfold(n_splits, seed, group_ids[free_idx]).split(
                    free_idx, y[free_idx], group_ids[free_idx]))
        except ValueError:  # too few members per class for this many splits
            n_splits -= 1
    best, best_score = None, -1
    for _, val_part in folds:
        val = free_idx[val_part]
        in_val = np.zeros(n, dtype=bool)
        in_val[val] = True
        train_classes = np.unique(y[~in_val])
        if len(train_classes) < len(classes):
            continue
        score = len(np.unique(y[val]))
        if score > best_score:
            best, best_score = val, score
    if best is None:
        warnings.warn("No grouped validation split keeps every class in training: "
                      "training without validation. Annotate every class on more slides "
                      "or images.", stacklevel=2)
        return everything, nothing
    mask = np.zeros(n, dtype=bool)
    mask[best] = True
    return np.flatnonzero(~mask).astype(np.int64), np.sort(best).astype(np.int64)


def cross_validate(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    groups: np.ndarray | None,
    config: TrainConfig | None = None,
    folds: int = 5,
    classes: list[str] | None = None,
    *,
    cancel: Callable[[], bool] | None = None,
) -> dict:
    """Grouped, stratified k-fold cross-validation of a head.

    Each fold trains with ``config`` (its own inner grouped validation split for early
    stopping) on the other folds and is scored on its held-out groups.

    Returns:
        ``{"folds": [report per fold], "balanced_accuracy", "cohen_kappa", "weighted_f1",
        "accuracy"`` (means over folds) ``, "<metric>_sd"`` (sample standard deviations)
        ``, "classes", "n_folds"}``.

    Raises:
        TrainingError: bad data, fewer than 2 folds, more folds than groups, or a fold
            whose training part lacks a class.

    """
    from napari_dfl.core.heads.training import TrainConfig, TrainingError, fit
    from napari_dfl.core.heads.training import _validate as validate

    config = TrainConfig() if config is None else config
    x, y, names, groups = validate(embeddings, labels, groups, classes)
    n_groups = len(np.unique(groups))
    if folds < 2:
        raise TrainingError(f"cross-validation needs at least 2 folds, got {folds}.")
    if folds > n_groups:
        raise TrainingError(f"{folds} folds need at least {folds} groups (slides, regions or "
                            f"images) but the data has {n_groups}: use --folds {n_groups} or "
                            "fewer, or annotate more slides.")
    splitter = _kfold(folds, config.seed, groups)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splitter.split(x, y, groups))
    except ValueError as exc:
        raise TrainingError(f"cannot make {folds} stratified folds: {exc}. Use fewer folds "
                            "or annotate more samples.") from None
    reports = []
    for k, (train_idx, test_idx) in enumerate(splits):
        label_names = np.array(names)[y[train_idx]]
        try:
            head = fit(x[train_idx], label_names, groups[train_idx], config,
                       classes=names, cancel=cancel)
        except TrainingError as exc:
            raise TrainingError(f"fold {k + 1}/{folds}: {exc} (cross-validation needs every "
                                "class in several groups)") from None
        proba = head.predict_proba(x[test_idx])
        report = classification_report(y[test_idx], proba.argmax(1), proba, names)
        report.update(fold=k + 1, n_train=len(train_idx), n_test=len(test_idx),
                      best_epoch=head.history[-1].best_epoch if head.history else 0)
        reports.append(report)
    result: dict = {"folds": reports, "classes": names, "n_folds": folds}
    for key in ("balanced_accuracy", "cohen_kappa", "weighted_f1", "accuracy"):
        values = np.array([r[key] for r in reports if r[key] is not None], dtype=float)
        result[key] = float(values.mean()) if len(values) else None
        result[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return result
