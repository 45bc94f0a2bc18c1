"""The head itself: a linear layer or one hidden layer, its loss, and the trained result.

:class:`TrainedHead` is what training returns and what head files hold: the network, its
classes and the standardisation of its input, with :meth:`TrainedHead.predict_proba` for
raw embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_dfl.core.errors import DFLError
from napari_dfl.core.heads.config import HEAD_TYPES

if TYPE_CHECKING:
    from napari_dfl.core.heads.config import TrainConfig, TrainProgress

__all__ = ["HeadModule", "TrainedHead", "build_model", "check_embeddings", "focal_loss"]

_CHUNK = 8192  # rows per chunk for checks on large arrays


class HeadModule(nn.Module):
    """Linear head, or one hidden layer (ReLU, dropout) then a linear layer.

    Dropout draws from ``self.generator`` when set, so training never touches torch's
    global random state (another thread may be using it).
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        # skip_init: no draw from torch's global RNG; build_model initialises the weights
        self.hidden = nn.utils.skip_init(nn.Linear, in_dim, hidden) if hidden else None
        self.out = nn.utils.skip_init(nn.Linear, hidden or in_dim, n_classes)
        self.dropout = float(dropout)
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits ``(N, n_classes)`` for standardised embeddings ``(N, D)``."""
        if self.hidden is not None:
            x = F.relu(self.hidden(x))
            if self.training and self.dropout > 0:
                keep = 1.0 - self.dropout  # rand < keep: twice as fast as bernoulli_ on CPU
                mask = torch.rand(x.shape, generator=self.generator).lt_(keep)
                x = x * mask.mul_(1.0 / keep)
        return self.out(x)


def build_model(head: str, in_dim: int, n_classes: int, hidden: int = 256,
                dropout: float = 0.0, generator: torch.Generator | None = None) -> HeadModule:
    """Build a head, initialised from ``generator`` (PyTorch's default scheme).

    torch's global random state is never used (None means a generator seeded with 0).
    """
    if head not in HEAD_TYPES:
        raise DFLError(f"unknown head {head!r}; choose among {HEAD_TYPES}.")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    model = HeadModule(in_dim, n_classes, hidden if head == "mlp" else None, dropout)
    with torch.no_grad():
        for layer in (model.hidden, model.out):
            if layer is not None:
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float,
               weight: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-class focal loss, ``-w_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017).

    Reduced like ``torch.nn.functional.cross_entropy``: a weighted mean (divided by the sum
    of the targets' weights), so ``gamma = 0`` gives exactly the (weighted) cross-entropy.
    """
    logp = F.log_softmax(logits, dim=1).gather(1, targets[:, None]).squeeze(1)
    loss = -logp if gamma == 0 else -((1.0 - logp.exp()).clamp_min(0.0) ** gamma) * logp
    if weight is None:
        return loss.mean()
    w = weight[targets]
    return (w * loss).sum() / w.sum()


@dataclass
class TrainedHead:
    """A trained head with what it needs to predict: classes and standardisation.

    Attributes:
        model: the head in eval mode; it takes standardised embeddings.
        classes: class names, in output order.
        mean: ``(D,)`` float32 training mean of the embeddings.
        std: ``(D,)`` float32 training standard deviation (constant features get 1).
        config: how it was trained.
        metrics: validation report (:func:`~napari_dfl.core.heads.metrics.classification_report`)
            or None when there was no validation split.
        history: progress of every epoch.
        data_summary: samples per class, groups, train/validation sizes (for the card).
        validation: the validation split's true class indices (``"y_true"``, ``(N,)``) and
            the kept model's probabilities (``"proba"``, ``(N, C)``), for the PR curves;
            None without a validation split (and for a head loaded from disk).

    """

    model: nn.Module
    classes: list[str]
    mean: np.ndarray
    std: np.ndarray
    config: TrainConfig
    metrics: dict | None = None
    history: list[TrainProgress] = field(default_factory=list)
    data_summary: dict | None = None
    validation: dict | None = None

    @property
    def input_dim(self) -> int:
        """Embedding dimension the head expects."""
        return int(self.mean.shape[0])

    def predict_proba(self, embeddings: np.ndarray, batch: int = 65536) -> np.ndarray:
        """Class probabilities ``(N, C)`` float32 for raw (unstandardised) embeddings.

        Raises:
            DFLError: wrong shape or dimension, or rows with NaN/inf.

        """
        x = check_embeddings(embeddings, self.input_dim)
        out = np.empty((len(x), len(self.classes)), dtype=np.float32)
        mean, std = torch.from_numpy(self.mean), torch.from_numpy(self.std)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(x), batch):
                chunk = (torch.from_numpy(x[start:start + batch]) - mean) / std
                out[start:start + batch] = torch.softmax(self.model(chunk), dim=1).numpy()
        return out

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Index of the most probable class of each embedding, ``(N,)`` int64."""
        return self.predict_proba(embeddings).argmax(axis=1).astype(np.int64)


def check_embeddings(embeddings: np.ndarray, dim: int | None = None) -> np.ndarray:
    """``embeddings`` as a contiguous float32 ``(N, dim)`` array, refusing NaN/inf rows.

    Raises:
        DFLError: wrong shape or dimension (with what to do), or non-finite rows.

    """
    x = np.asarray(embeddings)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(N, {dim})" if dim is not None else "(N, D)"
        raise DFLError(f"embeddings must be a {want} array, got shape {x.shape}: use "
                       "embeddings from the same backbone and composition as the head.")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = sum(int((~np.isfinite(x[s:s + _CHUNK])).any(axis=1).sum())
              for s in range(0, len(x), _CHUNK))
    if bad:
        raise DFLError(f"{bad} of {len(x)} embedding rows contain NaN or inf: re-extract "
                       "those tiles (a failed read or a corrupt store) or drop them.")
    return x
