"""Fine-tuning a backbone on labelled datasets and saving it as a new backbone folder.

One task, or several at once (a multitask encoder, each task its own datasets and classes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from napari_dfl.core.finetune.folder import save_finetuned
from napari_dfl.core.finetune.patches import load_patches
from napari_dfl.core.finetune.task_specs import TaskSpec
from napari_dfl.core.finetune.training import (
    FinetuneConfig,
    FinetuneProgress,
    FinetuneResult,
    LabelledPatches,
    finetune_patches,
    finetune_tasks,
)
from napari_dfl.core.slides.sampling import Composition
from napari_dfl.core.util.progress import drive

__all__ = ["finetune_datasets", "finetune_task_specs"]


def finetune_datasets(specs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                      backbone: str, weights: str | None = None, patch_size: int = 224,
                      zoom: float = 0.5, mpp: float | None = None,
                      classes: Sequence[str] | None = None, name: str | None = None,
                      config: FinetuneConfig | None = None,
                      on_loaded: Callable[[int, int], None] | None = None,
                      on_epoch: Callable[[FinetuneProgress], None] | None = None,
                      ) -> tuple[FinetuneResult, Path]:
    """Cut the datasets' patches, fine-tune ``backbone`` on them, write the new backbone.

    Args:
        specs: labelled datasets (any form :func:`~napari_dfl.core.annotations.datasets.
            load_dataset` takes).
        out: the folder to write; it is then a backbone (``--backbone OUT``).
        backbone: the backbone to start from.
        weights: its weights file, if it is not a preset's.
        patch_size: patch side in pixels at ``zoom`` µm/px.
        zoom: the patches' µm/px.
        mpp: level-0 µm/px for images that record none.
        classes: accept only these classes.
        name: the name to load it by as ``finetuned:<name>`` (default: the folder's).
        config: fine-tuning settings.
        on_loaded: called with the number of patches and of sources once they are cut.
        on_epoch: called after every epoch (epoch 0: the linear probe).

    Returns:
        The result and the folder written.

    """
    config = config or FinetuneConfig()
    data = load_patches(specs, Composition(patch_size, (zoom,), ("rgb",)), mpp=mpp,
                        classes=classes)
    if on_loaded is not None:
        on_loaded(len(data["labels"]), len(data["sources"]))
    result = finetune_patches(data["patches"], data["labels"], data["groups"], backbone,
                              weights, config, progress=on_epoch)
    dataset = {"sources": data["sources"], "patch": data["patch"]}
    return result, save_finetuned(result, out, name=name, config=config, dataset=dataset)


def finetune_task_specs(tasks: Sequence[TaskSpec], out: str | os.PathLike, *,
                        backbone: str, weights: str | None = None, patch_size: int = 224,
                        zoom: float = 0.5, mpp: float | None = None, name: str | None = None,
                        config: FinetuneConfig | None = None,
                        on_loaded: Callable[[str, int, int], None] | None = None,
                        on_epoch: Callable[[FinetuneProgress], None] | None = None,
                        ) -> tuple[FinetuneResult, Path]:
    """Cut every task's patches, fine-tune one ``backbone`` for all, write the new backbone.

    Args:
        tasks: the tasks (:class:`~napari_dfl.core.finetune.task_specs.TaskSpec`); a task
            without its own ``patch_size`` or ``zoom`` takes the arguments'.
        out: the folder to write; it is then a backbone (``--backbone OUT``).
        backbone: the backbone to start from.
        weights: its weights file, if it is not a preset's.
        patch_size: patch side in pixels for tasks that give none.
        zoom: µm/px for tasks that give none.
        mpp: level-0 µm/px for images that record none.
        name: the name to load it by as ``finetuned:<name>`` (default: the folder's).
        config: fine-tuning settings.
        on_loaded: called with each task's name, number of patches and of sources.
        on_epoch: called after every epoch (epoch 0: the linear probes).

    Returns:
        The result (its card lists every task, its classes, counts and validation) and the
        folder written.

    """
    config = config or FinetuneConfig()
    labelled, dataset = [], {"tasks": {}}
    for spec in tasks:
        composition = Composition(spec.patch_size or patch_size, (spec.zoom or zoom,), ("rgb",))
        data = load_patches(spec.datasets, composition, mpp=mpp, classes=spec.classes)
        if on_loaded is not None:
            on_loaded(spec.name, len(data["labels"]), len(data["sources"]))
        labelled.append(LabelledPatches(spec.name, data["patches"], data["labels"],
                                        data["groups"], spec.weight))
        dataset["tasks"][spec.name] = {"sources": data["sources"], "patch": data["patch"]}
    result = drive(finetune_tasks(labelled, backbone, weights, config), on_epoch)
    return result, save_finetuned(result, out, name=name, config=config, dataset=dataset)
