"""How a head is trained (:class:`TrainConfig`) and what one epoch reports (a leaf module)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from napari_dfl.core.errors import DFLError
from napari_dfl.core.util.config import config_from_dict

__all__ = ["HEAD_TYPES", "LOSSES", "MIN_PER_CLASS", "MIN_SAMPLES", "MONITORS", "TrainConfig",
           "TrainProgress", "TrainingError", "step_lr"]

#: Fewer validated samples than this and a head's figure is "too few to judge": at 30
#: samples the 95 % interval of an accuracy near 0.8 is already about +-0.14 (see
#: :mod:`napari_dfl.core.heads.assessment`).
MIN_SAMPLES = 30
#: Fewer samples of a class than this and the figure is "too few to judge": with 4 samples,
#: one sample moves the class's recall by 25 points.
MIN_PER_CLASS = 5

HEAD_TYPES = ("linear", "mlp")
LOSSES = ("focal", "ce")
MONITORS = ("loss", "balanced_accuracy")


class TrainingError(DFLError):
    """Training data or configuration is unusable; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    """How a head is trained.

    Attributes:
        head: ``"linear"`` or ``"mlp"`` (one hidden layer, ReLU, dropout).
        hidden: width of the hidden layer (mlp only).
        dropout: dropout after the hidden layer (mlp only).
        loss: ``"focal"`` or ``"ce"`` (cross-entropy).
        gamma: focal loss focusing parameter (0 gives cross-entropy).
        class_weights: weight the loss by inverse class frequency (normalised so the mean
            weight per training sample is 1).
        noise: sigma of the Gaussian noise added to the standardised embeddings at each
            training step; chosen by measurement on real embeddings (docs/heads.md).
        lr: Adam learning rate of a training split that fits in one batch.
        scale_lr: step larger splits at ``lr x batch_size / n_train`` (:func:`step_lr`), so
            that an epoch moves the head about as far whatever the number of labels; without
            it, thousands of labels memorise the training split within the first epoch and
            early stopping has nothing left to choose from (measured: docs/heads.md).
        weight_decay: Adam weight decay (L2).
        batch_size: samples per step.
        max_epochs: upper bound on epochs.
        patience: epochs without an improvement of at least 0.1 % of the monitored value
            before stopping; the best epoch's weights are restored.
        val_fraction: share of the groups held out for validation (0 disables validation;
            training then stops on the training loss).
        seed: seed of the split, initialisation, shuffling, dropout and noise.
        monitor: what early stopping watches on the validation split: ``"loss"`` or
            ``"balanced_accuracy"`` (ties broken by the loss).

    """

    head: str = "mlp"
    hidden: int = 256
    dropout: float = 0.2
    loss: str = "focal"
    gamma: float = 2.0
    class_weights: bool = True
    noise: float = 0.0
    lr: float = 1e-3
    scale_lr: bool = True
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 200
    patience: int = 15
    val_fraction: float = 0.2
    seed: int = 0
    monitor: str = "loss"

    def __post_init__(self) -> None:
        checks = [
            (self.head in HEAD_TYPES, f"head must be one of {HEAD_TYPES}, got {self.head!r}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.hidden >= 1, f"hidden must be >= 1, got {self.hidden}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.gamma >= 0.0, f"gamma must be >= 0, got {self.gamma}"),
            (self.noise >= 0.0, f"noise must be >= 0, got {self.noise}"),
            (self.lr > 0.0, f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0.0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}"),
            (self.patience >= 1, f"patience must be >= 1, got {self.patience}"),
            (self.monitor in MONITORS,
             f"monitor must be one of {MONITORS}, got {self.monitor!r}"),
            (0.0 <= self.val_fraction <= 0.5,
             f"val_fraction must be in [0, 0.5], got {self.val_fraction}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(f"Invalid training configuration: {message}.")

    def to_dict(self) -> dict:
        """JSON-serialisable form (stored in the model card)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; refuses unknown keys and values of the wrong type.

        A record from before ``scale_lr`` existed keeps its meaning: its head stepped at
        ``lr`` throughout.

        Raises:
            TrainingError: unknown key, wrong type or invalid value.

        """
        if isinstance(data, dict) and "scale_lr" not in data:
            data = {**data, "scale_lr": False}
        return config_from_dict(cls, data, TrainingError, "training configuration")


def step_lr(config: TrainConfig, n_train: int) -> float:
    """The learning rate of each Adam step for a training split of ``n_train`` samples.

    ``config.lr`` while the split fits in one batch (or without ``config.scale_lr``);
    beyond it ``lr x batch_size / n_train``: the steps of an epoch add up to about one step
    of ``lr``, as with a single batch. A head on 2,560 CRC nuclei then learns over 6 epochs
    instead of memorising its split in the first (balanced accuracy +0.026 +- 0.005 on two
    draws of 3,200 nuclei; unchanged up to 30 labels per class: docs/heads.md).
    """
    if not config.scale_lr or n_train <= config.batch_size:
        return float(config.lr)
    return float(config.lr) * config.batch_size / n_train


@dataclass
class TrainProgress:
    """One epoch of training, as yielded by :func:`train_head`."""

    epoch: int
    max_epochs: int
    train_loss: float
    val_loss: float | None
    val_balanced_accuracy: float | None
    best_epoch: int
