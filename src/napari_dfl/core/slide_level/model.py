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

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dfl.core.features.extractor import Extractor
from napari_dfl.core.features.store import EmbeddingStore
from napari_dfl.core.slide_level.config import MILConfig, MILError, TargetSpec

__all__ = ["GatedAttentionMIL", "SlideModel", "TargetMIL", "TargetSlideModel", "build_mil",
           "build_target_mil"]

_CHUNK = 8192


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


@dataclass
class SlideModel:
    """A trained slide classifier with what it needs to predict.

    Attributes:
        model: the MIL model in eval mode.
        classes: class names in output order.
        mean: ``(D,)`` standardisation mean; std: ``(D,)`` standardisation std.
        config: the training configuration.
        metrics: cross-validation metrics (None without cross-validation).
        extractor: the extractor of the training stores (None before it is set).
        summary: counts of slides per class and the number of groups.
        early_stopping: the validation record of the final training (see
            :func:`napari_dfl.core.slide_level.training.fit_slides`); empty for older models.
        out_of_fold: the cross-validation's true class indices (``"y_true"``) and
            out-of-fold probabilities (``"proba"``), for the ROC curves; None without
            cross-validation (and for a model loaded from disk).

    """

    model: GatedAttentionMIL
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    config: MILConfig
    metrics: dict | None = None
    extractor: Extractor | None = None
    summary: dict = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)
    out_of_fold: dict | None = None

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
        return self.predict_embeddings(_store_embeddings(store, len(self.mean)))


def _store_embeddings(store: EmbeddingStore, dim: int) -> np.ndarray:
    """A store's embeddings for a model trained on ``dim``-d ones; MILError when they cannot be."""
    if len(store) == 0:
        raise MILError(f"{store.path} has no tissue tiles: nothing to predict.")
    if store.dim != dim:
        raise MILError(f"{store.path} holds {store.dim}-d embeddings but the model was "
                       f"trained on {dim}-d ones: embed the slide with the model's backbone "
                       "and composition.")
    return store.embeddings()


class TargetMIL(nn.Module):
    """Gated attention MIL with one attention branch and one output per target.

    The tile embedding and the gated attention's hidden layers are shared; each target has
    its own attention scores (softmax over the slide's tiles), hence its own pooled vector
    and its own linear output: a standardised value for a numeric target, a logit for a
    binary one. Its attention is that target's explanation.
    """

    def __init__(self, in_dim: int, n_targets: int, hidden: int = 128, attention: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.att_v = nn.Linear(hidden, attention)
        self.att_u = nn.Linear(hidden, attention)
        self.att_w = nn.Linear(attention, n_targets)
        self.out_weight = nn.Parameter(torch.zeros(n_targets, hidden))
        self.out_bias = nn.Parameter(torch.zeros(n_targets))
        self.dropout = float(dropout)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(outputs (T,), attention (T, N))`` for standardised tiles ``(N, D)``."""
        h = F.relu(self.embed(x))
        if self.training and self.dropout > 0:
            keep = 1.0 - self.dropout
            h = h * torch.rand(h.shape, generator=self.generator).lt_(keep).mul_(1.0 / keep)
        scores = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h)))
        attention = torch.softmax(scores.T, dim=1)
        pooled = attention @ h
        return (pooled * self.out_weight).sum(1) + self.out_bias, attention


def build_target_mil(in_dim: int, n_targets: int, config: MILConfig, seed: int) -> TargetMIL:
    """A multi-target model initialised from ``seed`` (torch's global state untouched)."""
    gen = torch.Generator().manual_seed(int(seed))
    model = TargetMIL(in_dim, n_targets, config.hidden, config.attention, config.dropout)
    with torch.no_grad():
        for layer in (model.embed, model.att_v, model.att_u, model.att_w):
            bound = 1.0 / np.sqrt(layer.in_features)
            layer.weight.uniform_(-bound, bound, generator=gen)
            layer.bias.uniform_(-bound, bound, generator=gen)
        bound = 1.0 / np.sqrt(config.hidden)
        model.out_weight.uniform_(-bound, bound, generator=gen)
        model.out_bias.uniform_(-bound, bound, generator=gen)
    return model


@dataclass
class TargetSlideModel:
    """A trained multi-target slide model (regression and binary targets).

    Attributes:
        model: the :class:`TargetMIL` in eval mode.
        targets: the targets in output order, with the standardisation of numeric ones.
        mean: ``(D,)`` embedding standardisation mean; std: ``(D,)`` its std.
        config: the training configuration.
        metrics: cross-validation metrics per target, of the MIL model and the pooled
            baseline (None without cross-validation).
        extractor: the extractor of the training stores.
        summary: slides, groups and values per target.
        early_stopping: the validation record of the final training.

    """

    model: TargetMIL
    targets: list[TargetSpec]
    mean: np.ndarray
    std: np.ndarray
    config: MILConfig
    metrics: dict | None = None
    extractor: Extractor | None = None
    summary: dict = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        """Target names in output order."""
        return [t.name for t in self.targets]

    def outputs_to_values(self, outputs: np.ndarray) -> np.ndarray:
        """Raw outputs ``(..., T)`` to predictions (numeric: target units; binary: P(1))."""
        outputs = np.asarray(outputs, np.float64)
        values = np.empty_like(outputs)
        for t, spec in enumerate(self.targets):
            if spec.kind == "numeric":
                values[..., t] = outputs[..., t] * spec.std + spec.mean
            else:
                values[..., t] = 1.0 / (1.0 + np.exp(-outputs[..., t]))
        return values

    def predict_embeddings(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictions ``(T,)`` and attention ``(T, N)`` for raw embeddings ``(N, D)``."""
        x = torch.from_numpy((np.asarray(embeddings, np.float32) - self.mean) / self.std)
        self.model.eval()
        with torch.inference_mode():
            outputs, attention = self.model(x)
        return self.outputs_to_values(outputs.numpy()), attention.numpy()

    def predict_store(self, store: EmbeddingStore) -> tuple[np.ndarray, np.ndarray]:
        """Predictions and attention for one store (its tiles in store order).

        Raises:
            MILError: the store is empty or has another embedding dimension.

        """
        return self.predict_embeddings(_store_embeddings(store, len(self.mean)))
