"""Labelled samples, embedded: from datasets (the CLI) or a slide's annotations (the panel).

Both paths make samples the same way
(:func:`napari_dfl.core.annotations.samples.slide_samples`), name their groups the same way
(:func:`group_names`) and embed them through the same stores, so the same annotations and
settings give the same training data, hence the same head, in the CLI and in the panel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.annotations.datasets import load_datasets
from napari_dfl.core.annotations.samples import SamplePreview, SampleSet, slide_samples
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.engine import EmbedProgress
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import store_extractor
from napari_dfl.core.heads.config import MIN_PER_CLASS, MIN_SAMPLES
from napari_dfl.workflows.embedding.local import (
    CancelCheck,
    Embedder,
    LocalEmbedder,
    ensure_embedded,
)
from napari_dfl.workflows.jobs import Event, as_events, run

__all__ = ["LabelledEmbeddings", "annotation_advice", "annotation_samples", "embed_labelled",
           "extract_annotations", "group_names", "labelled_from_store"]


@dataclass
class LabelledEmbeddings:
    """Embeddings of labelled samples, ready for a head.

    Attributes:
        embeddings: ``(N, D)`` float32.
        labels: ``(N,)`` class names.
        groups: ``(N,)`` validation groups (``<source file>::<annotation or image>``).
        sources: the files the samples came from.
        extractor: what produced the embeddings.

    """

    embeddings: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    extractor: Extractor
    sources: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Counts per class, number of groups and sources (goes into the model card)."""
        names, counts = np.unique(self.labels, return_counts=True)
        return {
            "samples": len(self.labels),
            "per_class": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
            "groups": len(np.unique(self.groups)),
            "sources": list(self.sources),
        }


def group_names(source: str | os.PathLike, groups: np.ndarray) -> np.ndarray:
    """Validation groups of one source's samples: ``<file name>::<group>``."""
    name = Path(source).name
    return np.array([f"{name}::{g}" for g in groups], dtype=str)


def labelled_from_store(samples: SampleSet, store: EmbeddingStore) -> LabelledEmbeddings:
    """The embeddings of one source's samples, read from its store."""
    return LabelledEmbeddings(
        embeddings=store.get(samples.coords).astype(np.float32),
        labels=samples.labels.astype(str), groups=group_names(samples.source, samples.groups),
        extractor=store_extractor(store), sources=[samples.source])


def embed_labelled(specs: Sequence[str | os.PathLike], settings: Settings, *,
                   embedder: Embedder | None = None, classes: Sequence[str] | None = None,
                   on_progress: Callable[[EmbedProgress], None] | None = None,
                   ) -> LabelledEmbeddings:
    """Load labelled datasets and embed their samples (computing only what is missing).

    Args:
        specs: dataset specifications (see
            :func:`napari_dfl.core.annotations.datasets.load_dataset`).
        settings: extractor, store folder and extraction settings.
        embedder: where embeddings are computed (default: in this process).
        classes: restrict and validate class names.
        on_progress: called with each source's extraction progress.

    Raises:
        DFLError: unusable datasets, or no sample at all.

    """
    embedder = embedder or LocalEmbedder(settings)
    sources = load_datasets(list(specs), composition=settings.composition, mpp=settings.mpp,
                            min_tissue=0.0, classes=list(classes) if classes else None)
    parts: list[LabelledEmbeddings] = []
    for source in sources:
        with source.open() as slide:
            job = as_events("embedding",
                            ensure_embedded(embedder, slide, source.samples.coords))
            store = run(job, None if on_progress is None else
                        lambda _kind, progress: on_progress(progress))
            parts.append(labelled_from_store(source.samples, store))
    if not parts:
        raise DFLError("the datasets hold no labelled sample; add annotations or images.")
    return LabelledEmbeddings(
        embeddings=np.concatenate([p.embeddings for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        groups=np.concatenate([p.groups for p in parts]),
        extractor=parts[0].extractor,
        sources=[s for p in parts for s in p.sources])


def annotation_samples(slide, annotations: Sequence[Annotation], settings: Settings) -> SampleSet:
    """The samples of the panel's annotations on its slide (glass tiles included)."""
    return slide_samples(slide, list(annotations), settings.composition, min_tissue=0.0)


def extract_annotations(slide, annotations: Sequence[Annotation], settings: Settings,
                        embedder: Embedder, cancel: CancelCheck | None = None,
                        ) -> Generator[Event, None, SampleSet]:
    """Embed the samples of annotations; yields ``("samples", SampleSet)`` first."""
    samples = annotation_samples(slide, annotations, settings)
    yield "samples", samples
    if len(samples):
        yield from as_events("embedding",
                             ensure_embedded(embedder, slide, samples.coords, cancel))
    return samples


def annotation_advice(preview: SamplePreview) -> list[str]:
    """What to fix in the annotations before training, one sentence each (empty: nothing).

    Regions smaller than a tile, tiles lost to overlapping regions, classes with fewer
    samples than a validation figure needs, and too few samples in all.
    """
    advice = []
    empty = preview.regions_without_samples
    if empty:
        names = ", ".join(dict.fromkeys(a.label for a in empty))
        advice.append(
            f"{len(empty)} region{'s are' if len(empty) > 1 else ' is'} smaller than half a "
            f"tile ({preview.tile_um:g} µm a side) and give{'' if len(empty) > 1 else 's'} "
            f"no sample ({names}): draw larger regions or lower the patch size.")
    if preview.ambiguous:
        advice.append(f"{preview.ambiguous} tiles lie in overlapping regions of different "
                      "classes and are left out.")
    few = {c: n for c, n in preview.counts.items() if n < MIN_PER_CLASS}
    if few:
        listed = ", ".join(f"{c} {n}" for c, n in few.items())
        advice.append(f"Too few samples to judge a head ({listed}): each class needs at "
                      f"least {MIN_PER_CLASS}, in two regions or more.")
    total = sum(preview.counts.values())
    if preview.counts and total < MIN_SAMPLES:
        advice.append(f"{total} samples in all: a validation figure needs {MIN_SAMPLES} or "
                      "more.")
    return advice
