"""Training slide classifiers: fitting with early stopping, cross-validation, final model.

The model and its configuration live in :mod:`napari_dfl.core.slide_level.model`. Training
streams one slide's store at a time (statistics are accumulated chunk by chunk). With
``MILConfig.val_fraction > 0`` a stratified, grouped share of the slides (whole patients
when the cohort gives groups) is held out inside :func:`fit_slides`: after every epoch the
validation loss is computed and training stops when it has not improved for
``MILConfig.patience`` epochs; the best epoch's weights are restored and the record
(:func:`fit_slides`'s ``early_stopping``) goes into the model card.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import store_extractor
from napari_dfl.core.heads.metrics import classification_report
from napari_dfl.core.heads.model import focal_loss
from napari_dfl.core.slide_level.cohort import SlideEntry
from napari_dfl.core.slide_level.config import MILConfig, MILError
from napari_dfl.core.slide_level.model import SlideModel, build_mil

__all__ = [
    "EarlyStopping",
    "FitProgress",
    "cross_validate_slides",
    "fit_slides",
    "standardised_bag",
    "tile_stats",
    "train_slide_model",
    "validation_split",
]

_CHUNK = 8192
#: Relative improvement of the validation loss that resets the patience (as tile heads).
MIN_DELTA = 1e-3


@dataclass(frozen=True)
class FitProgress:
    """One epoch of one of the fits of a cross-validated training (for progress displays).

    Attributes:
        fold: the cross-validation fold being fitted (1-based), or 0 for the final model.
        n_folds: the folds of the cross-validation (0: none).
        epoch: the epoch just finished (1-based).
        epochs: the most epochs a fit runs (early stopping may end it sooner).
        loss: the epoch's mean training loss.

    """

    fold: int
    n_folds: int
    epoch: int
    epochs: int
    loss: float

    @property
    def stage(self) -> str:
        """``"fold 2 of 5"`` or ``"final model"``."""
        return f"fold {self.fold} of {self.n_folds}" if self.fold else "final model"


#: Called after every epoch of every fit; it may raise (``Cancelled``) to stop the training.
FitCallback = Callable[[FitProgress], None]


def fit_reporter(progress: FitCallback | None, fold: int, n_folds: int,
                 epochs: int) -> Callable[[int, float], None] | None:
    """:func:`fit_slides`' per-epoch callback that reports one fit as :class:`FitProgress`."""
    if progress is None:
        return None
    return lambda epoch, loss: progress(FitProgress(fold, n_folds, epoch, epochs, loss))


