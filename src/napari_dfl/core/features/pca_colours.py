"""False colours of embeddings: their first three principal components as RGB.

Shown over a slide (one colour per tile), they make the structure of the embedding space
visible without labels: tiles that look alike to the backbone get alike colours. Used by
the explorer's colour layer and by compressed slides' previews.
"""

from __future__ import annotations

import numpy as np

__all__ = ["pca_colors"]


def pca_colors(embeddings: np.ndarray) -> np.ndarray:
    """``(N, 3)`` uint8: the first three principal components as RGB (the false colours).

    Each component is scaled between its 1st and 99th percentile; the sign of each is fixed
    (largest loading positive) so that the colours are reproducible.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) < 2:
        return np.full((len(x), 3), 128, np.uint8)
    x = x - x.mean(axis=0)
    if len(x) < x.shape[1]:  # few rows: the thin SVD is cheaper than a D x D covariance
        vectors = np.linalg.svd(x, full_matrices=False)[2][:3].T
    else:
        vectors = np.linalg.eigh(x.T @ x)[1][:, ::-1][:, :3]
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    scores = x @ (vectors * signs)
    if scores.shape[1] < 3:
        scores = np.pad(scores, ((0, 0), (0, 3 - scores.shape[1])))
    lo, hi = np.percentile(scores, 1, axis=0), np.percentile(scores, 99, axis=0)
    scaled = np.clip((scores - lo) / np.where(hi > lo, hi - lo, 1.0), 0, 1)
    return np.round(scaled * 255).astype(np.uint8)
