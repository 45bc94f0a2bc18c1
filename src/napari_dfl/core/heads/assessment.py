"""An honest figure for a head: grouped cross-validation, its uncertainty, when to be silent.

A few annotated regions give a few validation samples; a balanced accuracy of 100 % on four
of them says nothing, and showing it in bold misleads. :func:`assess` therefore

* cross-validates on grouped folds (no annotation region, slide or image on both sides), so
  every sample is predicted once by a head that never saw its region, and pools those
  out-of-fold predictions;
* gives a 95 % interval for the balanced accuracy by a bootstrap that resamples whole groups
  (neighbouring tiles of one region are not independent samples);
* names the classes it could not validate (all their samples in one region);
* says "too few to judge" (no figure) below :data:`MIN_SAMPLES` validated samples or
  :data:`MIN_PER_CLASS` per class. With 30 samples, the 95 % interval of an accuracy near
  0.8 is already about +-0.14 (binomial, before the grouping widens it); with 4 samples of a
  class, one sample moves that class's recall by 25 points. Below these counts the interval
  is wider than any difference a user would act on.

The CLI's ``train`` and the panel's Train both call it, so they show the same figure.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from napari_dfl.core.heads.config import (
    MIN_PER_CLASS,
    MIN_SAMPLES,
    TrainConfig,
    TrainingError,
)
from napari_dfl.core.heads.metrics import NO_KAPPA, metric_text
from napari_dfl.core.heads.validation import cross_validate

__all__ = ["MIN_PER_CLASS", "MIN_SAMPLES", "assess", "grouped_bootstrap", "summary_line"]

#: Bootstrap resamples of the groups.
RESAMPLES = 1000


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [np.mean(y_pred[y_true == c] == c) for c in np.unique(y_true)]
    return float(np.mean(recalls))


def grouped_bootstrap(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                      metric: Callable[[np.ndarray, np.ndarray], float] = _balanced_accuracy,
                      resamples: int = RESAMPLES, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``metric`` when whole groups are resampled with replacement.

    Args:
        y_true: ``(N,)`` true class indices.
        y_pred: ``(N,)`` predicted class indices.
        groups: ``(N,)`` group of each sample (region, slide or image).
        metric: ``metric(y_true, y_pred) -> float`` (default: balanced accuracy).
        resamples: bootstrap resamples.
        seed: seed of the resampling (the interval is reproducible).
        level: coverage of the interval.

    Returns:
        ``(low, high)``.

    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    _, group_ids = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(group_ids == g) for g in range(group_ids.max() + 1)]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        picked = rng.integers(0, len(members), len(members))
        rows = np.concatenate([members[g] for g in picked])
        values.append(metric(y_true[rows], y_pred[rows]))
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def _counts(labels: np.ndarray, groups: np.ndarray) -> dict[str, dict[str, int]]:
    out = {}
    for name in sorted(set(labels.tolist())):
        chosen = labels == name
        out[name] = {"samples": int(chosen.sum()), "groups": len(np.unique(groups[chosen]))}
    return out


def assess(embeddings: np.ndarray, labels: Sequence[str] | np.ndarray,
           groups: np.ndarray, config: TrainConfig | None = None, folds: int = 5, *,
           cancel: Callable[[], bool] | None = None) -> dict:
    """Grouped cross-validation of a head on its own data, with what it can and cannot say.

    Returns:
        A JSON-ready dict: ``method``, ``folds``, ``n`` (validated samples), ``n_groups``,
        ``per_class`` (``{class: {"samples", "groups"}}`` of all the data),
        ``not_validated`` (classes with all their samples in one group), ``judgeable``,
        ``reason`` (why not, or None), and when cross-validation ran: ``classes``,
        ``balanced_accuracy``, ``ci`` (``[low, high]``, 95 %, groups resampled),
        ``cohen_kappa``, ``weighted_f1``, ``confusion_matrix``, ``recall`` per class, and
        ``out_of_fold`` (``{"proba", "y_true"}`` arrays for plots; not JSON:
        :func:`napari_dfl.core.heads.validation.json_ready` drops them).

    """
    config = config or TrainConfig()
    labels = np.asarray(labels).astype(str)
    groups = np.asarray(groups).astype(str)
    per_class = _counts(labels, groups)
    not_validated = [c for c, k in per_class.items() if k["groups"] < 2]
    keep = ~np.isin(labels, not_validated)
    result: dict = {"method": "grouped cross-validation", "folds": 0, "n": 0,
                    "n_groups": len(np.unique(groups)), "per_class": per_class,
                    "not_validated": not_validated, "judgeable": False, "reason": None}
    validated = sorted(set(labels[keep].tolist()))
    if len(validated) < 2:
        result["reason"] = ("every class needs annotations in at least two regions (or "
                            "slides) to be validated; "
                            + (f"{', '.join(not_validated)} "
                               f"{'has' if len(not_validated) == 1 else 'have'} one only"
                               if not_validated else "there is one class"))
        return result
    n_validatable = int(keep.sum())
    few = [c for c in validated if per_class[c]["samples"] < MIN_PER_CLASS]
    if n_validatable < MIN_SAMPLES:
        result["reason"] = (f"too few to judge: {n_validatable} samples can be validated "
                            f"(at least {MIN_SAMPLES} are needed for a figure worth reading)")
        return result
    if few:
        result["reason"] = (f"too few to judge: {', '.join(few)} "
                            f"{'has' if len(few) == 1 else 'have'} fewer than "
                            f"{MIN_PER_CLASS} samples")
        return result
    x, y_labels, g = np.asarray(embeddings)[keep], labels[keep], groups[keep]
    k = min(folds, len(np.unique(g)), min(per_class[c]["groups"] for c in validated))
    report = None
    while k >= 2 and report is None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # inner splits of tiny folds
                report = cross_validate(x, y_labels, g, config, folds=k, classes=validated,
                                        cancel=cancel)
        except TrainingError:
            k -= 1
    if report is None:
        result["reason"] = ("the annotations cannot be split into two folds that each hold "
                            "every class: annotate each class in more regions")
        return result
    pooled, oof = report["pooled"], report["out_of_fold"]
    y_true, y_pred = oof["y_true"], oof["proba"].argmax(axis=1)
    low, high = grouped_bootstrap(y_true, y_pred, g, seed=config.seed)
    result.update(folds=k, n=len(y_true), classes=validated,
                  balanced_accuracy=pooled["balanced_accuracy"], ci=[low, high],
                  cohen_kappa=pooled["cohen_kappa"], weighted_f1=pooled["weighted_f1"],
                  confusion_matrix=pooled["confusion_matrix"],
                  recall={c: v["recall"] for c, v in pooled["per_class"].items()},
                  out_of_fold=oof)
    result["judgeable"] = True
    return result


def summary_line(assessment: dict | None) -> str:
    """The assessment in one plain line (the CLI prints it; the panel shows the same facts).

    Args:
        assessment: what :func:`assess` returned (or its JSON form), None for none.

    """
    if not assessment:
        return "no assessment of this head (it was saved without one)"
    counts = f"{assessment['n']} samples in {assessment['n_groups']} regions"
    missing = assessment.get("not_validated") or []
    note = (f"; not validated: {', '.join(missing)} (all samples in one region)"
            if missing else "")
    if not assessment.get("judgeable"):
        return f"no figure: {assessment.get('reason') or 'too few to judge'}{note}"
    low, high = assessment.get("ci") or (None, None)
    interval = ("" if low is None or high is None
                else f" (95% interval {low:.3f}-{high:.3f})")
    return (f"grouped {assessment['folds']}-fold cross-validation, {counts}: balanced "
            f"accuracy {metric_text(assessment.get('balanced_accuracy'))}{interval}, Cohen "
            f"kappa {metric_text(assessment.get('cohen_kappa'), NO_KAPPA)}, weighted F1 "
            f"{metric_text(assessment.get('weighted_f1'))}{note}")
