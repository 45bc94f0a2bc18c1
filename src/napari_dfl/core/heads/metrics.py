"""The metrics of a prediction against the truth, as a JSON-ready report.

Values come from :mod:`sklearn.metrics`: balanced accuracy, Cohen's kappa and weighted F1
(the method's three), accuracy, the confusion matrix (rows are the true classes), and per
class precision, recall, F1, support and PR-AUC (average precision, one class against the
rest). Undefined values (kappa of a single-class set, PR-AUC of an absent class) are None,
so that the report is always valid JSON.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["NO_KAPPA", "NO_SD", "classification_report", "metric_text"]

#: Why Cohen's kappa can be undefined: agreement by chance is total when the truth and
#: the prediction hold one and the same class.
NO_KAPPA = "one class in the validation data"
#: Why a standard deviation over folds can be undefined.
NO_SD = "fewer than two folds gave a value"


def _num(value: float) -> float | None:
    value = float(value)
    return None if math.isnan(value) or math.isinf(value) else value


def metric_text(value: float | None, why: str = "undefined", digits: int = 3) -> str:
    """A metric for people: ``0.812``, or ``n/a (why)`` when it is undefined (None or NaN).

    Args:
        value: the metric (None where :func:`classification_report` could not define it).
        why: the reason shown in brackets when there is no value, e.g. :data:`NO_KAPPA`.
        digits: decimals shown.

    """
    if value is None or not math.isfinite(float(value)):
        return f"n/a ({why})"
    return f"{float(value):.{digits}f}"


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
