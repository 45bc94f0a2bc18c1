"""The labelled patches fine-tuning trains on, and their embeddings by a backbone."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from napari_dfl.core.annotations.datasets import load_datasets
from napari_dfl.core.slides.sampling import Composition, sample_patches

__all__ = ["embed_patches", "load_patches"]


def load_patches(specs: Sequence[str | os.PathLike], composition: Composition, *,
                 mpp: float | None = None, classes: Sequence[str] | None = None) -> dict:
    """Cut the labelled patches of datasets at the composition's first zoom, in RGB.

    Returns:
        ``{"patches": (N, S, S, 3) uint8, "labels", "groups", "sources"}``.

    Raises:
        DFLError: unusable datasets (see
            :func:`napari_dfl.core.annotations.datasets.load_datasets`).

    """
    single = Composition(composition.patch_size, composition.zooms[:1], ("rgb",))
    sources = load_datasets(list(specs), composition=single, mpp=mpp, min_tissue=0.0,
                            classes=list(classes) if classes else None)
    patches, labels, groups = [], [], []
    for source in sources:
        with source.open() as slide:
            patches.append(sample_patches(slide, source.samples.coords, single)[:, 0])
        labels.append(source.samples.labels)
        groups += [f"{source.path.name}::{g}" for g in source.samples.groups]
    return {"patches": np.concatenate(patches), "labels": np.concatenate(labels).astype(str),
            "groups": np.array(groups, dtype=str), "sources": [str(s.path) for s in sources],
            "patch": {"size": single.patch_size, "mpp": single.zooms[0]}}


def embed_patches(backbone, patches: np.ndarray, batch: int = 64) -> np.ndarray:
    """Embeddings ``(N, D)`` float32 of uint8 RGB patches, ``batch`` at a time."""
    return np.concatenate([backbone.embed(patches[i:i + batch])
                           for i in range(0, len(patches), batch)]) if len(patches) else \
        np.zeros((0, backbone.embed_dim), np.float32)
