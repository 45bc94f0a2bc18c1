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

Patches are the first zoom of the composition, in RGB
(:mod:`napari_dfl.core.finetune.patches`). The tuned network is saved as a fine-tuned
backbone folder (:mod:`napari_dfl.core.finetune.folder`) and then used like any other
backbone, for every part of a composition.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dfl.core.backbones.backbone import load_backbone
from napari_dfl.core.errors import DFLError
from napari_dfl.core.finetune.augment import augment_patches
from napari_dfl.core.finetune.patches import embed_patches
from napari_dfl.core.heads.config import TrainConfig
from napari_dfl.core.heads.splits import grouped_split
from napari_dfl.core.heads.training import fit
from napari_dfl.core.util.progress import drive

__all__ = [
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneProgress",
    "FinetuneResult",
    "block_groups",
    "finetune",
    "finetune_patches",
    "trainable_names",
]


class FinetuneError(DFLError):
    """Fine-tuning cannot run on this data or backbone; the message says what to change."""


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
    """State after one epoch (epoch 0: the linear probe on the frozen backbone)."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_balanced_accuracy: float
    best_epoch: int
    seconds: float


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

    def predict_proba(self, patches: np.ndarray, batch: int = 64) -> np.ndarray:
        """Class probabilities of uint8 RGB patches by the tuned backbone and head."""
        return self.head.predict_proba(embed_patches(self.backbone, patches, batch))


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


def _check(labels: np.ndarray, groups: np.ndarray, patches: np.ndarray) -> None:
    if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
        raise FinetuneError(f"patches must be (N, S, S, 3) uint8, got {patches.dtype} "
                            f"{patches.shape}.")
    if not len(labels) == len(groups) == len(patches):
        raise FinetuneError("patches, labels and groups must have the same length.")
    names, counts = np.unique(labels, return_counts=True)
    if len(names) < 2:
        raise FinetuneError(f"fine-tuning needs at least two classes; the data has only "
                            f"{', '.join(map(str, names)) or 'none'}.")
    if counts.min() < 2:
        raise FinetuneError(f"class '{names[counts.argmin()]}' has a single sample: annotate "
                            "more before fine-tuning.")
    if len(np.unique(groups)) < 2:
        raise FinetuneError("fine-tuning needs samples from at least two groups (slides, "
                            "regions or images) for an honest validation split.")


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
    """Fine-tune ``base`` on labelled patches (the two steps of the module docstring).

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
    config = config or FinetuneConfig()
    patches = np.asarray(patches)
    labels, groups = np.asarray(labels, dtype=str), np.asarray(groups, dtype=str)
    _check(labels, groups, patches)
    classes = sorted(np.unique(labels).tolist())
    y = np.searchsorted(classes, labels)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    backbone = load_backbone(base, weights=weights, device=config.device, precision="fp32",
                             fuse=False)
    base_identity = backbone.identity()
    model = backbone.model
    if getattr(model, "num_classes", 0):
        model.reset_classifier(0)
    trainable = trainable_names(model, config.blocks)
    train_idx, val_idx = grouped_split(labels, groups, config.val_fraction, config.seed)
    if not len(val_idx):
        raise FinetuneError("no grouped validation split keeps every class in training: "
                            "annotate every class on more slides or images.")
    start = time.perf_counter()

    # step 1: a linear head on the frozen embeddings
    frozen = embed_patches(backbone, patches)
    head = fit(frozen[train_idx], labels[train_idx], groups[train_idx],
               TrainConfig(head="linear", loss="ce", noise=0.0, seed=config.seed),
               classes=classes)
    weight = torch.tensor(len(train_idx) / (len(classes) * np.maximum(
        np.bincount(y[train_idx], minlength=len(classes)), 1)), dtype=torch.float32)
    device = backbone.device
    head_model = head.model.to(device)
    mean = torch.from_numpy(head.mean).to(device)
    std = torch.from_numpy(head.std).to(device)
    weight = weight.to(device)

    def logits_of(x: np.ndarray) -> torch.Tensor:
        features = backbone.features(backbone.preprocess(x))
        return head_model((features - mean) / std)

    def validate() -> tuple[float, float]:
        from sklearn.metrics import balanced_accuracy_score

        model.eval()
        head_model.eval()
        outs = []
        with torch.inference_mode():
            for i in range(0, len(val_idx), 64):
                outs.append(logits_of(patches[val_idx[i:i + 64]]).float().cpu())
        logits = torch.cat(outs)
        target = torch.from_numpy(y[val_idx])
        loss = float(F.cross_entropy(logits, target, weight=weight.cpu()))
        return loss, float(balanced_accuracy_score(y[val_idx], logits.argmax(1).numpy()))

    def snapshot() -> dict:
        params = dict(model.named_parameters())
        state = {n: params[n].detach().clone() for n in trainable}
        state.update({f"head.{k}": v.detach().clone()
                      for k, v in head_model.state_dict().items()})
        return state

    val_loss, val_bacc = validate()
    best, best_epoch, best_state = val_loss, 0, snapshot()
    history = [FinetuneProgress(0, config.epochs, float("nan"), val_loss, val_bacc, 0,
                                time.perf_counter() - start)]
    yield history[-1]

    # step 2: unfreeze the last blocks, train with the head on augmented patches
    params = dict(model.named_parameters())
    for name in trainable:
        params[name].requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": [params[n] for n in trainable], "lr": config.lr},
         {"params": list(head_model.parameters()), "lr": config.head_lr}],
        weight_decay=config.weight_decay)
    for epoch in range(1, config.epochs + 1):
        model.eval()  # batch norms keep their statistics; no dropout
        head_model.train()
        order = rng.permutation(train_idx)
        losses = []
        for i in range(0, len(order), config.batch_size):
            if cancel is not None and cancel():
                raise FinetuneError("fine-tuning was cancelled; nothing was saved.")
            batch = order[i:i + config.batch_size]
            if len(batch) < 2:
                continue
            x = augment_patches(patches[batch], rng, config.stain)
            loss = F.cross_entropy(logits_of(x), torch.from_numpy(y[batch]).to(device),
                                   weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        val_loss, val_bacc = validate()
        if val_loss < best:
            best, best_epoch, best_state = val_loss, epoch, snapshot()
        history.append(FinetuneProgress(epoch, config.epochs, float(np.mean(losses)),
                                        val_loss, val_bacc, best_epoch,
                                        time.perf_counter() - start))
        yield history[-1]
        if epoch - best_epoch >= config.patience:
            break

    kept = best_epoch if config.restore_best else history[-1].epoch
    if config.restore_best:
        with torch.no_grad():
            for name in trainable:
                params[name].copy_(best_state[name])
            head_model.load_state_dict({k[5:]: v for k, v in best_state.items()
                                        if k.startswith("head.")})
    model.requires_grad_(False).eval()
    head_model.eval().cpu()
    best_row = history[kept]
    names, counts = np.unique(labels, return_counts=True)
    summary = {
        "classes": classes,
        "per_class": {str(n): int(c) for n, c in zip(names, counts, strict=True)},
        "samples": len(labels), "groups": len(np.unique(groups)),
        "train_samples": len(train_idx), "validation_samples": len(val_idx),
        "epochs_run": len(history) - 1, "best_epoch": best_epoch, "kept_epoch": kept,
        "blocks_unfrozen": config.blocks,
        "validation": {"loss": round(best_row.val_loss, 5),
                       "balanced_accuracy": round(best_row.val_balanced_accuracy, 5),
                       "linear_probe_loss": round(history[0].val_loss, 5),
                       "linear_probe_balanced_accuracy":
                           round(history[0].val_balanced_accuracy, 5)},
        "seconds": round(time.perf_counter() - start, 1),
        "device": str(device),
    }
    return FinetuneResult(backbone=backbone, head=head, base=base_identity,
                          trainable=trainable, history=history, summary=summary)


def finetune_patches(*args, progress: Callable[[FinetuneProgress], None] | None = None,
                     **kwargs) -> FinetuneResult:
    """Run :func:`finetune` to the end (same arguments), calling ``progress`` every epoch."""
    return drive(finetune(*args, **kwargs), progress)
