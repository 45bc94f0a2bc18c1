"""Fine-tuning a backbone on the user's labelled patches, for when frozen features fall short.

Two steps (linear probing, then fine-tuning: Kumar et al., 2022):

1. a linear head is trained on the frozen backbone's embeddings of the training patches
   (:func:`napari_dfl.core.heads.training.fit`, standardised embeddings, cross-entropy);
2. the last ``blocks`` blocks of the backbone (and the layers after them) are unfrozen and
   trained with the head at a low learning rate, on augmented patches (random flips and
   quarter turns, H&E stain jitter: :mod:`napari_dfl.core.finetune.augment`), with class-weighted
   cross-entropy. Batch-norm statistics stay frozen (small batches would corrupt them).
   Training stops early on the loss of a grouped validation split (no slide, region or
   image on both sides) and keeps the best epoch; epoch 0 is the linear probe alone, so a
   fine-tuning that does not help gives back the base network.

Several tasks at once (a multitask encoder, Tellez et al.): one backbone, one linear probe
and head per task (:mod:`napari_dfl.core.finetune.task_head`), the tasks' batches taking
turns so a large task does not drown a small one, each task's loss scaled by its weight,
and early stopping on the mean of the tasks' validation losses relative to chance
(:func:`finetune_tasks`). One task is the special case :func:`finetune`.

Patches are the first zoom of the composition, in RGB
(:mod:`napari_dfl.core.finetune.patches`). The tuned network is saved as a fine-tuned
backbone folder (:mod:`napari_dfl.core.finetune.folder`) and then used like any other
backbone, for every part of a composition.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from napari_dfl.core.backbones.backbone import load_backbone
from napari_dfl.core.finetune.augment import augment_patches
from napari_dfl.core.finetune.patches import embed_patches
from napari_dfl.core.finetune.task_head import (
    FinetuneError,
    LabelledPatches,
    ProbedTask,
    check_labelled_patches,
)
from napari_dfl.core.util.progress import drive

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneProgress",
    "FinetuneResult",
    "LabelledPatches",
    "alternating_batches",
    "block_groups",
    "finetune",
    "finetune_patches",
    "finetune_tasks",
    "trainable_names",
]


@dataclass(frozen=True)
class FinetuneConfig:
    """How a backbone is fine-tuned.

    Attributes:
        blocks: number of last backbone blocks unfrozen (the layers after them too).
        epochs: upper bound on fine-tuning epochs.
        patience: epochs without a lower validation loss before stopping.
        lr: AdamW learning rate of the backbone's unfrozen layers.
        head_lr: AdamW learning rate of the head during step 2.
        weight_decay: AdamW weight decay.
        batch_size: patches per step.
        stain: H&E stain jitter strength (0 disables it).
        val_fraction: share of the groups held out for early stopping.
        seed: seed of the split, shuffling, augmentation and head.
        restore_best: keep the weights of the epoch with the lowest validation loss (epoch
            0 is the base network with the linear probe); False keeps the last epoch's.
        device: ``"cpu"``, ``"cuda"``, ``"mps"`` or None for the best available.

    """

    blocks: int = 2
    epochs: int = 8
    patience: int = 2
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    stain: float = 0.05
    val_fraction: float = 0.2
    seed: int = 0
    restore_best: bool = True
    device: str | None = None

    def __post_init__(self) -> None:
        checks = [(self.blocks >= 1, f"blocks must be >= 1, got {self.blocks}"),
                  (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
                  (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
                  (self.lr > 0 and self.head_lr > 0, "learning rates must be > 0"),
                  (self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}"),
                  (self.stain >= 0, f"stain must be >= 0, got {self.stain}"),
                  (0.0 < self.val_fraction <= 0.5,
                   f"val_fraction must be in (0, 0.5], got {self.val_fraction}")]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)


@dataclass(frozen=True)
class FinetuneProgress:
    """State after one epoch (epoch 0: the linear probe on the frozen backbone).

    For several tasks, ``val_loss`` is the mean of the tasks' validation losses relative
    to chance (what early stopping watches), ``val_balanced_accuracy`` the tasks' mean, and
    ``tasks`` holds each task's own ``val_loss`` and ``val_balanced_accuracy``.
    """

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_balanced_accuracy: float
    best_epoch: int
    seconds: float
    tasks: dict = field(default_factory=dict)


@dataclass
class FinetuneResult:
    """A fine-tuned backbone with its head, before saving.

    Attributes:
        backbone: the tuned :class:`~napari_dfl.core.backbones.backbone.Backbone` (eval mode).
        head: the tuned head (a :class:`~napari_dfl.core.heads.training.TrainedHead` on its
            embeddings of the first zoom in RGB).
        base: identity of the backbone it started from.
        trainable: names of the parameters that were trained.
        history: one progress per epoch.
        summary: data and run facts for the card.

    """

    backbone: object
    head: object
    base: dict
    trainable: list[str]
    history: list[FinetuneProgress] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def predict_proba(self, patches: np.ndarray, batch: int = 64,
                      task: str | None = None) -> np.ndarray:
        """Class probabilities of uint8 RGB patches by the tuned backbone and a head.

        Args:
            patches: ``(N, S, S, 3)`` uint8 RGB.
            batch: patches per forward pass.
            task: the task whose head to use (required when there are several).

        """
        head = self.head
        if isinstance(head, dict):
            if task not in head:
                raise FinetuneError(f"name the task to predict: one of {sorted(head)}.")
            head = head[task]
        return head.predict_proba(embed_patches(self.backbone, patches, batch))


def block_groups(model: nn.Module) -> list[list[str]]:
    """The model's blocks as groups of parameter names, in forward order, from timm.

    timm's ``group_matcher`` (the one its layer-wise learning-rate decay uses) gives every
    family its own grouping: a stem, then one group per block (EfficientNet and MobileNet
    blocks, ResNet bottlenecks, ViT blocks, ConvNeXt, RegNet, Swin... stages' blocks), then
    what follows (final norms, heads). The stem is not a block; layers that timm puts after
    the last block (unmatched by its block patterns) are kept as trailing groups, so they
    count as "what follows", not as blocks.

    Raises:
        FinetuneError: the model has no ``group_matcher`` (not a timm model).

    """
    import re

    from timm.models import group_parameters

    matcher_of = getattr(model, "group_matcher", None)
    if matcher_of is None:
        raise FinetuneError(f"cannot find the blocks of {type(model).__name__} to unfreeze: "
                            "fine-tuning needs a timm model (one with group_matcher).")
    matcher = matcher_of(coarse=False)
    groups = [list(names) for _, names in sorted(group_parameters(model, matcher).items())]
    if isinstance(matcher, dict):
        specs = matcher.get("blocks") or []
        specs = [specs] if isinstance(specs, str) else list(specs)
        patterns = [re.compile(spec if isinstance(spec, str) else spec[0]) for spec in specs]
        stem = matcher.get("stem")
        stems = [re.compile(stem)] if isinstance(stem, str) else []
        return [names for names in groups
                if any(p.match(n) for p in patterns for n in names)
                and not all(any(p.match(n) for p in stems) for n in names)]
    return groups[1:]  # a callable matcher: everything after the stem


def trainable_names(model: nn.Module, blocks: int) -> list[str]:
    """Names of the parameters step 2 trains: the last ``blocks`` blocks and what follows.

    Blocks are timm's parameter groups (:func:`block_groups`), so any timm family can be
    fine-tuned; what follows the last block (final norm, head) is always trained.

    Raises:
        FinetuneError: the architecture's blocks are unknown, or ``blocks`` exceeds them.

    """
    groups = block_groups(model)
    if not groups:
        raise FinetuneError(f"timm finds no blocks in {type(model).__name__} to unfreeze.")
    if blocks > len(groups):
        raise FinetuneError(f"blocks={blocks} but {type(model).__name__} has "
                            f"{len(groups)} blocks.")
    names = [name for name, _ in model.named_parameters()]
    order = {name: i for i, name in enumerate(names)}
    unfrozen = {n for group in groups[-blocks:] for n in group}
    first = min(order[n] for n in unfrozen)
    in_blocks = {n for group in groups for n in group}
    return [n for i, n in enumerate(names)
            if n in unfrozen or (n not in in_blocks and i > first)]


def alternating_batches(tasks: Sequence, rng: np.random.Generator,
                        batch_size: int) -> list[tuple[int, np.ndarray]]:
    """One epoch's batches as ``(task index, patch rows)``, the tasks taking turns.

    Every task gives as many batches as the largest task needs to go through its training
    patches once (a smaller task goes through its patches again, reshuffled), and the tasks
    alternate batch by batch: a large task cannot drown a small one. With one task this is
    one shuffled pass, as before multitask training existed.

    Args:
        tasks: objects with a ``train_idx`` array (:class:`ProbedTask`).
        rng: the run's generator (the order is reproducible from the seed).
        batch_size: patches per batch.
    """
    steps = max(math.ceil(len(task.train_idx) / batch_size) for task in tasks)
    queues = []
    for task in tasks:
        batches: list[np.ndarray] = []
        while len(batches) < steps:
            order = rng.permutation(task.train_idx)
            batches += [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        queues.append(batches[:steps])
    return [(k, queue[step]) for step in range(steps) for k, queue in enumerate(queues)]


def _criterion(scores: list[tuple[float, float]], tasks: list[ProbedTask]) -> float:
    """Early stopping's validation loss: one task's own loss, or the mean over tasks.

    For several tasks, each task's loss is taken relative to chance (``loss / log C``), so
    tasks of many classes do not weigh more.
    """
    if len(tasks) == 1:
        return scores[0][0]
    return float(np.mean([loss / task.chance_loss
                          for (loss, _), task in zip(scores, tasks, strict=True)]))


def _task_rows(scores: list[tuple[float, float]], tasks: list[ProbedTask]) -> dict:
    if len(tasks) == 1:
        return {}
    return {task.data.name: {"val_loss": loss, "val_balanced_accuracy": bacc}
            for (loss, bacc), task in zip(scores, tasks, strict=True)}


def finetune_tasks(
    tasks: Sequence[LabelledPatches],
    base: str = "efficientnet-lite0",
    weights: str | None = None,
    config: FinetuneConfig | None = None,
    *,
    cancel: Callable[[], bool] | None = None,
) -> Generator[FinetuneProgress, None, FinetuneResult]:
    """Fine-tune ``base`` for one or several tasks, each with its own classes and head.

    The two steps of the module docstring, with one linear probe per task; in step 2 the
    tasks' batches alternate (:func:`alternating_batches`), each batch's class-weighted
    cross-entropy scaled by its task's weight (weights are relative: their mean is 1), and
    early stopping watches the mean of the tasks' validation losses relative to chance.

    Args:
        tasks: the tasks' labelled patches (names must differ when there are several).
        base: backbone name (any that
            :func:`~napari_dfl.core.backbones.backbone.load_backbone` takes).
        weights: its weights (None: its own source).
        config: settings; None takes the defaults.
        cancel: checked between steps; returning True raises :class:`FinetuneError`.

    Yields:
        One :class:`FinetuneProgress` per epoch, epoch 0 being the linear probes.

    Returns:
        The :class:`FinetuneResult` (via ``StopIteration.value``); its ``head`` is the
        task's head for one task, a dict of heads by task name for several.

    Raises:
        FinetuneError: bad data (one class, one group...), no task or repeated task names,
            or an unsupported architecture.

    """
    config = config or FinetuneConfig()
    tasks = list(tasks)
    names = [task.name for task in tasks]
    if not tasks:
        raise FinetuneError("no task to fine-tune on: give at least one labelled dataset.")
    if len(tasks) > 1 and (len(set(names)) < len(names) or not all(names)):
        raise FinetuneError(f"tasks need distinct, non-empty names; got {names}.")
    for task in tasks:
        check_labelled_patches(task)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    backbone = load_backbone(base, weights=weights, device=config.device, precision="fp32",
                             fuse=False)
    base_identity = backbone.identity()
    model = backbone.model
    if getattr(model, "num_classes", 0):
        model.reset_classifier(0)
    trainable = trainable_names(model, config.blocks)
    start = time.perf_counter()

    # step 1: a linear head per task on the frozen embeddings
    probed = [ProbedTask(task, backbone, config.val_fraction, config.seed) for task in tasks]
    share = np.array([task.weight for task in tasks]) / np.mean([t.weight for t in tasks])

    def validate() -> list[tuple[float, float]]:
        model.eval()
        return [task.validate(backbone) for task in probed]

    def snapshot() -> dict:
        params = dict(model.named_parameters())
        state = {n: params[n].detach().clone() for n in trainable}
        for k, task in enumerate(probed):
            state.update({f"head{k}.{key}": v.detach().clone()
                          for key, v in task.model.state_dict().items()})
        return state

    def progress(epoch: int, train_loss: float, scores: list, best_epoch: int):
        return FinetuneProgress(epoch, config.epochs, train_loss, _criterion(scores, probed),
                                float(np.mean([bacc for _, bacc in scores])), best_epoch,
                                time.perf_counter() - start, _task_rows(scores, probed))

    scores = validate()
    best, best_epoch, best_state = _criterion(scores, probed), 0, snapshot()
    history = [progress(0, float("nan"), scores, 0)]
    task_history = [scores]
    yield history[-1]

    # step 2: unfreeze the last blocks, train with the heads on augmented patches
    params = dict(model.named_parameters())
    for name in trainable:
        params[name].requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": [params[n] for n in trainable], "lr": config.lr},
         {"params": [p for task in probed for p in task.model.parameters()],
          "lr": config.head_lr}],
        weight_decay=config.weight_decay)
    for epoch in range(1, config.epochs + 1):
        model.eval()  # batch norms keep their statistics; no dropout
        for task in probed:
            task.model.train()
        losses = []
        for k, batch in alternating_batches(probed, rng, config.batch_size):
            if cancel is not None and cancel():
                raise FinetuneError("fine-tuning was cancelled; nothing was saved.")
            if len(batch) < 2:
                continue
            task = probed[k]
            x = augment_patches(task.data.patches[batch], rng, config.stain)
            loss = task.loss(backbone, batch, x)
            optimizer.zero_grad(set_to_none=True)
            (loss * float(share[k]) if len(probed) > 1 else loss).backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scores = validate()
        if _criterion(scores, probed) < best:
            best, best_epoch, best_state = _criterion(scores, probed), epoch, snapshot()
        history.append(progress(epoch, float(np.mean(losses)), scores, best_epoch))
        task_history.append(scores)
        yield history[-1]
        if epoch - best_epoch >= config.patience:
            break

    kept = best_epoch if config.restore_best else history[-1].epoch
    if config.restore_best:
        with torch.no_grad():
            for name in trainable:
                params[name].copy_(best_state[name])
            for k, task in enumerate(probed):
                prefix = f"head{k}."
                task.model.load_state_dict({key[len(prefix):]: v for key, v
                                            in best_state.items() if key.startswith(prefix)})
    model.requires_grad_(False).eval()
    for task in probed:
        task.model.eval().cpu()
    best_row = history[kept]
    summary = {
        "epochs_run": len(history) - 1, "best_epoch": best_epoch, "kept_epoch": kept,
        "blocks_unfrozen": config.blocks,
        "validation": {"loss": round(best_row.val_loss, 5),
                       "balanced_accuracy": round(best_row.val_balanced_accuracy, 5),
                       "linear_probe_loss": round(history[0].val_loss, 5),
                       "linear_probe_balanced_accuracy":
                           round(history[0].val_balanced_accuracy, 5)},
        "seconds": round(time.perf_counter() - start, 1),
        "device": str(backbone.device),
    }
    if len(probed) == 1:
        summary = {**probed[0].facts(), **summary}
        del summary["weight"]
        head: object = probed[0].head
    else:
        summary = {
            "classes": [f"{task.data.name}:{c}" for task in probed for c in task.classes],
            "samples": sum(len(task.data.labels) for task in probed),
            "groups": sum(len(np.unique(task.data.groups)) for task in probed),
            **summary,
            "tasks": {task.data.name: {
                **task.facts(),
                "validation": {
                    "loss": round(task_history[kept][k][0], 5),
                    "balanced_accuracy": round(task_history[kept][k][1], 5),
                    "linear_probe_loss": round(task_history[0][k][0], 5),
                    "linear_probe_balanced_accuracy": round(task_history[0][k][1], 5)}}
                for k, task in enumerate(probed)},
            "stopping": "mean over tasks of the validation loss relative to chance "
                        "(loss / log of the class count)",
        }
        head = {task.data.name: task.head for task in probed}
    return FinetuneResult(backbone=backbone, head=head, base=base_identity,
                          trainable=trainable, history=history, summary=summary)


def finetune(
    patches: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    groups: Sequence[str] | np.ndarray,
    base: str = "efficientnet-lite0",
    weights: str | None = None,
    config: FinetuneConfig | None = None,
    *,
    cancel: Callable[[], bool] | None = None,
) -> Generator[FinetuneProgress, None, FinetuneResult]:
    """Fine-tune ``base`` on one task's labelled patches (see :func:`finetune_tasks`).

    Args:
        patches: ``(N, S, S, 3)`` uint8 RGB patches.
        labels: ``(N,)`` class names.
        groups: ``(N,)`` source of each patch (slide, region or image) for the split.
        base: backbone name (any that
            :func:`~napari_dfl.core.backbones.backbone.load_backbone` takes).
        weights: its weights (None: its own source).
        config: settings; None takes the defaults.
        cancel: checked between steps; returning True raises :class:`FinetuneError`.

    Yields:
        One :class:`FinetuneProgress` per epoch, epoch 0 being the linear probe.

    Returns:
        The :class:`FinetuneResult` (via ``StopIteration.value``).

    Raises:
        FinetuneError: bad data (one class, one group...) or an unsupported architecture.

    """
    task = LabelledPatches("", np.asarray(patches), np.asarray(labels, dtype=str),
                           np.asarray(groups, dtype=str))
    return (yield from finetune_tasks([task], base, weights, config, cancel=cancel))


def finetune_patches(*args, progress: Callable[[FinetuneProgress], None] | None = None,
                     **kwargs) -> FinetuneResult:
    """Run :func:`finetune` to the end (same arguments), calling ``progress`` every epoch."""
    return drive(finetune(*args, **kwargs), progress)
