"""Training multi-target slide models: numeric (regression) and binary targets at once.

One :class:`~napari_dfl.core.slide_level.model.TargetMIL` has one output (and one attention
branch) per target. Numeric targets are standardised with the training slides' mean and std
and fitted with the Huber loss (delta 1) or the squared error; binary targets with binary
cross-entropy (positives weighted by negatives / positives when ``class_weights``). A
slide's loss is the mean over the targets it has a value for; missing values count for
nothing. Training follows the slide classifier
(:mod:`napari_dfl.core.slide_level.training`): standardised embeddings with Gaussian noise
at every step, one slide per step, at most ``max_tiles`` tiles, Adam, everything seeded,
early stopping on a grouped validation share. Slides are read one store at a time; the
first 256 MB of them stay in memory between epochs (:data:`BAG_CACHE_BYTES`), the rest are
re-read, so memory is bounded whatever the cohort's size.

:func:`train_target_model` cross-validates with grouped k-fold (patients never on both
sides), scores the out-of-fold predictions per target
(:mod:`napari_dfl.core.slide_level.regression_metrics`), runs the pooled baseline
(:mod:`napari_dfl.core.slide_level.baseline`) on the same folds, then trains the final
model on every slide.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.features.store_folder import store_extractor
from napari_dfl.core.slide_level.baseline import (
    baseline_predictions,
    grouped_folds,
    pooled_embeddings,
)
from napari_dfl.core.slide_level.cohort import SlideEntry
from napari_dfl.core.slide_level.config import MILConfig, MILError, TargetSpec
from napari_dfl.core.slide_level.model import TargetSlideModel, build_target_mil
from napari_dfl.core.slide_level.regression_metrics import headline, metrics_rows
from napari_dfl.core.slide_level.targets import TargetCohort
from napari_dfl.core.slide_level.training import (
    EarlyStopping,
    FitCallback,
    fit_reporter,
    standardised_bag,
    tile_stats,
)

__all__ = [
    "cross_validate_targets",
    "fit_targets",
    "target_validation_split",
    "train_target_model",
]

_SPLIT_TRIES = 20
#: Fewer validation slides than this and there is no early stopping: a loss averaged over a
#: handful of slides and many targets (some of them unpredictable) stops training at random
#: (measured: 30 slides, 2 planted + 4 noise targets, cross-validated r of the planted ones
#: 0.86 without early stopping, about 0 with it on 6 validation slides).
MIN_VAL_SLIDES = 10
#: Bytes of tile embeddings kept in memory between epochs (small cohorts are read once);
#: beyond it slides are re-read from their stores, so memory stays bounded for any cohort.
BAG_CACHE_BYTES = 256 * 2**20


class _Bags:
    """Standardised bags by store, the first ones kept in memory up to a byte budget."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, dim: int,
                 budget: int = BAG_CACHE_BYTES) -> None:
        self.mean, self.std, self.dim, self.left = mean, std, dim, budget
        self.kept: dict[str, torch.Tensor] = {}

    def __call__(self, path: str | os.PathLike) -> torch.Tensor:
        key = str(path)
        bag = self.kept.get(key)
        if bag is None:
            bag = standardised_bag(path, self.mean, self.std, self.dim)
            if bag.numel() * 4 <= self.left:
                self.kept[key] = bag
                self.left -= bag.numel() * 4
        return bag


def _usable(values: np.ndarray, targets: list[TargetSpec]) -> bool:
    """Every target has at least two distinct values among ``values`` (rows of slides)."""
    for t in range(len(targets)):
        given = values[np.isfinite(values[:, t]), t]
        if len(given) < 2 or np.all(given == given[0]):
            return False
    return True


