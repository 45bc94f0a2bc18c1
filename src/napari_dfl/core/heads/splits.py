"""Grouped, stratified splits: no slide, region or image on both sides of a split.

Neighbouring tiles of one annotated region look alike; a split that put some in training
and others in validation would measure memory, not generalisation. Every split here keeps
each group on one side.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["grouped_split", "kfold"]


def kfold(n_splits: int, seed: int, groups: np.ndarray):
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
                folds = list(kfold(n_splits, seed, group_ids[free_idx]).split(
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
