"""The simple baseline beside attention MIL: pooled slide embeddings and linear models.

A slide's embedding is the mean of its tile embeddings (optionally with their feature-wise
maximum appended), read one store chunk at a time. Numeric targets are fitted by ridge
regression, binary ones by L2 logistic regression, on standardised slide embeddings. The
penalty is chosen by nested cross-validation: inside each outer training set, a grouped
inner k-fold picks the penalty with the lowest held-out squared error (ridge) or log-loss
(logistic); the outer test slides are never seen. The outer folds are the ones the MIL
model uses, so the two are compared slide for slide.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slide_level.config import TargetSpec

__all__ = [
    "LOGISTIC_CS",
    "RIDGE_ALPHAS",
    "baseline_predictions",
    "grouped_folds",
    "pooled_embeddings",
]

#: Ridge penalties searched (standardised slide embeddings).
RIDGE_ALPHAS = np.logspace(-1, 6, 15)
#: Inverse L2 penalties of the logistic regression searched.
LOGISTIC_CS = np.logspace(-5, 1, 7)
_CHUNK = 8192


def pooled_embeddings(stores: Sequence[str | os.PathLike], with_max: bool = False,
                      chunk: int = _CHUNK) -> np.ndarray:
    """``(n_slides, D)`` mean tile embedding per store (``2 D`` with the max appended).

    Streams each store chunk by chunk: memory holds one chunk, never a slide.
    """
    rows = []
    for path in stores:
        store = EmbeddingStore.open(path)
        total = np.zeros(store.dim)
        top = np.full(store.dim, -np.inf)
        n = 0
        for _, emb in store.iter_chunks(chunk):
            x = emb.astype(np.float64)
            total += x.sum(0)
            top = np.maximum(top, x.max(0))
            n += len(x)
        mean = total / max(n, 1)
        rows.append(np.concatenate([mean, top]) if with_max else mean)
    return np.asarray(rows, np.float32)


def grouped_folds(groups: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray,
                                                                           np.ndarray]]:
    """Grouped k-fold splits: a group never on both sides, folds balanced in slides.

    Groups are shuffled by ``seed``, then the largest first each go to the fold with the
    fewest slides so far.

    Returns:
        ``folds`` pairs ``(train indices, test indices)``.

    """
    names, sizes = np.unique(np.asarray(groups), return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-sizes[order], kind="stable")]
    load = np.zeros(folds)
    fold_of = {}
    for i in order:
        fold = int(np.argmin(load))
        fold_of[names[i]] = fold
        load[fold] += sizes[i]
    fold = np.array([fold_of[g] for g in groups])
    return [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(folds)]


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0)
    std[std < 1e-6] = 1.0
    return [(a - mean) / std for a in (train, *others)]


def _ridge_path(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                alphas: np.ndarray) -> np.ndarray:
    """Ridge predictions ``(len(alphas), n_test, k)`` for every penalty, by one SVD."""
    x_train, x_test = _standardise(x_train, x_test)
    y_mean = y_train.mean(0)
    u, s, vt = np.linalg.svd(x_train, full_matrices=False)
    uty = u.T @ (y_train - y_mean)
    projected = x_test @ vt.T
    out = np.empty((len(alphas), len(x_test), y_train.shape[1]))
    for a, alpha in enumerate(alphas):
        out[a] = projected @ ((s / (s * s + alpha))[:, None] * uty) + y_mean
    return out


def _logistic(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
              c: float) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    x_train, x_test = _standardise(x_train, x_test)
    # An L2-penalised linear model's weights lie in the span of its training rows: fitting
    # on their coordinates in that span (at most n_train of them, not D) is the same model.
    _, _, vt = np.linalg.svd(x_train, full_matrices=False)
    x_train, x_test = x_train @ vt.T, x_test @ vt.T
    model = LogisticRegression(C=float(c), solver="newton-cholesky", max_iter=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence at tiny penalties: still a prediction
        model.fit(x_train, y_train.astype(int))
    return model.predict_proba(x_test)[:, 1]


def _inner_folds(groups: np.ndarray, seed: int, k: int = 4) -> list:
    n_groups = len(np.unique(groups))
    return grouped_folds(groups, min(k, n_groups), seed) if n_groups >= 2 else []


def _fit_predict(x: np.ndarray, values: np.ndarray, groups: np.ndarray, test_x: np.ndarray,
                 spec: TargetSpec, seed: int) -> tuple[np.ndarray, float]:
    """Predict one target for ``test_x`` with the penalty chosen by grouped inner CV."""
    inner = _inner_folds(groups, seed)
    if spec.kind == "numeric":
        error = np.zeros(len(RIDGE_ALPHAS))
        for tr, te in inner:
            path = _ridge_path(x[tr], values[tr, None], x[te], RIDGE_ALPHAS)[..., 0]
            error += ((path - values[te]) ** 2).sum(1)
        alpha = RIDGE_ALPHAS[int(np.argmin(error))] if inner else RIDGE_ALPHAS[len(RIDGE_ALPHAS)
                                                                              // 2]
        return _ridge_path(x, values[:, None], test_x, np.array([alpha]))[0, :, 0], alpha
    loss = np.zeros(len(LOGISTIC_CS))
    for tr, te in inner:
        if len(np.unique(values[tr])) < 2:
            continue
        for c, strength in enumerate(LOGISTIC_CS):
            p = np.clip(_logistic(x[tr], values[tr], x[te], strength), 1e-7, 1 - 1e-7)
            loss[c] -= (values[te] * np.log(p) + (1 - values[te]) * np.log(1 - p)).sum()
    best = LOGISTIC_CS[int(np.argmin(loss))] if loss.any() else 1.0
    if len(np.unique(values)) < 2:  # one class in this training set: its frequency
        return np.full(len(test_x), float(values.mean())), best
    return _logistic(x, values, test_x, best), best


def baseline_predictions(x: np.ndarray, values: np.ndarray, targets: list[TargetSpec],
                         groups: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                         seed: int = 0) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Out-of-fold predictions of the pooled baseline, with nested CV for the penalty.

    Args:
        x: ``(N, F)`` pooled slide embeddings (:func:`pooled_embeddings`).
        values: ``(N, T)`` target values, NaN where missing (binary: 0/1).
        targets: the targets (their kind chooses ridge or logistic regression).
        groups: ``(N,)`` patients (or slides): inner folds never split a group.
        splits: the outer ``(train, test)`` index pairs (those of the MIL model).
        seed: seed of the inner folds.

    Returns:
        ``(predictions (N, T), penalties {target: [chosen penalty per outer fold]})``:
        numeric predictions in the target's units, binary ones as probabilities of 1.

    """
    x = np.asarray(x, np.float64)
    predicted = np.full(values.shape, np.nan)
    penalties: dict[str, list[float]] = {t.name: [] for t in targets}
    for fold, (train, test) in enumerate(splits):
        for t, spec in enumerate(targets):
            rows = train[np.isfinite(values[train, t])]
            if len(rows) < 2:
                continue
            predicted[test, t], penalty = _fit_predict(x[rows], values[rows, t], groups[rows],
                                                       x[test], spec, seed + fold)
            penalties[spec.name].append(float(penalty))
    return predicted, penalties