def target_validation_split(entries: list[SlideEntry], values: np.ndarray,
                            targets: list[TargetSpec], fraction: float, seed: int
                            ) -> tuple[list[int], list[int], str | None]:
    """Hold out ``fraction`` of the groups (at least one, never all) for early stopping.

    A split is kept only when every target still has two distinct values among the
    training slides; up to 20 seeded draws are tried.

    Returns:
        ``(train indices, validation indices, reason)``: no split (``reason`` says why)
        when ``fraction`` is 0, there are fewer than 3 groups, the share would hold fewer
        than :data:`MIN_VAL_SLIDES` slides, or no draw keeps every target learnable.

    """
    everything = list(range(len(entries)))
    if fraction <= 0:
        return everything, [], "val_fraction is 0"
    groups = sorted({e.group for e in entries})
    if len(groups) < 3:
        return everything, [], "fewer than 3 groups"
    k = min(max(1, round(fraction * len(groups))), len(groups) - 2)
    rng = np.random.default_rng(seed)
    for _ in range(_SPLIT_TRIES):
        held = {groups[i] for i in rng.permutation(len(groups))[:k]}
        train = [i for i, e in enumerate(entries) if e.group not in held]
        val = [i for i, e in enumerate(entries) if e.group in held]
        if len(val) < MIN_VAL_SLIDES:
            return everything, [], (f"{len(val)} validation slides, fewer than "
                                    f"{MIN_VAL_SLIDES}")
        if _usable(values[train], targets):
            return train, val, None
    return everything, [], "no validation split kept every target learnable"


def _fit_scaling(values: np.ndarray, targets: list[TargetSpec]) -> list[TargetSpec]:
    specs = []
    for t, spec in enumerate(targets):
        if spec.kind == "binary":
            specs.append(replace(spec, mean=0.0, std=1.0))
            continue
        given = values[np.isfinite(values[:, t]), t]
        std = float(given.std()) if len(given) else 1.0
        specs.append(replace(spec, mean=float(given.mean()) if len(given) else 0.0,
                             std=std if std > 1e-12 else 1.0))
    return specs


def _scaled(values: np.ndarray, targets: list[TargetSpec]) -> np.ndarray:
    out = np.array(values, np.float32)
    for t, spec in enumerate(targets):
        out[:, t] = (out[:, t] - spec.mean) / spec.std
    return out


