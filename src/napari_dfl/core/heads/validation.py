"""Cross-validation of a head on grouped folds (no group on both sides of a fold).

Each fold trains a head with the given configuration (its own inner validation split for
early stopping) on the other folds and is scored on its held-out groups.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from napari_dfl.core.heads.config import TrainConfig, TrainingError
from napari_dfl.core.heads.metrics import classification_report
from napari_dfl.core.heads.splits import kfold
from napari_dfl.core.heads.training import fit, validate_training_data

__all__ = ["cross_validate", "json_ready"]


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
        ``, "classes", "n_folds", "pooled"`` (the report of every sample's out-of-fold
        prediction together) ``, "out_of_fold"}``: ``{"proba": (N, C), "y_true": (N,)}``
        arrays for plots (not JSON; :func:`json_ready` drops them).

    Raises:
        TrainingError: bad data, fewer than 2 folds, more folds than groups, or a fold
            whose training part lacks a class.

    """
    config = TrainConfig() if config is None else config
    x, y, names, groups = validate_training_data(embeddings, labels, groups, classes)
    n_groups = len(np.unique(groups))
    if folds < 2:
        raise TrainingError(f"cross-validation needs at least 2 folds, got {folds}.")
    if folds > n_groups:
        raise TrainingError(f"{folds} folds need at least {folds} groups (slides, regions or "
                            f"images) but the data has {n_groups}: use --folds {n_groups} or "
                            "fewer, or annotate more slides.")
    splitter = kfold(folds, config.seed, groups)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            splits = list(splitter.split(x, y, groups))
    except ValueError as exc:
        raise TrainingError(f"cannot make {folds} stratified folds: {exc}. Use fewer folds "
                            "or annotate more samples.") from None
    reports = []
    pooled = np.full((len(y), len(names)), np.nan, dtype=np.float32)
    for k, (train_idx, test_idx) in enumerate(splits):
        label_names = np.array(names)[y[train_idx]]
        try:
            head = fit(x[train_idx], label_names, groups[train_idx], config,
                       classes=names, cancel=cancel)
        except TrainingError as exc:
            raise TrainingError(f"fold {k + 1}/{folds}: {exc} (cross-validation needs every "
                                "class in several groups)") from None
        proba = head.predict_proba(x[test_idx])
        pooled[test_idx] = proba
        report = classification_report(y[test_idx], proba.argmax(1), proba, names)
        report.update(fold=k + 1, n_train=len(train_idx), n_test=len(test_idx),
                      best_epoch=head.history[-1].best_epoch if head.history else 0)
        reports.append(report)
    result: dict = {"folds": reports, "classes": names, "n_folds": folds,
                    "pooled": classification_report(y, pooled.argmax(1), pooled, names),
                    "out_of_fold": {"proba": pooled, "y_true": y}}
    for key in ("balanced_accuracy", "cohen_kappa", "weighted_f1", "accuracy"):
        values = np.array([r[key] for r in reports if r[key] is not None], dtype=float)
        result[key] = float(values.mean()) if len(values) else None
        result[f"{key}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else None
    return result


def json_ready(result: dict) -> dict:
    """A :func:`cross_validate` result without its arrays (for JSON files and printing)."""
    return {k: v for k, v in result.items() if k != "out_of_fold"}
