"""Slide models on disk: a folder with ``weights.safetensors`` and ``model_card.json``.

The card is validated before it is trusted and the weights are safetensors only (never a
pickle), like tile heads (:mod:`napari_dfl.core.heads.head_files`). A classifier's card
lists its ``classes`` (architecture ``gated_attention_mil``); a multi-target model's card
lists its ``targets`` with their kind and standardisation (architecture
``gated_attention_mil_targets``). :func:`load_slide_model` loads classifiers (the panel's
slide model), :func:`load_any_slide_model` either kind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from napari_dfl._version import __version__
from napari_dfl.core.features.extractor import Extractor, ExtractorError
from napari_dfl.core.slide_level.config import MILConfig, MILError, TargetSpec
from napari_dfl.core.slide_level.model import (
    SlideModel,
    TargetSlideModel,
    build_mil,
    build_target_mil,
)
from napari_dfl.core.util.atomic import atomic_folder, recover_folder, to_json

# -- the model folder: weights.safetensors + model_card.json ---------------------------------
SLIDE_MODEL_FORMAT = "napari-dfl slide model"
CARD_NAME, WEIGHTS_NAME = "model_card.json", "weights.safetensors"
CLASSIFIER_ARCH, TARGETS_ARCH = "gated_attention_mil", "gated_attention_mil_targets"


def save_slide_model(model: SlideModel | TargetSlideModel, path: str | os.PathLike) -> Path:
    """Write the model folder (a classifier or a multi-target model) atomically.

    A temporary folder is swapped into place.

    Raises:
        MILError: ``path`` exists and is not a slide model folder (it is left untouched).

    """
    from safetensors.numpy import save_file

    if model.extractor is None:
        raise MILError("the slide model does not record the extractor of its stores: train it "
                       "with train_slide_model, which sets it.")
    target = Path(path)
    if target.exists() and not (target / CARD_NAME).is_file() and \
            not (target.is_dir() and not any(target.iterdir())):
        raise MILError(f"{target} exists and is not a slide model folder: choose another "
                       "path (it was left untouched).")
    tensors = {f"model.{k}": v.detach().float().contiguous().numpy()
               for k, v in model.model.state_dict().items()}
    tensors["mean"], tensors["std"] = model.mean, model.std
    if isinstance(model, TargetSlideModel):
        described = {"architecture": {"model": TARGETS_ARCH, "input_dim": len(model.mean),
                                      "n_targets": len(model.targets)},
                     "targets": [t.to_dict() for t in model.targets]}
    else:
        described = {"architecture": {"model": CLASSIFIER_ARCH, "input_dim": len(model.mean),
                                      "n_classes": len(model.classes)},
                     "classes": model.classes}
    card = {"format": SLIDE_MODEL_FORMAT, "format_version": 1, "package_version": __version__,
            **described, "training": model.config.to_dict(),
            "metrics": model.metrics, "data_summary": model.summary,
            "extractor": {**model.extractor.to_dict(), "dim": len(model.mean)},
            "early_stopping": model.early_stopping}
    text = to_json(card, indent=2)
    with atomic_folder(target) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        (tmp / CARD_NAME).write_text(text, encoding="utf-8")
    return target


def _card(folder: Path) -> dict:
    """The validated card of a classifier or a multi-target model."""
    try:
        card = json.loads((folder / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MILError(f"{folder} is not a slide model folder ({exc}): give the folder that "
                       "napari-dfl train-slides wrote.") from None
    arch = card.get("architecture") if isinstance(card, dict) else None
    ok = (isinstance(arch, dict) and card.get("format") == SLIDE_MODEL_FORMAT
          and card.get("format_version") == 1 and isinstance(arch.get("input_dim"), int)
          and arch["input_dim"] >= 1 and isinstance(card.get("training"), dict)
          and isinstance(card.get("extractor"), dict))
    if ok and arch.get("model") == TARGETS_ARCH:
        targets = card.get("targets")
        names = [t.get("name") for t in targets if isinstance(t, dict)] \
            if isinstance(targets, list) else []
        ok = (len(names) >= 1 and len(names) == len(targets) == arch.get("n_targets")
              and len(set(names)) == len(names))
    elif ok:
        classes = card.get("classes")
        ok = (arch.get("model", CLASSIFIER_ARCH) == CLASSIFIER_ARCH
              and isinstance(classes, list) and len(classes) >= 2
              and arch.get("n_classes") == len(classes) and len(set(classes)) == len(classes)
              and all(isinstance(c, str) and c for c in classes))
    if not ok:
        raise MILError(f"{folder / CARD_NAME} is not a valid slide model card (format, "
                       "architecture, classes or targets, training or extractor is wrong): "
                       "train again.")
    return card


def load_slide_model(path: str | os.PathLike) -> SlideModel:
    """Load a slide classifier written by :func:`save_slide_model`, validating it first.

    Raises:
        MILError: missing files, invalid card, tensors that do not fit the card, or a
            multi-target model (load those with :func:`load_any_slide_model`).

    """
    model = load_any_slide_model(path)
    if isinstance(model, TargetSlideModel):
        raise MILError(f"{path} is a multi-target slide model ({', '.join(model.names[:5])}"
                       f"{'...' if len(model.names) > 5 else ''}), not a classifier: predict "
                       "with napari-dfl predict-slides.")
    return model


def load_any_slide_model(path: str | os.PathLike) -> SlideModel | TargetSlideModel:
    """Load a classifier or a multi-target model, validating card and tensors first.

    Raises:
        MILError: missing files, invalid card, tensors that do not fit the card.

    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = Path(path)
    recover_folder(folder)  # a save interrupted while swapping folders: the old model is back
    card = _card(folder)
    config = MILConfig.from_dict(card["training"])
    dim = card["architecture"]["input_dim"]
    with_targets = card["architecture"].get("model") == TARGETS_ARCH
    if with_targets:
        targets = [TargetSpec.from_dict(t) for t in card["targets"]]
        model = build_target_mil(dim, len(targets), config, 0)
    else:
        classes = card["classes"]
        model = build_mil(dim, len(classes), config, 0)
    try:
        tensors = load_file(str(folder / WEIGHTS_NAME))
    except (SafetensorError, OSError, ValueError) as exc:
        raise MILError(f"{folder / WEIGHTS_NAME} is not a readable safetensors file ({exc}): "
                       "train or save the model again.") from None
    expected = {f"model.{k}": tuple(v.shape) for k, v in model.state_dict().items()}
    expected["mean"] = expected["std"] = (dim,)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    bad = [k for k in expected.keys() | shapes.keys() if expected.get(k) != shapes.get(k)]
    if bad or not all(np.isfinite(v).all() and v.dtype == np.float32 for v in tensors.values()):
        raise MILError(f"{folder / WEIGHTS_NAME} does not match its card (tensors {sorted(bad)} "
                       "differ, or values are not finite float32): train again.")
    if (tensors["std"] <= 0).any():
        raise MILError(f"{folder / WEIGHTS_NAME}: std must be positive; train again.")
    model.load_state_dict({k[6:]: torch.from_numpy(v) for k, v in tensors.items()
                           if k.startswith("model.")})
    model.eval()
    try:
        extractor = Extractor.from_dict(card["extractor"], f"{folder / CARD_NAME}")
    except ExtractorError as exc:
        raise MILError(f"{exc} Train the slide model again.") from None
    rest = (card.get("metrics"), extractor, card.get("data_summary") or {},
            card.get("early_stopping") or {})
    if with_targets:
        return TargetSlideModel(model, targets, tensors["mean"], tensors["std"], config, *rest)
    return SlideModel(model, list(classes), tensors["mean"], tensors["std"], config, *rest)
