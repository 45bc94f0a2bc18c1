"""Slide-level learning from one label per slide: gated attention MIL over tile embeddings.

Training (:func:`~napari_dfl.core.slide_level.training.fit_slides`, cross-validation, early
stopping)
lives in :mod:`napari_dfl.core.slide_level.training`; saving and loading in
:mod:`napari_dfl.core.slide_level.model_files`.

A slide is a bag of tile embeddings (its store). The gated attention model of Ilse et al.
(2018) embeds each tile, scores it with a gated attention branch, pools the tiles by their
softmax attention and classifies the pooled vector; the attention weights explain the
prediction (a heatmap over the slide). Training follows the tile heads (``core/heads.py``):
embeddings standardised with training statistics, Gaussian noise added to them at every step,
focal loss with inverse-frequency class weights, Adam, everything seeded. Optionally a
grouped validation split stops training when its loss stops improving (the best epoch's
weights are kept).

Streaming: statistics are accumulated chunk by chunk and training reads one slide's store
at a time, so a cohort of any size never sits in memory at once. Cross-validation is
stratified and grouped (by patient when the cohort gives one, else by slide). A model is a
folder with safetensors weights and a JSON card (:func:`save_slide_model`,
:func:`load_slide_model`), never a pickle.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.store import EmbeddingStore, StoreError
from napari_dfl.core.slide_level.grids import slide_name
from napari_dfl.core.util.config import config_from_dict

__all__ = [
    "GatedAttentionMIL",
    "MILConfig",
    "MILError",
    "SlideEntry",
    "SlideModel",
    "extractor_of",
    "read_cohort",
]

_CHUNK = 8192


class MILError(DFLError):
    """Slide-level training or prediction cannot proceed; the message says what to change."""


@dataclass(frozen=True)
class MILConfig:
    """How a slide classifier is trained.

    Attributes:
        hidden: width of the tile embedding layer.
        attention: width of the gated attention branches.
        dropout: dropout after the tile embedding layer.
        loss: ``"focal"`` or ``"ce"``.
        gamma: focal loss focusing parameter.
        class_weights: weight the loss by inverse class frequency of the slides.
        noise: sigma of the Gaussian noise added to standardised embeddings per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        epochs: passes over the training slides (one slide per step).
        max_tiles: at most this many random tiles of a slide per training step (0: all).
        seed: seed of folds, initialisation, slide order, tile subsets, dropout, noise and
            the validation split.
        val_fraction: share of each class's groups (patients, else slides) held out to
            validate after every epoch (0: no validation, train all ``epochs``). Skipped,
            with the reason in the model card, when a class has fewer than two groups.
        patience: epochs without a 0.1 % improvement of the validation loss before
            training stops; the best epoch's weights are restored.

    """

    hidden: int = 128
    attention: int = 64
    dropout: float = 0.25
    loss: str = "focal"
    gamma: float = 2.0
    class_weights: bool = True
    noise: float = 0.5
    lr: float = 5e-4
    weight_decay: float = 1e-4
    epochs: int = 20
    max_tiles: int = 4096
    seed: int = 0
    val_fraction: float = 0.2
    patience: int = 5

    def __post_init__(self) -> None:
        ok = (self.hidden >= 1 and self.attention >= 1 and 0 <= self.dropout < 1
              and self.loss in ("focal", "ce") and self.gamma >= 0 and self.noise >= 0
              and self.lr > 0 and self.weight_decay >= 0 and self.epochs >= 1
              and self.max_tiles >= 0 and 0 <= self.val_fraction <= 0.5
              and self.patience >= 1)
        if not ok:
            raise MILError(f"Invalid slide training configuration {asdict(self)}: widths and "
                           "epochs and patience must be >= 1, dropout in [0, 1), loss "
                           "'focal' or 'ce', gamma, noise, weight_decay, max_tiles >= 0, "
                           "val_fraction in [0, 0.5] and lr > 0.")

    def to_dict(self) -> dict:
        """JSON-serialisable form (stored in the model card)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MILConfig:
        """Inverse of :meth:`to_dict`; refuses unknown keys and wrong types."""
        return config_from_dict(cls, data, MILError, "slide training configuration")


class GatedAttentionMIL(nn.Module):
    """Gated attention MIL (Ilse et al. 2018): tile embedding, gated attention, classifier."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 128, attention: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.att_v = nn.Linear(hidden, attention)
        self.att_u = nn.Linear(hidden, attention)
        self.att_w = nn.Linear(attention, 1)
        self.classifier = nn.Linear(hidden, n_classes)
        self.dropout = float(dropout)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(logits (n_classes,), attention (N,))`` for standardised tiles ``(N, D)``."""
        h = F.relu(self.embed(x))
        if self.training and self.dropout > 0:
            keep = 1.0 - self.dropout
            h = h * torch.rand(h.shape, generator=self.generator).lt_(keep).mul_(1.0 / keep)
        scores = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h)))
        attention = torch.softmax(scores.squeeze(1), dim=0)
        return self.classifier(attention @ h), attention


def build_mil(in_dim: int, n_classes: int, config: MILConfig, seed: int) -> GatedAttentionMIL:
    """A model initialised from ``seed`` without touching torch's global random state."""
    gen = torch.Generator().manual_seed(int(seed))
    model = GatedAttentionMIL(in_dim, n_classes, config.hidden, config.attention,
                              config.dropout)
    with torch.no_grad():
        for layer in (model.embed, model.att_v, model.att_u, model.att_w, model.classifier):
            bound = 1.0 / np.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
    return model


