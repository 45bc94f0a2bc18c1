"""One fine-tuning task: its labelled patches, grouped split, linear-probe head and loss.

Fine-tuning trains one backbone for one or several tasks (a multitask encoder: Tellez et
al.), each with its own classes and head. A :class:`ProbedTask` holds what is per task:
the grouped validation split, the linear head fitted on the frozen backbone's embeddings
(step 1 of :mod:`napari_dfl.core.finetune.training`), the standardisation of those
embeddings, the class weights of its cross-entropy, and its validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from napari_dfl.core.errors import DFLError
from napari_dfl.core.finetune.patches import embed_patches
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.splits import grouped_split
from napari_dfl.core.heads.training import fit

__all__ = ["FinetuneError", "LabelledPatches", "ProbedTask", "check_labelled_patches"]


class FinetuneError(DFLError):
    """Fine-tuning cannot run on this data or backbone; the message says what to change."""


@dataclass(frozen=True)
class LabelledPatches:
    """The labelled patches of one task.

    Attributes:
        name: the task's name (empty for a single task).
        patches: ``(N, S, S, 3)`` uint8 RGB; tasks may differ in ``S`` (the backbone
            resizes each batch to its input).
        labels: ``(N,)`` class names.
        groups: ``(N,)`` source of each patch (slide, region or image) for the split.
        weight: the task's share of the loss (relative to the other tasks').

    """

    name: str
    patches: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    weight: float = 1.0


def check_labelled_patches(task: LabelledPatches) -> None:
    """Refuse data fine-tuning cannot use, with what to change.

    Raises:
        FinetuneError: not uint8 RGB patches, lengths that differ, one class, a class of
            one sample, one group, or a weight that is not positive.

    """
    where = f" (task '{task.name}')" if task.name else ""
    patches, labels, groups = task.patches, task.labels, task.groups
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise FinetuneError(f"patches must be (N, S, S, 3) uint8, got {patches.dtype} "
                            f"{patches.shape}{where}.")
    if not len(labels) == len(groups) == len(patches):
        raise FinetuneError(f"patches, labels and groups must have the same length{where}.")
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise FinetuneError(f"fine-tuning needs at least two classes{where}; the data has "
                            f"only {', '.join(map(str, names)) or 'none'}.")
    if counts.min() < 2:
        raise FinetuneError(f"class '{names[counts.argmin()]}' has a single sample{where}: "
                            "annotate more before fine-tuning.")
    if len(np.unique(groups)) < 2:
        raise FinetuneError(f"fine-tuning needs samples from at least two groups (slides, "
                            f"regions or images){where} for an honest validation split.")
    if not (math.isfinite(task.weight) and task.weight > 0):
        raise FinetuneError(f"a task's weight must be a positive number, got {task.weight}"
                            f"{where}.")


class ProbedTask:
    """A task's split, its linear probe on the frozen backbone, and its loss (see module).

    Attributes:
        data: the task's :class:`LabelledPatches`.
        classes: its sorted class names; ``y`` the class index of every patch.
        train_idx, val_idx: the grouped split.
        head: the :class:`~napari_dfl.core.heads.training.TrainedHead` (its model is
            trained further in step 2).

    """

    def __init__(self, data: LabelledPatches, backbone, val_fraction: float, seed: int):
        """Split the task's patches and fit its linear probe on the backbone's embeddings."""
        check_labelled_patches(data)
        self.data = data
        labels, groups = data.labels, data.groups
        self.classes = sorted(np.unique(labels).tolist())
        self.y = np.searchsorted(self.classes, labels)
        self.train_idx, self.val_idx = grouped_split(labels, groups, val_fraction, seed)
        if not len(self.val_idx):
            where = f" of task '{data.name}'" if data.name else ""
            raise FinetuneError(f"no grouped validation split{where} keeps every class in "
                                "training: annotate every class on more slides or images.")
        frozen = embed_patches(backbone, data.patches)
        self.head = fit(frozen[self.train_idx], labels[self.train_idx],
                        groups[self.train_idx],
                        TrainConfig(head="linear", loss="ce", noise=0.0, seed=seed),
                        classes=self.classes)
        device = backbone.device
        counts = np.bincount(self.y[self.train_idx], minlength=len(self.classes))
        self.class_weight = torch.tensor(
            len(self.train_idx) / (len(self.classes) * np.maximum(counts, 1)),
            dtype=torch.float32, device=device)
        self.model = self.head.model.to(device)
        self._mean = torch.from_numpy(self.head.mean).to(device)
        self._std = torch.from_numpy(self.head.std).to(device)

    def logits(self, backbone, x: np.ndarray) -> torch.Tensor:
        """The head's logits for uint8 RGB patches through the (partly trainable) backbone."""
        features = backbone.features(backbone.preprocess(x))
        return self.model((features - self._mean) / self._std)

    def loss(self, backbone, index: np.ndarray, x: np.ndarray) -> torch.Tensor:
        """Class-weighted cross-entropy of the patches ``x`` (rows ``index`` of the task)."""
        target = torch.from_numpy(self.y[index]).to(self.class_weight.device)
        return F.cross_entropy(self.logits(backbone, x), target, weight=self.class_weight)

    def validate(self, backbone, batch: int = 64) -> tuple[float, float]:
        """Validation loss and balanced accuracy (backbone and head in eval mode)."""
        from sklearn.metrics import balanced_accuracy_score

        self.model.eval()
        outs = []
        with torch.inference_mode():
            for i in range(0, len(self.val_idx), batch):
                index = self.val_idx[i:i + batch]
                outs.append(self.logits(backbone, self.data.patches[index]).float().cpu())
        logits = torch.cat(outs)
        target = torch.from_numpy(self.y[self.val_idx])
        loss = float(F.cross_entropy(logits, target, weight=self.class_weight.cpu()))
        return loss, float(balanced_accuracy_score(target.numpy(), logits.argmax(1).numpy()))

    @property
    def chance_loss(self) -> float:
        """The loss of a uniform guess, ``log C``: tasks' losses are compared relative to it."""
        return math.log(len(self.classes))

    def facts(self) -> dict:
        """Classes, counts and split sizes, for the backbone card."""
        names, counts = np.unique(self.data.labels, return_counts=True)
        return {"classes": self.classes,
                "per_class": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
                "samples": len(self.data.labels),
                "groups": len(np.unique(self.data.groups)),
                "train_samples": len(self.train_idx), "validation_samples": len(self.val_idx),
                "weight": self.data.weight}
