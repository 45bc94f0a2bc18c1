"""How a slide model is trained, what it predicts, and its error (a leaf module).

:class:`MILConfig` holds the training settings; :class:`TargetSpec` one target of a
multi-target model (its kind and standardisation).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from napari_dfl.core.errors import DFLError
from napari_dfl.core.util.config import config_from_dict

__all__ = ["MILConfig", "MILError", "TargetSpec"]


class MILError(DFLError):
    """Slide-level training or prediction cannot proceed; the message says what to change."""


@dataclass(frozen=True)
class MILConfig:
    """How a slide model (a classifier, or one output per target) is trained.

    Attributes:
        hidden: width of the tile embedding layer.
        attention: width of the gated attention branches.
        dropout: dropout after the tile embedding layer.
        loss: ``"focal"`` or ``"ce"`` (classifiers).
        numeric_loss: ``"huber"`` (delta 1 on standardised values) or ``"mse"``, the loss of
            numeric targets; binary targets always use binary cross-entropy.
        gamma: focal loss focusing parameter.
        class_weights: weight the loss by inverse class frequency of the slides (binary
            targets: positives weighted by negatives / positives).
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
    numeric_loss: str = "huber"
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
              and self.loss in ("focal", "ce") and self.numeric_loss in ("huber", "mse")
              and self.gamma >= 0 and self.noise >= 0
              and self.lr > 0 and self.weight_decay >= 0 and self.epochs >= 1
              and self.max_tiles >= 0 and 0 <= self.val_fraction <= 0.5
              and self.patience >= 1)
        if not ok:
            raise MILError(f"Invalid slide training configuration {asdict(self)}: widths and "
                           "epochs and patience must be >= 1, dropout in [0, 1), loss "
                           "'focal' or 'ce', numeric_loss 'huber' or 'mse', gamma, noise, "
                           "weight_decay, max_tiles >= 0, val_fraction in [0, 0.5] and "
                           "lr > 0.")

    def to_dict(self) -> dict:
        """JSON-serialisable form (stored in the model card)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MILConfig:
        """Inverse of :meth:`to_dict`; refuses unknown keys and wrong types."""
        return config_from_dict(cls, data, MILError, "slide training configuration")


@dataclass(frozen=True)
class TargetSpec:
    """One target: its column, its kind and how its values are scaled for training.

    Attributes:
        name: the CSV column.
        kind: ``"numeric"`` (Huber or MSE loss on standardised values) or ``"binary"``
            (binary cross-entropy).
        mean: training mean of a numeric target (0 for binary ones).
        std: training standard deviation of a numeric target (1 for binary ones).

    """

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in ("numeric", "binary") or not self.name:
            raise MILError(f"target {self.name!r}: kind must be 'numeric' or 'binary', got "
                           f"{self.kind!r}.")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise MILError(f"target {self.name!r}: its standardisation (mean {self.mean}, "
                           f"std {self.std}) must be finite with std > 0; train again.")

    def to_dict(self) -> dict:
        """JSON form (the model card's ``targets`` list)."""
        return {"name": self.name, "kind": self.kind, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: object) -> TargetSpec:
        """Inverse of :meth:`to_dict`, refusing anything else."""
        ok = (isinstance(data, dict) and set(data) == {"name", "kind", "mean", "std"}
              and isinstance(data["name"], str)
              and all(isinstance(data[k], int | float) and not isinstance(data[k], bool)
                      for k in ("mean", "std")))
        if not ok:
            raise MILError(f"invalid target entry {data!r} in the model card: train again.")
        return cls(data["name"], data["kind"], float(data["mean"]), float(data["std"]))
