"""Training and measuring heads: on datasets (the CLI) or on a slide's annotations (the panel)."""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_dfl.core.annotations.annotation import Annotation
from napari_dfl.core.features.engine import EmbedProgress
from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.settings import Settings
from napari_dfl.core.heads.config import TrainConfig, TrainingError
from napari_dfl.core.heads.head_files import head_extractor, save_head
from napari_dfl.workflows.embedding.local import CancelCheck, Embedder, ensure_embedded
from napari_dfl.workflows.jobs import Event, as_events
from napari_dfl.workflows.labelled import (
    LabelledEmbeddings,
    annotation_samples,
    embed_labelled,
    labelled_from_store,
)

if TYPE_CHECKING:  # torch: the panel imports this module when it opens
    from napari_dfl.core.heads.model import TrainedHead

__all__ = ["TrainingResult", "evaluate_datasets", "train_datasets", "train_on_annotations",
           "warm_up_heads",
           "write_head"]


@dataclass
class TrainingResult:
    """A trained head with what it was trained on.

    Attributes:
        head: the head (its ``metrics`` are the validation report, or None).
        extractor: the extractor of its training embeddings (a head only fits those).
        data: the labelled embeddings it was trained on (None for a head read from disk).
        assessment: grouped cross-validation on that data
            (:func:`napari_dfl.core.heads.assessment.assess`), the figure users are shown.

    """

    head: TrainedHead
    extractor: Extractor
    data: LabelledEmbeddings | None = None
    assessment: dict | None = None

    @classmethod
    def from_card(cls, head: TrainedHead, card: dict) -> TrainingResult:
        """A head read from disk (a head folder, a project) with its card's extractor."""
        return cls(head, head_extractor(card), assessment=card.get("assessment"))


def train_datasets(specs: Sequence[str | os.PathLike], settings: Settings,
                   config: TrainConfig, *, embedder: Embedder | None = None,
                   classes: Sequence[str] | None = None,
                   on_progress: Callable[[EmbedProgress], None] | None = None,
                   ) -> TrainingResult:
    """Embed labelled datasets (what the stores lack) and train a head on them."""
    from napari_dfl.core.heads.assessment import assess  # torch: when a head is trained
    from napari_dfl.core.heads.training import fit
    from napari_dfl.core.heads.validation import json_ready

    data = embed_labelled(specs, settings, embedder=embedder, classes=classes,
                          on_progress=on_progress)
    head = fit(data.embeddings, data.labels, data.groups, config)
    assessment = json_ready(assess(data.embeddings, data.labels, data.groups, config))
    return TrainingResult(head, data.extractor, data, assessment)


def evaluate_datasets(specs: Sequence[str | os.PathLike], settings: Settings,
                      config: TrainConfig, folds: int = 5, *,
                      embedder: Embedder | None = None, classes: Sequence[str] | None = None,
                      on_progress: Callable[[EmbedProgress], None] | None = None,
                      ) -> tuple[dict, LabelledEmbeddings]:
    """Grouped k-fold cross-validation of a head on labelled datasets.

    Returns:
        The :func:`~napari_dfl.core.heads.validation.cross_validate` result and the data.

    """
    from napari_dfl.core.heads.validation import cross_validate  # torch, when run

    data = embed_labelled(specs, settings, embedder=embedder, classes=classes,
                          on_progress=on_progress)
    return cross_validate(data.embeddings, data.labels, data.groups, config, folds=folds), data


def write_head(result: TrainingResult, path: str | os.PathLike,
               colors: dict[str, str] | None = None) -> Path:
    """Save a trained head with its model card, and its validation plot when it has one."""
    from napari_dfl.core.heads.plots import save_report_plots  # matplotlib, when run

    summary = None if result.data is None else result.data.summary()
    folder = save_head(result.head, path, extractor=result.extractor, data_summary=summary,
                       colors=colors, assessment=result.assessment)
    head = result.head
    if head.metrics:  # the confusion matrix, PR curves and the learning curve
        validation = head.validation or {}
        save_report_plots(head.metrics, validation.get("proba"),
                          validation.get("y_true", np.empty(0, np.int64)), head.classes,
                          Path(folder) / "validation.png", history=head.history)
    return folder


def train_on_annotations(slide, annotations: Sequence[Annotation], settings: Settings,
                         config: TrainConfig, embedder: Embedder,
                         cancel: CancelCheck | None = None,
                         ) -> Generator[Event, None, TrainingResult]:
    """The panel's Train: the annotations' samples, their missing embeddings, then a head.

    Yields ``("samples", SampleSet)``, ``("embedding", progress)`` and ``("epoch", progress)``.
    The data, its groups and the class order (sorted, as in the CLI) are those
    :func:`train_datasets` gives for the same annotations, so the same seed gives the same
    head.

    Raises:
        TrainingError: fewer than two annotated classes and the like (the core's text).

    """
    # torch: loaded by the first Train, not when the panel opens
    from napari_dfl.core.heads.assessment import assess
    from napari_dfl.core.heads.training import train_head
    from napari_dfl.core.heads.validation import json_ready

    samples = annotation_samples(slide, annotations, settings)
    yield "samples", samples
    present = sorted(set(samples.labels.tolist()))
    if len(present) < 2:
        raise TrainingError(
            f"training needs samples of at least two classes; the annotations give "
            f"{len(present)} ({', '.join(present) or 'none'}). Annotate another class.")
    store = yield from as_events("embedding",
                                 ensure_embedded(embedder, slide, samples.coords, cancel))
    data = labelled_from_store(samples, store)
    head = yield from as_events("epoch", train_head(data.embeddings, data.labels, data.groups,
                                                    config, cancel=cancel))
    yield "assessing", len(data.labels)
    assessment = json_ready(assess(data.embeddings, data.labels, data.groups, config,
                                   cancel=cancel))
    return TrainingResult(head, data.extractor, data, assessment)


def warm_up_heads() -> None:
    """Pay once, before the user's first Train, what the first head of a process costs.

    Imports torch's training path and scikit-learn's splits and metrics, and trains and
    cross-validates a tiny head on random numbers (a fraction of a second): the first autograd
    pass, Adam's fused kernel and the metrics' imports then cost the user's first Train
    nothing (measured by ``benchmarks/interactive_latency.py``: ``first_train_s`` against
    ``train_again_s``). Meant for a background thread while the user annotates.
    """
    from napari_dfl.core.heads.assessment import assess
    from napari_dfl.core.heads.training import fit

    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b"], 12)
    embeddings = rng.normal(size=(24, 16)).astype(np.float32) + (labels == "a")[:, None]
    groups = np.arange(24) % 6
    config = TrainConfig(max_epochs=2, patience=2)
    fit(embeddings, labels, groups.astype(str), config)
    assess(embeddings, labels, groups, config, folds=2)

