"""How a slide classifier is trained (:class:`MILConfig`), and its error (a leaf module)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from napari_dfl.core.errors import DFLError
from napari_dfl.core.util.config import config_from_dict

__all__ = ["MILConfig", "MILError"]


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
