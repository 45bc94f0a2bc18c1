"""Small classification heads trained on frozen embeddings, in seconds.

The method of Nivaggioli et al. (2023): embeddings of a frozen backbone are standardised
(statistics of the training split, saved with the head), a linear head or a head with one
hidden layer is trained with Adam on them, with Gaussian noise added to the standardised
embeddings at every step (feature-space augmentation) and a focal loss with inverse-frequency
class weights against imbalance. Validation is grouped (by slide, annotation region or source
image) so that neighbouring tiles never sit on both sides, and training stops early on the
validation loss, keeping the best weights.

Training is a generator (:func:`train_head`) that yields one :class:`TrainProgress` per epoch
and returns the :class:`~napari_dfl.core.heads.model.TrainedHead`; :func:`fit` drives it.
Everything is seeded: the same data, configuration and seed give bit-identical weights on
one machine.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Generator, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dfl.core.errors import Cancelled, DFLError
from napari_dfl.core.heads.config import TrainConfig, TrainingError, TrainProgress, step_lr
from napari_dfl.core.heads.metrics import classification_report
from napari_dfl.core.heads.model import (
    TrainedHead,
    build_model,
    check_embeddings,
    focal_loss,
)
from napari_dfl.core.heads.splits import grouped_split
from napari_dfl.core.util.progress import drive

__all__ = ["SMALL_HEAD_ELEMENTS", "TrainingCancelled", "fit", "head_threads", "train_head",
           "validate_training_data"]

#: Heads trained on at most this many numbers (rows x dimension) run on one torch thread.
SMALL_HEAD_ELEMENTS = 100_000_000

_CHUNK = 8192  # rows per chunk for statistics and checks on large arrays
_MIN_DELTA = 1e-3  # relative improvement of the monitored loss that resets the patience


class TrainingCancelled(Cancelled):
    """Training was cancelled by the user; nothing was kept."""


def validate_training_data(embeddings, labels, groups, classes):
    """Check and encode training data: ``(x float32, y int64, class names, groups)``.

    Raises:
        TrainingError: mismatched lengths, unknown or repeated classes, fewer than two
            classes, a class with fewer than two samples, or NaN/inf rows.

    """
    labels = np.asarray(labels).astype(str)
    x = np.asarray(embeddings)
    if x.ndim != 2 or len(labels) != len(x):
        raise TrainingError(f"embeddings {x.shape} and labels ({len(labels)}) do not match: "
                            "give one label per embedding row.")
    if groups is None:
        groups = np.arange(len(x))
    groups = np.asarray(groups)
    if len(groups) != len(x):
        raise TrainingError(f"groups ({len(groups)}) and embeddings ({len(x)}) do not match: "
                            "give one group (slide, region or image) per embedding row.")
    present, counts = np.unique(labels, return_counts=True)
    names = [str(c) for c in (present if classes is None else classes)]
    if len(set(names)) != len(names):
        raise TrainingError(f"class names repeat: {names}.")
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise TrainingError(f"labels {unknown} are not among the classes {names}: "
                            "add them to the classes or fix the annotations.")
    count = dict(zip(present, counts, strict=True))
    if sum(1 for c in names if count.get(c, 0) > 0) < 2:
        raise TrainingError("Training needs at least two classes with samples: add "
                            "annotations of at least two classes.")
    for name in names:
        if count.get(name, 0) < 2:
            raise TrainingError(f"class {name!r} has {count.get(name, 0)} sample(s); every "
                                "class needs at least 2: annotate more of it or remove it.")
    try:
        x = check_embeddings(x)
    except DFLError as exc:
        raise TrainingError(str(exc)) from None
    order = np.argsort(names)
    y = order[np.searchsorted(np.array(names)[order], labels)]
    return x, y.astype(np.int64), names, groups


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise ``x`` in place (float32); return its mean and std (constant columns: 1)."""
    mean = np.zeros(x.shape[1])
    for s in range(0, len(x), _CHUNK):
        mean += x[s:s + _CHUNK].sum(0, dtype=np.float64)
    mean /= max(len(x), 1)
    var = np.zeros(x.shape[1])
    for s in range(0, len(x), _CHUNK):
        var += ((x[s:s + _CHUNK] - mean) ** 2).sum(0)
    std = np.sqrt(var / max(len(x), 1))
    std[std < 1e-12] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    x -= mean
    x /= std
    return mean, std