def fit_targets(entries: list[SlideEntry], values: np.ndarray, targets: list[TargetSpec],
                config: MILConfig, progress: Callable[[int, float], None] | None = None
                ) -> TargetSlideModel:
    """Train one multi-target model on ``entries``, streaming one slide at a time.

    Args:
        entries: the slides (training and, when split, validation).
        values: ``(N, T)`` target values, NaN where missing (binary: 0/1).
        targets: the targets (kinds); their standardisation is fitted here on the training
            slides.
        config: training configuration (``numeric_loss``, noise, early stopping...).
        progress: called with ``(epoch, mean training loss)`` after each epoch.

    Returns:
        The trained model (``metrics`` None, ``extractor`` None); its ``early_stopping``
        record is as :func:`napari_dfl.core.slide_level.training.fit_slides`'s. A target
        with one value among the training slides (a cross-validation fold may leave one)
        is learnt as that constant.

    """
    values = np.asarray(values, np.float64)
    train_idx, val_idx, reason = target_validation_split(entries, values, targets,
                                                         config.val_fraction, config.seed)
    train = [entries[i] for i in train_idx]
    val = [entries[i] for i in val_idx]
    specs = _fit_scaling(values[train_idx], targets)
    y = torch.from_numpy(_scaled(values[train_idx], specs))
    y_val = torch.from_numpy(_scaled(values[val_idx], specs)) if val else None
    binary = torch.tensor([s.kind == "binary" for s in specs])
    pos_weight = torch.ones(len(specs))
    if config.class_weights:
        for t, spec in enumerate(specs):
            if spec.kind == "binary":
                given = y[:, t][torch.isfinite(y[:, t])]
                positives = float(given.sum())
                if 0 < positives < len(given):
                    pos_weight[t] = (len(given) - positives) / positives

    def criterion(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        seen = torch.isfinite(target)
        if not bool(seen.any()):
            return None
        filled = torch.where(seen, target, torch.zeros_like(target))
        if config.numeric_loss == "mse":
            numeric = (outputs - filled) ** 2
        else:
            numeric = F.huber_loss(outputs, filled, reduction="none", delta=1.0)
        bce = F.binary_cross_entropy_with_logits(outputs, filled, pos_weight=pos_weight,
                                                 reduction="none")
        per_target = torch.where(binary, bce, numeric)
        return per_target[seen].mean()

    dim = EmbeddingStore.open(train[0].store).dim
    mean, std = tile_stats([e.store for e in train], dim)
    bags = _Bags(mean, std, dim)
    gen = torch.Generator().manual_seed(int(config.seed))
    model = build_target_mil(dim, len(specs), config, config.seed)
    model.generator = gen
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    stopping = EarlyStopping(config.patience)
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        model.train()
        total, steps = 0.0, 0
        for i in torch.randperm(len(train), generator=gen).tolist():
            if not bool(torch.isfinite(y[i]).any()):
                continue
            x = bags(train[i].store)
            if config.max_tiles and len(x) > config.max_tiles:
                x = x[torch.randperm(len(x), generator=gen)[:config.max_tiles]]
            if config.noise > 0:
                x = x + config.noise * torch.randn(x.shape, generator=gen)
            loss = criterion(model(x)[0], y[i])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
            steps += 1
        if progress is not None:
            progress(epoch, total / max(steps, 1))
        if not val:
            continue
        model.eval()
        with torch.inference_mode():
            losses = [criterion(model(bags(e.store))[0], y_val[k])
                      for k, e in enumerate(val)]
        losses = [float(v) for v in losses if v is not None]
        val_loss = float(np.mean(losses)) if losses else float("nan")
        if stopping.step(model, epoch, val_loss):
            break
    stopping.finish(model)
    record = stopping.record(len(train), len(val), epoch, config.epochs, reason)
    return TargetSlideModel(model, specs, mean, std, config, None, None,
                            _summary(entries, values, specs), record)


def _summary(entries: list[SlideEntry], values: np.ndarray, targets: list[TargetSpec]
             ) -> dict:
    per_target = {}
    for t, spec in enumerate(targets):
        given = values[np.isfinite(values[:, t]), t]
        item = {"kind": spec.kind, "n": len(given)}
        if spec.kind == "binary":
            item["n_positive"] = int(given.sum())
        else:
            item.update(mean=round(float(given.mean()), 6), std=round(float(given.std()), 6))
        per_target[spec.name] = item
    return {"n_slides": len(entries), "n_groups": len({e.group for e in entries}),
            "targets": per_target}


def _method_summary(rows: list[dict]) -> dict:
    r = [headline(x) for x in rows if x["kind"] == "numeric" and headline(x) is not None]
    auc = [headline(x) for x in rows if x["kind"] == "binary" and headline(x) is not None]
    return {"mean_pearson_r": round(float(np.mean(r)), 6) if r else None,
            "mean_auc": round(float(np.mean(auc)), 6) if auc else None,
            "n_numeric": sum(x["kind"] == "numeric" for x in rows),
            "n_binary": sum(x["kind"] == "binary" for x in rows)}


def cross_validate_targets(entries: list[SlideEntry], values: np.ndarray,
                           targets: list[TargetSpec], config: MILConfig, folds: int = 5,
                           baseline: bool = True, with_max: bool = False,
                           progress: FitCallback | None = None
                           ) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """Grouped k-fold cross-validation of the MIL model and, on the same folds, the baseline.

    ``progress`` sees every epoch of every fold's MIL fit
    (:class:`~napari_dfl.core.slide_level.training.FitProgress`).

    Returns:
        ``(report, mil_oof (N, T), baseline_oof (N, T) or None)``. The report holds
        ``n_folds``, ``rows`` (one metrics row per target and method, see
        :data:`~napari_dfl.core.slide_level.regression_metrics.METRIC_COLUMNS`),
        ``summary`` (per method: mean Pearson r over numeric targets, mean AUC over binary
        ones), ``baseline`` (pooling, penalties chosen per fold) and ``wins`` (targets where
        each method's headline metric is higher).

    Raises:
        MILError: fewer than 2 folds, or more folds than groups.

    """
    groups = np.array([e.group for e in entries])
    n_groups = len(np.unique(groups))
    if folds < 2 or folds > n_groups:
        raise MILError(f"{folds}-fold cross-validation needs 2 <= folds <= {n_groups} (the "
                       f"cohort's groups): use --folds 2..{max(n_groups, 2)} or add slides.")
    values = np.asarray(values, np.float64)
    splits = grouped_folds(groups, folds, config.seed)
    mil = np.full(values.shape, np.nan)
    for fold, (train, test) in enumerate(splits, start=1):
        model = fit_targets([entries[i] for i in train], values[train], targets, config,
                            fit_reporter(progress, fold, folds, config.epochs))
        for i in test:
            mil[i], _ = model.predict_store(EmbeddingStore.open(entries[i].store))
    rows = metrics_rows(targets, values, mil, "mil")
    report: dict = {"n_folds": folds, "rows": rows,
                    "summary": {"mil": _method_summary(rows)}}
    base = None
    if baseline:
        pooled = pooled_embeddings([e.store for e in entries], with_max=with_max)
        base, penalties = baseline_predictions(pooled, values, targets, groups, splits,
                                               config.seed)
        base_rows = metrics_rows(targets, values, base, "baseline")
        rows.extend(base_rows)
        report["summary"]["baseline"] = _method_summary(base_rows)
        report["baseline"] = {"pooling": "mean+max" if with_max else "mean",
                              "model": "ridge (numeric) / logistic (binary), penalty by "
                                       "grouped inner CV", "penalties": penalties}
        wins = {"mil": 0, "baseline": 0, "tie": 0}
        for a, b in zip(rows[:len(targets)], base_rows, strict=True):
            ha, hb = headline(a), headline(b)
            if ha is None or hb is None or abs(ha - hb) < 1e-9:
                wins["tie"] += 1
            else:
                wins["mil" if ha > hb else "baseline"] += 1
        report["wins"] = wins
    return report, mil, base


def train_target_model(cohort: TargetCohort, config: MILConfig | None = None,
                       folds: int = 5, baseline: bool = True, with_max: bool = False,
                       progress: FitCallback | None = None
                       ) -> tuple[TargetSlideModel, dict | None]:
    """Cross-validate (``folds`` >= 2; MIL and baseline), then train on every slide.

    ``progress`` sees every epoch of every MIL fit
    (:class:`~napari_dfl.core.slide_level.training.FitProgress`); an exception it raises
    (``Cancelled``) stops the training.

    Returns:
        ``(model, oof)``: the final model (its ``metrics`` the cross-validation report, its
        ``extractor`` that of the stores) and the out-of-fold predictions
        ``{"mil": (N, T), "baseline": (N, T) or None}`` (None without cross-validation).

    Raises:
        MILError: no slides or no targets, or folds the cohort cannot fill.

    """
    config = MILConfig() if config is None else config
    if not cohort.entries or not cohort.targets:
        raise MILError("no usable slides or no targets in the cohort: check the CSV, the "
                       "target names and the stores.")
    report, oof = None, None
    if folds:
        report, mil, base = cross_validate_targets(cohort.entries, cohort.values,
                                                   cohort.targets, config, folds,
                                                   baseline, with_max, progress)
        oof = {"mil": mil, "baseline": base}
    model = fit_targets(cohort.entries, cohort.values, cohort.targets, config,
                        fit_reporter(progress, 0, folds, config.epochs))
    model.metrics = report
    model.extractor = store_extractor(EmbeddingStore.open(cohort.entries[0].store))
    return model, oof
