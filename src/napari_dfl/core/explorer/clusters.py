"""Clusters in the embedding: seeded k-means on the first principal components, cached.

k-means on 100,000 raw 1,280-D embeddings costs seconds and half a gigabyte of copies. The
tiles are therefore first reduced, as for UMAP: each feature standardised (as the
projections do), then the first :data:`REDUCED_DIMS` principal components, fitted on a
seeded sample of at most :data:`FIT_ROWS` tiles and applied to every tile in chunks (memory
stays bounded). k-means (scikit-learn, seeded) runs on that reduction. Cluster 0 is the
largest, so the numbering is stable and reads in order of size.

:class:`ClusterCache` keeps the reductions of the last few embeddings (by
:func:`fingerprint`) and the labels of each ``k``: changing ``k`` re-runs only k-means, and
reopening the explorer on the same store costs nothing. Nothing here imports Qt or napari.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from napari_dfl.core.errors import DFLError

__all__ = ["DEFAULT_K", "FIT_ROWS", "MAX_K", "REDUCED_DIMS", "ClusterCache", "cluster_names",
           "fingerprint", "kmeans", "reduce_embeddings", "shared_cache"]

#: Number of clusters the explorer starts with.
DEFAULT_K = 8
#: Largest number of clusters offered (and accepted).
MAX_K = 40
#: Principal components kept before clustering.
REDUCED_DIMS = 50
#: The principal components are fitted on at most this many tiles (a seeded sample).
FIT_ROWS = 10_000
_CHUNK = 8192


def fingerprint(embeddings: np.ndarray) -> str:
    """A short digest of ``(N, D)`` embeddings: their shape and up to 1,024 spread rows.

    Cheap at any size (a few milliseconds at 100,000 x 1,280); stores only grow by
    appending rows, so the shape and a spread of rows tell one store's state from another.
    """
    x = np.asarray(embeddings)
    digest = hashlib.sha1(f"{x.shape}|{x.dtype.str}".encode())
    if len(x):
        rows = np.unique(np.linspace(0, len(x) - 1, num=min(len(x), 1024)).astype(np.int64))
        digest.update(np.ascontiguousarray(x[rows]).tobytes())
    return digest.hexdigest()[:16]


def _chunks(n: int, size: int = _CHUNK) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _mean_std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation, accumulated in float64 chunk by chunk."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    for part in _chunks(len(x)):
        block = np.asarray(x[part], dtype=np.float64)
        total += block.sum(axis=0)
        squares += np.square(block).sum(axis=0)
    mean = total / len(x)
    std = np.sqrt(np.maximum(squares / len(x) - mean**2, 0.0))
    return mean, np.maximum(std, 1e-6)


def reduce_embeddings(embeddings: np.ndarray, dims: int = REDUCED_DIMS, seed: int = 0,
                      fit_rows: int = FIT_ROWS) -> np.ndarray:
    """``(N, min(dims, D))`` float32: standardised embeddings' first principal components.

    Args:
        embeddings: ``(N, D)`` tile embeddings.
        dims: components kept (embeddings of at most ``dims`` features are only
            standardised).
        seed: random state of the sample the components are fitted on and of the solver.
        fit_rows: the components are fitted on at most this many tiles.

    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or len(x) < 2:
        raise DFLError(f"clustering needs at least 2 embeddings, got {len(x)}.")
    mean, std = _mean_std(x)
    if x.shape[1] <= dims or len(x) <= dims:
        return ((x - mean) / std).astype(np.float32)
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(len(x), size=min(len(x), fit_rows), replace=False))
    pca = PCA(n_components=dims, svd_solver="randomized", iterated_power=3,
              random_state=seed)
    pca.fit(((np.asarray(x[fit], dtype=np.float32) - mean) / std).astype(np.float32))
    out = np.empty((len(x), dims), dtype=np.float32)
    for part in _chunks(len(x)):
        out[part] = pca.transform(((np.asarray(x[part], dtype=np.float32) - mean) / std)
                                  .astype(np.float32))
    return out


def kmeans(reduced: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """``(N,)`` int cluster of each tile by seeded k-means; 0 is the largest cluster.

    Args:
        reduced: ``(N, d)`` tiles (see :func:`reduce_embeddings`).
        k: number of clusters (at most the number of tiles).
        seed: random state of k-means (same tiles and seed: same clusters).

    """
    x = np.asarray(reduced, dtype=np.float32)
    k = int(k)
    if not 1 <= k <= MAX_K:
        raise DFLError(f"the number of clusters must be between 1 and {MAX_K}, got {k}.")
    if len(x) < k:
        raise DFLError(f"{len(x)} tiles cannot make {k} clusters: choose fewer clusters.")
    from sklearn.cluster import KMeans

    raw = KMeans(n_clusters=k, random_state=seed, n_init=3).fit_predict(x)
    counts = np.bincount(raw, minlength=k)
    order = np.argsort(-counts, kind="stable")  # largest first; ties by k-means' index
    rank = np.empty(k, dtype=np.int64)
    rank[order] = np.arange(k)
    return rank[raw]


def cluster_names(k: int) -> list[str]:
    """``["cluster 1", ..., "cluster k"]``: the names the legend shows (1 is the largest)."""
    return [f"cluster {i + 1}" for i in range(int(k))]


class ClusterCache:
    """Reductions of the last few embeddings and their k-means labels per ``k`` and seed.

    Thread-safe: the explorer computes in a worker thread and looks up on the GUI thread.
    Computing happens outside the lock (two threads asking for the same labels may both
    compute them; the result is the same).
    """

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._reduced: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._labels: dict[tuple[str, int, int], np.ndarray] = {}

    def get(self, key: str, k: int, seed: int = 0) -> np.ndarray | None:
        """The cached labels of embeddings ``key`` (a :func:`fingerprint`) for ``k``, or None."""
        with self._lock:
            return self._labels.get((key, int(k), int(seed)))

    def labels(self, embeddings: np.ndarray, k: int, seed: int = 0,
               key: str | None = None) -> np.ndarray:
        """The k-means labels of ``embeddings`` (see :func:`kmeans`), computed once.

        Args:
            embeddings: ``(N, D)`` tile embeddings.
            k: number of clusters.
            seed: random state of the reduction and of k-means.
            key: the embeddings' :func:`fingerprint` when the caller has it already.

        """
        key = key or fingerprint(embeddings)
        found = self.get(key, k, seed)
        if found is not None:
            return found
        with self._lock:
            reduced = self._reduced.get((key, seed))
        if reduced is None:
            reduced = reduce_embeddings(embeddings, seed=seed)
        labels = kmeans(reduced, k, seed)
        labels.setflags(write=False)
        with self._lock:
            self._reduced[(key, seed)] = reduced
            self._reduced.move_to_end((key, seed))
            self._labels[(key, int(k), int(seed))] = labels
            while len(self._reduced) > self.capacity:
                (old, old_seed), _ = self._reduced.popitem(last=False)
                for entry in [e for e in self._labels if (e[0], e[2]) == (old, old_seed)]:
                    del self._labels[entry]
        return labels

    def __contains__(self, entry: tuple[str, int]) -> bool:
        """Whether ``(key, k)`` labels (seed 0) are cached."""
        return self.get(*entry) is not None


_SHARED = ClusterCache()


def shared_cache() -> ClusterCache:
    """The process's cache (the explorer's: reopening it on the same tiles is instant)."""
    return _SHARED