def train_head(
    embeddings: np.ndarray,
    labels: Sequence[str] | np.ndarray,
    groups: np.ndarray | None = None,
    config: TrainConfig | None = None,
    *,
    classes: list[str] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> Generator[TrainProgress, None, TrainedHead]:
    """Train a head; a generator yielding one :class:`TrainProgress` per epoch.

    Args:
        embeddings: ``(N, D)`` raw embeddings.
        labels: ``(N,)`` class names.
        groups: ``(N,)`` group of each sample: slide, annotation region or source image.
            None makes every sample its own group, which leaks between neighbouring tiles;
            real use must pass groups.
        config: training configuration (None: the defaults).
        classes: class names in output order (default: sorted labels).
        cancel: called once per epoch; returning True raises :class:`TrainingCancelled`.

    Returns:
        The trained head (as ``StopIteration.value``; :func:`fit` unwraps it).

    Raises:
        TrainingError: fewer than two classes, a class with fewer than 2 samples, NaN/inf
            rows, mismatched lengths.
        TrainingCancelled: ``cancel()`` returned True.

    """
    config = config if config is not None else TrainConfig()
    groups_given = groups is not None
    x, y, names, groups = validate_training_data(embeddings, labels, groups, classes)
    train_idx, val_idx = grouped_split(y, groups, config.val_fraction, config.seed)
    xt, xv = x[train_idx], x[val_idx]  # copies, standardised in place
    mean, std = _standardise(xt)
    xv -= mean
    xv /= std
    xt, yt = torch.from_numpy(xt), torch.from_numpy(y[train_idx])
    xv, yv = torch.from_numpy(xv), torch.from_numpy(y[val_idx])
    n_classes = len(names)
    counts = torch.bincount(yt, minlength=n_classes).double()
    weight = None
    if config.class_weights:
        weight = torch.where(counts > 0, len(yt) / (n_classes * counts.clamp_min(1)), 0.0)
        weight = (weight * len(yt) / (weight * counts).sum()).float()

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if config.loss == "ce":
            return F.cross_entropy(logits, target, weight=weight)
        return focal_loss(logits, target, config.gamma, weight)

    gen = torch.Generator().manual_seed(int(config.seed))
    model = build_model(config.head, x.shape[1], n_classes, config.hidden, config.dropout, gen)
    model.generator = gen
    lr = step_lr(config, len(xt))
    optimiser = _adam(model, config, lr)
    n, bs, sigma = len(xt), int(config.batch_size), float(config.noise)
    history: list[TrainProgress] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    for epoch in range(1, config.max_epochs + 1):
        if cancel is not None and cancel():
            raise TrainingCancelled(f"Training cancelled at epoch {epoch}; no head was kept.")
        with head_threads(x.size):
            model.train()
            order = torch.randperm(n, generator=gen)
            total = torch.zeros((), dtype=torch.float64)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                xb = xt.index_select(0, idx)
                if sigma > 0:
                    xb.add_(torch.randn(xb.shape, generator=gen), alpha=sigma)
                loss = loss_fn(model(xb), yt[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.detach() * len(idx)
            train_loss = float(total) / n
            val_loss = val_bacc = None
            if len(xv):
                val_loss, val_bacc, _ = _evaluate(model, xv, yv, loss_fn)
        monitored = train_loss if val_loss is None else val_loss
        if val_bacc is not None and config.monitor == "balanced_accuracy":
            monitored = -val_bacc + 1e-3 * val_loss  # higher accuracy, then lower loss
        if best_state is None or monitored < best_loss - _MIN_DELTA * abs(best_loss):
            best_loss, best_epoch = monitored, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        progress = TrainProgress(epoch, config.max_epochs, train_loss, val_loss, val_bacc,
                                 best_epoch)
        history.append(progress)
        yield progress
        if epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.generator = None
    model.eval()
    metrics = validation = None
    if len(xv):
        with head_threads(x.size):
            _, _, proba = _evaluate(model, xv, yv, loss_fn)
        metrics = classification_report(y[val_idx], proba.argmax(1), proba, names)
        metrics["best_epoch"] = best_epoch
        validation = {"y_true": np.asarray(y[val_idx], np.int64),
                      "proba": np.asarray(proba, np.float32)}
    summary = {"n": len(y), "n_train": len(train_idx), "n_val": len(val_idx),
               "counts": {c: int(k) for c, k in zip(names, np.bincount(y, minlength=n_classes),
                                                    strict=True)},
               "n_groups": len(np.unique(groups)), "groups_given": groups_given,
               "step_lr": lr}
    return TrainedHead(model, names, mean, std, config, metrics, history, summary, validation)


@contextlib.contextmanager
def head_threads(elements: int) -> Iterator[None]:
    """Run a small head's torch work on one intra-op thread; restore the setting after.

    A head's matrices are small (``elements`` = rows x dimension of its data): splitting
    them over threads costs more than it saves, and on a busy machine (the extraction child
    beside it, other jobs) torch's threads wait on each other: 1,000 x 5,120 embeddings
    trained 4-6x faster on one thread than on two on this 2-core machine under load
    (``docs/heads.md``). Larger data keeps the caller's setting. The same data gives the same
    thread count, so the panel and the CLI train the same head.
    """
    previous = torch.get_num_threads()
    if elements > SMALL_HEAD_ELEMENTS or previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _adam(model: nn.Module, config: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """Adam at ``lr``; the fused CPU kernel where this torch has one (3-4x faster steps)."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr,
                                weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)


def _evaluate(model, xv, yv, loss_fn) -> tuple[float, float, np.ndarray]:
    """Validation loss, balanced accuracy and probabilities (no noise, no dropout)."""
    model.eval()
    with torch.inference_mode():
        logits = model(xv)
        loss = float(loss_fn(logits, yv))
        proba = torch.softmax(logits, dim=1).numpy()
    y, n_classes = yv.numpy(), proba.shape[1]
    cm = np.bincount(y * n_classes + proba.argmax(1), minlength=n_classes * n_classes)
    cm = cm.reshape(n_classes, n_classes)
    support = cm.sum(1)
    recall = np.diag(cm)[support > 0] / support[support > 0]
    return loss, float(recall.mean()), proba


def fit(*args, progress: Callable[[TrainProgress], None] | None = None,
        **kwargs) -> TrainedHead:
    """Run :func:`train_head` to the end and return the head.

    Takes :func:`train_head`'s arguments, plus ``progress``, called with every epoch's
    :class:`TrainProgress`.
    """
    return drive(train_head(*args, **kwargs), progress)
