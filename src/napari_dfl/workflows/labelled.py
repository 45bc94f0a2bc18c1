"""End-to-end steps shared by the CLI and the API: labelled data -> embeddings -> head -> slide.

Embeddings always go through the per-slide stores (:mod:`napari_dfl.core.features.store`), so
training, evaluation and prediction on the same slides never compute an embedding twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_dfl.core.annotations.datasets import LabelledSource, load_datasets
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.engine import (
    EmbedProgress,
    embed_coords,
    extractor_description,
    open_store_for,
)
from napari_dfl.workflows.cohort_embedding import EmbedConfig, cached_backbone

#: Environment variable overriding where stores are kept by default.
STORE_ENV = "NAPARI_DFL_STORES"


def default_store_dir() -> Path:
    """Where embedding stores are cached: ``$NAPARI_DFL_STORES`` or the user cache folder."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "napari-dfl" / "stores"


@dataclass
class LabelledEmbeddings:
    """Embeddings of labelled samples, ready for a head.

    Attributes:
        embeddings: ``(N, D)`` float32.
        labels: ``(N,)`` class names.
        groups: ``(N,)`` validation groups (source image or annotation region).
        sources: the labelled sources they came from.
        extractor: backbone and composition that produced them.
    """

    embeddings: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    sources: list[LabelledSource]
    extractor: dict

    def summary(self) -> dict:
        """Counts per class, number of groups and sources (goes into the model card)."""
        names, counts = np.unique(self.labels, return_counts=True)
        return {
            "samples": len(self.labels),
            "per_class": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
            "groups": len(np.unique(self.groups)),
            "sources": [str(s.path) for s in self.sources],
        }


def embed_labelled(
    specs: Sequence[str | os.PathLike],
    config: EmbedConfig,
    store_dir: str | os.PathLike | None = None,
    *,
    classes: Sequence[str] | None = None,
    on_progress: Callable[[EmbedProgress], None] | None = None,
) -> LabelledEmbeddings:
    """Load labelled datasets and embed their samples (computing only what is missing).

    Args:
        specs: dataset specifications (see
            :func:`napari_dfl.core.annotations.datasets.load_dataset`).
        config: backbone, weights, composition and extraction settings.
        store_dir: where per-slide stores live (default :func:`default_store_dir`).
        classes: restrict/validate class names.
        on_progress: called with each slide's extraction progress.
    """
    store_dir = Path(store_dir) if store_dir is not None else default_store_dir()
    sources = load_datasets(list(specs), composition=config.composition, mpp=config.mpp,
                            min_tissue=0.0, classes=list(classes) if classes else None)
    backbone = cached_backbone(config)
    parts, labels, groups = [], [], []
    for source in sources:
        with source.open() as slide:
            store = open_store_for(slide, backbone, config.composition, store_dir)
            for progress in embed_coords(slide, source.samples.coords, backbone,
                                         config.composition, store,
                                         batch_size=config.batch_size, readers=config.readers):
                if on_progress is not None:
                    on_progress(progress)
            parts.append(store.get(source.samples.coords))
        labels.append(source.samples.labels)
        groups.append(np.array([f"{source.path.name}::{g}" for g in source.samples.groups]))
    if not parts:
        raise DFLError("the datasets hold no labelled sample; add annotations or images.")
    return LabelledEmbeddings(
        embeddings=np.concatenate(parts).astype(np.float32),
        labels=np.concatenate(labels).astype(str),
        groups=np.concatenate(groups).astype(str),
        sources=sources,
        extractor=extractor_description(backbone, config.composition),
    )


def out_of_fold(data: LabelledEmbeddings, config, folds: int = 5) -> dict:
    """Grouped k-fold predictions of every sample by a head that never saw its group.

    Returns:
        ``{"proba": (N, C), "y_true": (N,) class index, "classes": [...], "report": ...}``
        where ``report`` is :func:`~napari_dfl.core.heads.metrics.classification_report` of the
        pooled out-of-fold predictions (honest: no group is on both sides of a split).
    """
    import warnings

    from sklearn.model_selection import StratifiedGroupKFold

    from napari_dfl.core.heads.metrics import classification_report
    from napari_dfl.core.heads.training import fit

    classes = sorted(np.unique(data.labels).tolist())
    y = np.searchsorted(classes, data.labels)
    n_groups = len(np.unique(data.groups))
    folds = min(folds, n_groups)
    if folds < 2:
        raise DFLError("out-of-fold evaluation needs samples from at least two groups "
                       "(slides, regions or images).")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=config.seed)
    proba = np.full((len(y), len(classes)), np.nan, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(data.embeddings, y, data.groups))
    for train_idx, test_idx in splits:
        head = fit(data.embeddings[train_idx], data.labels[train_idx], data.groups[train_idx],
                   config, classes=classes)
        proba[test_idx] = head.predict_proba(data.embeddings[test_idx])
    report = classification_report(y, proba.argmax(axis=1), proba, classes)
    return {"proba": proba, "y_true": y, "classes": classes, "report": report, "folds": folds}