@dataclass(frozen=True)
class SlideEntry:
    """One slide of a cohort: its name, store folder, label and group (patient)."""

    name: str
    store: Path
    label: str
    group: str


def extractor_of(store: EmbeddingStore) -> dict:
    """The store's extractor identity without its slide part, plus the embedding dim."""
    out = {k: v for k, v in store.identity.items() if k != "slide"}
    out["dim"] = store.dim
    return out


def _index_stores(stores_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in sorted(stores_dir.glob("*.dfl.zarr")):
        prefix = path.name.split("__")[0]
        index.setdefault(prefix, path)
        try:
            name = slide_name(EmbeddingStore.open(path))
        except StoreError:
            continue
        index.setdefault(name, path)
        index.setdefault(Path(name).stem, path)
    return index


def read_cohort(csv_path: str | os.PathLike,
                stores_dir: str | os.PathLike) -> tuple[list[SlideEntry], list[str]]:
    """Match a cohort CSV (``slide,label[,group]``) with the stores in a folder.

    A slide matches a store by the slide name in its identity (with or without extension)
    or by the store folder's prefix. Slides without a store, with an empty or unreadable
    store, or whose extractor or embedding dimension differs from the cohort's majority are
    left out with one message each; the rest proceed.

    Returns:
        ``(entries, problems)``.

    Raises:
        MILError: the CSV is missing or lacks the ``slide`` and ``label`` columns.

    """
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except OSError as exc:
        raise MILError(f"cannot read the cohort CSV {csv_path}: {exc}.") from None
    if not {"slide", "label"} <= columns:
        raise MILError(f"{csv_path} must have a header with columns slide,label (optionally "
                       f"group); found {sorted(columns) or 'no rows'}.")
    index = _index_stores(Path(stores_dir))
    problems: list[str] = []
    found: list[tuple[SlideEntry, dict]] = []
    for row in rows:
        name, label = (row.get("slide") or "").strip(), (row.get("label") or "").strip()
        path = index.get(name) or index.get(Path(name).stem)
        if not name or not label:
            problems.append(f"row {row}: empty slide or label, skipped.")
        elif path is None:
            problems.append(f"{name}: no store in {stores_dir} (embed it with napari-dfl "
                            "embed --out there), skipped.")
        else:
            try:
                store = EmbeddingStore.open(path)
            except StoreError as exc:
                problems.append(f"{name}: {exc} Skipped.")
                continue
            if len(store) == 0:
                problems.append(f"{name}: its store has no tissue tiles, skipped.")
                continue
            group = (row.get("group") or "").strip() or name
            found.append((SlideEntry(name, path, label, group), extractor_of(store)))
    if not found:
        return [], problems
    keys = [repr(sorted(ex.items())) for _, ex in found]
    majority = Counter(keys).most_common(1)[0][0]
    want = found[keys.index(majority)][1]
    entries = []
    for (entry, ex), key in zip(found, keys, strict=True):
        if key == majority:
            entries.append(entry)
        elif ex["dim"] != want["dim"]:
            problems.append(f"{entry.name}: embedding dimension {ex['dim']} differs from the "
                            f"cohort's {want['dim']}; re-embed it with the cohort's backbone "
                            "and composition. Skipped.")
        else:
            problems.append(f"{entry.name}: embedded by another backbone or composition than "
                            "the rest of the cohort; re-embed it. Skipped.")
    return entries, problems


@dataclass
class SlideModel:
    """A trained slide classifier with what it needs to predict.

    Attributes:
        model: the MIL model in eval mode.
        classes: class names in output order.
        mean: ``(D,)`` standardisation mean; std: ``(D,)`` standardisation std.
        config: the training configuration.
        metrics: cross-validation metrics (None without cross-validation).
        extractor: the stores' extractor identity (no slide) with ``dim``.
        summary: counts of slides per class and the number of groups.
        early_stopping: the validation record of the final training (see
            :func:`napari_dfl.core.slide_level.training.fit_slides`); empty for older models.

    """

    model: GatedAttentionMIL
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    config: MILConfig
    metrics: dict | None = None
    extractor: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)

    def predict_embeddings(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class probabilities ``(C,)`` and attention ``(N,)`` for raw embeddings ``(N, D)``."""
        x = torch.from_numpy((np.asarray(embeddings, np.float32) - self.mean) / self.std)
        self.model.eval()
        with torch.inference_mode():
            logits, attention = self.model(x)
        return torch.softmax(logits, 0).numpy(), attention.numpy()

    def predict_store(self, store: EmbeddingStore) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and attention for one store (its tiles in store order).

        Raises:
            MILError: the store is empty or has another embedding dimension.

        """
        if len(store) == 0:
            raise MILError(f"{store.path} has no tissue tiles: nothing to predict.")
        if store.dim != len(self.mean):
            raise MILError(f"{store.path} holds {store.dim}-d embeddings but the model was "
                           f"trained on {len(self.mean)}-d ones: embed the slide with the "
                           "model's backbone and composition.")
        return self.predict_embeddings(store.embeddings())
