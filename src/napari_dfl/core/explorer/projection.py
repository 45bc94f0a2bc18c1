"""2-D projections of tile embeddings (PCA at once, UMAP on request), cached with the store.

A projection is computed on the embeddings of one or more stores, standardised together,
and saved beside each store as ``projection_<method>.npz`` keyed by the store's row count,
so reopening is instant and a store that grew is projected again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.util.atomic import atomic_path

METHODS = ("pca", "umap")
#: UMAP runs on this many principal components of wider embeddings.
UMAP_PCA_DIMS = 50


def project(embeddings: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project ``(N, D)`` embeddings to ``(N, 2)`` float32 coordinates.

    Args:
        embeddings: the embeddings (standardised here, per feature).
        method: ``"pca"`` (instant) or ``"umap"`` (umap-learn; its first call in a process
            spends ~30 s compiling).
        seed: random state of the projection.
    """
    if method not in METHODS:
        raise DFLError(f"projection method must be one of {', '.join(METHODS)}, got {method!r}.")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 3:
        raise DFLError(f"a projection needs at least 3 embeddings, got {len(x)}.")
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    import umap

    if x.shape[1] > UMAP_PCA_DIMS and len(x) > UMAP_PCA_DIMS:
        from sklearn.decomposition import PCA  # neighbours in 50 PCs: same map, much faster

        x = PCA(n_components=UMAP_PCA_DIMS, random_state=seed).fit_transform(x)
    reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, len(x) - 1))
    return reducer.fit_transform(x).astype(np.float32)


def cached_projection(stores: Sequence[EmbeddingStore], method: str,
                      seed: int = 0) -> list[np.ndarray] | None:
    """The stores' cached joint projection when it is up to date, else None (never computes)."""
    group = _group(stores)
    cached = [_load_cache(store, method, seed, group) for store in stores]
    return cached if all(c is not None for c in cached) else None  # type: ignore[return-value]


def project_store_paths(paths: Sequence[str], method: str, seed: int = 0) -> list[np.ndarray]:
    """Project stores given by their paths, caching the result (entry of a child process)."""
    return project_stores([EmbeddingStore.open(path) for path in paths], method, seed)


def project_stores(stores: Sequence[EmbeddingStore], method: str = "pca",
                   seed: int = 0) -> list[np.ndarray]:
    """Project several stores together (one shared embedding space); cached per store.

    The cache of a store projected alone and that of the same store projected with others
    are different files (the group of stores is part of the name), so a cohort projection
    never replaces a slide's own.
    """
    stores = list(stores)
    cached = cached_projection(stores, method, seed)
    if cached is not None:
        return cached
    dims = {store.dim for store in stores}
    if len(dims) != 1:
        raise DFLError(f"stores of different embedding dimensions {sorted(dims)} cannot share "
                       "a projection; project stores of one backbone and composition.")
    coords = project(np.concatenate([store.embeddings() for store in stores]), method, seed)
    parts, start, group = [], 0, _group(stores)
    for store in stores:
        part = coords[start : start + len(store)]
        start += len(store)
        _save_cache(store, method, seed, part, group)
        parts.append(part)
    return parts


def _group(stores: Sequence[EmbeddingStore]) -> str:
    """'' for one store; else a digest of the stores' folder names (order-independent)."""
    if len(stores) <= 1:
        return ""
    names = sorted(Path(store.path).name for store in stores)
    return hashlib.sha1("\n".join(names).encode()).hexdigest()[:10]


def _cache_path(store: EmbeddingStore, method: str, group: str = "") -> Path:
    suffix = f"_{group}" if group else ""
    return Path(store.path) / f"projection_{method}{suffix}.npz"


def _load_cache(store: EmbeddingStore, method: str, seed: int,
                group: str = "") -> np.ndarray | None:
    path = _cache_path(store, method, group)
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        if int(data["rows"]) != len(store) or int(data["seed"]) != seed:
            return None
        return data["xy"]


def _save_cache(store: EmbeddingStore, method: str, seed: int, xy: np.ndarray,
                group: str = "") -> None:
    try:
        with atomic_path(_cache_path(store, method, group)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, xy=xy, rows=np.int64(len(store)), seed=np.int64(seed))
    except OSError:  # a read-only store folder: the projection is simply not cached
        pass


def save_scatter(xy: np.ndarray, labels: Sequence[str], path: str | os.PathLike,
                 title: str = "") -> Path:
    """A PNG scatter of projected points coloured by label (slide, class or prediction)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = np.asarray(labels)
    for name in sorted(set(labels.tolist())):
        chosen = labels == name
        ax.scatter(xy[chosen, 0], xy[chosen, 1], s=4, alpha=0.7, label=f"{name} ({chosen.sum()})")
    ax.legend(loc="best", fontsize=8, markerscale=3)
    ax.set_title(title, fontsize=9)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        fig.savefig(handle, format="png")
    return Path(path)