def tile_stats(paths: list[Path], dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over all tiles of the stores, streaming chunk by chunk."""
    n, total, squares = 0, np.zeros(dim), np.zeros(dim)
    for path in paths:
        for _, emb in EmbeddingStore.open(path).iter_chunks(_CHUNK):
            x = emb.astype(np.float64)
            n += len(x)
            total += x.sum(0)
            squares += (x * x).sum(0)
    mean = total / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean * mean, 0.0))
    std[std < 1e-6] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def standardised_bag(path: Path, mean: np.ndarray, std: np.ndarray,
                     dim: int) -> torch.Tensor:
    """One store's tile embeddings, standardised, as a float32 tensor ``(N, D)``.

    Raises:
        MILError: the store's embedding dimension is not ``dim``.

    """
    store = EmbeddingStore.open(path)
    if store.dim != dim:
        raise MILError(f"{path}: embedding dimension {store.dim}, the model needs {dim}.")
    return torch.from_numpy((store.embeddings() - mean) / std)


class EarlyStopping:
    """Keeps a model's best weights by validation loss and says when patience has run out."""

    def __init__(self, patience: int) -> None:
        self.patience = patience
        self.best: dict | None = None
        self.best_loss, self.best_epoch, self.waited = float("inf"), 0, 0
        self.history: list[float] = []

    def step(self, model: torch.nn.Module, epoch: int, val_loss: float) -> bool:
        """Record an epoch's validation loss (keeping better weights); True: stop now."""
        self.history.append(round(val_loss, 6))
        if val_loss < self.best_loss * (1 - MIN_DELTA) or self.best is None:
            self.best_loss, self.best_epoch, self.waited = val_loss, epoch, 0
            self.best = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.waited += 1
        return self.waited >= self.patience

    def finish(self, model: torch.nn.Module) -> None:
        """Put the best weights back (when validated) and leave the model ready to predict."""
        if self.best is not None:
            model.load_state_dict(self.best)
        model.generator = None
        model.eval()

    def record(self, n_train: int, n_val: int, epochs_run: int, epochs: int,
               reason: str | None) -> dict:
        """The model card's training record (``reason``: why there was no validation)."""
        validated = n_val > 0
        return {"validation": validated, "n_train_slides": n_train, "n_val_slides": n_val,
                "epochs_run": epochs_run,
                "best_epoch": self.best_epoch if validated else epochs_run,
                "stopped_early": validated and epochs_run < epochs,
                "best_val_loss": round(self.best_loss, 6) if validated else None,
                "val_loss": self.history, "reason": reason}


def validation_split(entries: list[SlideEntry], classes: list[str], fraction: float,
                     seed: int) -> tuple[list[int], list[int], str | None]:
    """Hold out ``fraction`` of each class's groups (at least one, never all) for validation.

    A group is labelled by its first slide. No split is made when ``fraction`` is 0, a class
    has fewer than two groups, or a class would vanish from the training slides.

    Returns:
        ``(train indices, validation indices, reason)``: the validation list is empty and
        ``reason`` says why when there is no split, else ``reason`` is None.

    """
    everything = list(range(len(entries)))
    if fraction <= 0:
        return everything, [], "val_fraction is 0"
    group_label: dict[str, str] = {}
    for entry in entries:
        group_label.setdefault(entry.group, entry.label)
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for name in classes:
        groups = sorted(g for g, label in group_label.items() if label == name)
        if len(groups) < 2:
            return everything, [], f"class {name!r} has fewer than 2 groups"
        k = min(max(1, round(fraction * len(groups))), len(groups) - 1)
        held.update(groups[i] for i in rng.permutation(len(groups))[:k])
    val = [i for i, e in enumerate(entries) if e.group in held]
    train = [i for i, e in enumerate(entries) if e.group not in held]
    if {entries[i].label for i in train} != {e.label for e in entries}:
        return everything, [], "a class would have no training slide left"
    return train, val, None


def fit_slides(entries: list[SlideEntry], classes: list[str], config: MILConfig,
               progress: Callable[[int, float], None] | None = None) -> SlideModel:
    """Train on ``entries``, streaming one slide at a time, with optional early stopping.

    With ``config.val_fraction > 0`` (see :func:`validation_split`) the held-out slides
    are scored after every epoch (no noise, no dropout, every tile); training stops after
    ``config.patience`` epochs without improvement and the best epoch's weights are kept.

    Args:
        entries: the slides (training and, when split, validation).
        classes: class names in output order (every label must be one of them).
        config: training configuration.
        progress: called with ``(epoch, mean training loss)`` after each epoch.

    Returns:
        The trained model (``metrics`` None); ``early_stopping`` records ``validation``
        (bool), ``n_train_slides``, ``n_val_slides``, ``epochs_run``, ``best_epoch``,
        ``stopped_early``, ``best_val_loss``, ``val_loss`` (per epoch) and ``reason`` (why
        there was no validation, else None).

    """
    train_idx, val_idx, reason = validation_split(entries, classes, config.val_fraction,
                                                  config.seed)
    train = [entries[i] for i in train_idx]
    val = [entries[i] for i in val_idx]
    dim = EmbeddingStore.open(train[0].store).dim
    mean, std = tile_stats([e.store for e in train], dim)
    y = torch.tensor([classes.index(e.label) for e in train])
    y_val = torch.tensor([classes.index(e.label) for e in val], dtype=torch.long)
    counts = torch.bincount(y, minlength=len(classes)).double()
    weight = None
    if config.class_weights:
        weight = torch.where(counts > 0, len(y) / (len(classes) * counts.clamp_min(1)), 0.0)
        weight = weight.float()

    def criterion(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if config.loss == "ce":
            return F.cross_entropy(logits[None], target, weight=weight)
        return focal_loss(logits[None], target, config.gamma, weight)

    gen = torch.Generator().manual_seed(int(config.seed))
    model = build_mil(dim, len(classes), config, config.seed)
    model.generator = gen
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    stopping = EarlyStopping(config.patience)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        total = 0.0
        for i in torch.randperm(len(train), generator=gen).tolist():
            x = standardised_bag(train[i].store, mean, std, dim)
            if config.max_tiles and len(x) > config.max_tiles:
                x = x[torch.randperm(len(x), generator=gen)[:config.max_tiles]]
            if config.noise > 0:
                x = x + config.noise * torch.randn(x.shape, generator=gen)
            loss = criterion(model(x)[0], y[i:i + 1])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        if progress is not None:
            progress(epoch, total / len(train))
        if not val:
            continue
        model.eval()
        with torch.inference_mode():
            val_loss = float(np.mean([
                float(criterion(model(standardised_bag(e.store, mean, std, dim))[0],
                                y_val[k:k + 1]))
                for k, e in enumerate(val)]))
        if stopping.step(model, epoch, val_loss):
            break
    stopping.finish(model)
    record = stopping.record(len(train), len(val), epoch, config.epochs, reason)
    all_counts = torch.bincount(torch.tensor([classes.index(e.label) for e in entries]),
                                minlength=len(classes))
    summary = {"n_slides": len(entries), "n_groups": len({e.group for e in entries}),
               "counts": {c: int(k) for c, k in zip(classes, all_counts.tolist(),
                                                    strict=True)}}
    return SlideModel(model, list(classes), mean, std, config, None, {}, summary, record)


def _auc(y: np.ndarray, proba: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return None
    if proba.shape[1] == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    return float(roc_auc_score(y, proba, multi_class="ovr", labels=list(range(proba.shape[1]))))


def cross_validate_slides(entries: list[SlideEntry], classes: list[str], config: MILConfig,
                          folds: int = 5, progress: FitCallback | None = None
                          ) -> tuple[dict, np.ndarray]:
    """Stratified grouped k-fold cross-validation over slides.

    Each fold's training slides are split again for early stopping (see
    :func:`fit_slides`); the test fold is never seen during training. ``progress`` sees
    every epoch of every fold (:class:`FitProgress`).

    Returns:
        ``(report, oof_proba)``: the report of the out-of-fold predictions
        (:func:`classification_report` plus ``auc``, ``n_folds`` and per-fold AUCs) and the
        ``(n_slides, C)`` out-of-fold probabilities.

    Raises:
        MILError: fewer than 2 folds, or more folds than groups of the rarest class.

    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = np.array([classes.index(e.label) for e in entries])
    groups = np.array([e.group for e in entries])
    rarest = min(len(np.unique(groups[y == c])) for c in range(len(classes)))
    if folds < 2 or folds > rarest:
        raise MILError(f"{folds}-fold cross-validation needs 2 <= folds <= {rarest} (groups "
                       f"of the rarest class): use --folds 2..{max(rarest, 2)} or add slides.")
    splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=config.seed)
    proba = np.zeros((len(entries), len(classes)))
    fold_aucs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        splits = list(splitter.split(y, y, groups))
    for fold, (train, test) in enumerate(splits, start=1):
        model = fit_slides([entries[i] for i in train], classes, config,
                           fit_reporter(progress, fold, folds, config.epochs))
        for i in test:
            proba[i], _ = model.predict_store(EmbeddingStore.open(entries[i].store))
        fold_aucs.append(_auc(y[test], proba[test]))
    report = classification_report(y, proba.argmax(1), proba, classes)
    report.update(auc=_auc(y, proba), fold_auc=fold_aucs, n_folds=folds)
    return report, proba


def train_slide_model(entries: list[SlideEntry], config: MILConfig | None = None,
                      folds: int = 5, classes: list[str] | None = None,
                      progress: FitCallback | None = None) -> SlideModel:
    """Cross-validate (``folds`` >= 2), then train the final model on every slide.

    The final model holds out its own validation slides for early stopping when
    ``config.val_fraction > 0``. ``progress`` sees every epoch of every fit
    (:class:`FitProgress`); an exception it raises (``Cancelled``) stops the training.

    Raises:
        MILError: no slides, fewer than two classes, or folds the cohort cannot fill.

    """
    config = MILConfig() if config is None else config
    if not entries:
        raise MILError("no usable slides in the cohort: check the CSV names and the stores.")
    classes = list(classes or sorted({e.label for e in entries}))
    if len(set(classes)) < 2 or not {e.label for e in entries} <= set(classes):
        raise MILError(f"slide training needs at least two classes; got {classes}.")
    metrics = out_of_fold = None
    if folds:
        metrics, proba = cross_validate_slides(entries, classes, config, folds, progress)
        out_of_fold = {"y_true": np.array([classes.index(e.label) for e in entries]),
                       "proba": proba}
    model = fit_slides(entries, classes, config, fit_reporter(progress, 0, folds, config.epochs))
    model.metrics, model.out_of_fold = metrics, out_of_fold
    model.extractor = store_extractor(EmbeddingStore.open(entries[0].store))
    return model
