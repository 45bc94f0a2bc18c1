"""A trained head on disk: a folder with safetensors weights and a JSON model card.

``tumour.dflhead/`` holds:

* ``weights.safetensors``: the head's tensors (``model.<name>``) and the standardisation
  (``standardisation.mean``, ``standardisation.std``), float32. Never a pickle.
* ``model_card.json``: everything needed to reuse the head and judge it: format and package
  versions, creation date, architecture, classes and colours, training configuration,
  validation metrics, data summary and the extractor (backbone name and weights hash,
  preprocessing, composition).

Loading validates the card's structure and the tensors' names, shapes and values before
using any of them, and :func:`check_compatible` refuses embeddings of another extractor.
"""

from __future__ import annotations

import json
import os
import re
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dfl._version import __version__
from napari_dfl.core.errors import DFLError
from napari_dfl.core.features.extractor import Extractor, ExtractorError, ExtractorMismatchError
from napari_dfl.core.heads.config import TrainConfig, TrainingError
from napari_dfl.core.util.atomic import atomic_folder, recover_folder, to_json
from napari_dfl.core.util.palette import class_colors

if TYPE_CHECKING:  # torch: the panel imports this module when it opens
    from napari_dfl.core.heads.model import TrainedHead

__all__ = [
    "CARD_NAME",
    "HEAD_FORMAT",
    "HEAD_FORMAT_VERSION",
    "WEIGHTS_NAME",
    "HeadFileError",
    "HeadMismatchError",
    "check_compatible",
    "head_extractor",
    "load_head",
    "save_head",
]

HEAD_FORMAT = "napari-dfl head"
HEAD_FORMAT_VERSION = 1
CARD_NAME = "model_card.json"
WEIGHTS_NAME = "weights.safetensors"
_MAX_CARD_BYTES = 16 << 20
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_NUMBER = (int, float)


class HeadFileError(DFLError):
    """A head folder is missing, damaged, tampered with or not a napari-dfl head."""


class HeadMismatchError(ExtractorMismatchError):
    """A head was trained on embeddings of another backbone or composition."""


# -- saving ----------------------------------------------------------------------------------
def _extractor_for_card(extractor: Extractor) -> dict:
    if not isinstance(extractor, Extractor):
        raise HeadFileError("extractor must be the Extractor of the head's embeddings.")
    if not isinstance(extractor.backbone.get("weights_sha256"), str):
        raise HeadFileError("the extractor must name the backbone's weights (weights_sha256): "
                            "use Extractor.of(backbone, composition) of the loaded backbone.")
    return extractor.to_dict()


def _colors(classes: list[str], colors: dict[str, str] | None) -> dict[str, str]:
    colors = dict(colors or {})
    bad = {k: v for k, v in colors.items() if not (isinstance(v, str) and _COLOR.match(v))}
    if bad:
        raise HeadFileError(f"colours must be '#rrggbb' strings; got {bad}.")
    return class_colors(classes, colors)


def save_head(head: TrainedHead, path: str | os.PathLike, *, extractor: Extractor,
              data_summary: dict | None = None, colors: dict[str, str] | None = None,
              assessment: dict | None = None) -> Path:
    """Write a head folder atomically (a temp folder swapped into place).

    Args:
        head: the trained head.
        path: the folder to write, e.g. ``tumour.dflhead``; an existing head folder there is
            replaced (the old one stays intact until the new one is complete).
        extractor: the extractor of the embeddings the head was trained on.
        data_summary: e.g. counts per class and number of groups.
        colors: ``{class: "#rrggbb"}``; missing classes get the default palette.
        assessment: the grouped cross-validation of the head's data
            (:func:`napari_dfl.core.heads.assessment.assess`), recorded as is.

    Returns:
        The folder written.

    Raises:
        HeadFileError: bad extractor or colours, or ``path`` holds something that is not a
            head folder (it is never overwritten).

    """
    from safetensors.numpy import save_file

    target = Path(path)
    replaceable = target.is_dir() and ((target / CARD_NAME).exists()
                                       or not any(target.iterdir()))
    if target.exists() and not replaceable:
        raise HeadFileError(f"{target} exists and is not a napari-dfl head folder: choose "
                            "another path (it was left untouched).")
    model = head.model
    hidden = model.hidden.out_features if getattr(model, "hidden", None) is not None else None
    tensors = {f"model.{k}": v.detach().cpu().float().contiguous().numpy()
               for k, v in model.state_dict().items()}
    tensors["standardisation.mean"] = np.ascontiguousarray(head.mean, dtype=np.float32)
    tensors["standardisation.std"] = np.ascontiguousarray(head.std, dtype=np.float32)
    card = {
        "format": HEAD_FORMAT,
        "format_version": HEAD_FORMAT_VERSION,
        "package_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": {"head": "mlp" if hidden else "linear", "input_dim": head.input_dim,
                         "hidden": hidden, "n_classes": len(head.classes),
                         "dropout": float(head.config.dropout if hidden else 0.0)},
        "classes": list(head.classes),
        "colors": _colors(list(head.classes), colors),
        "standardisation": {"file": WEIGHTS_NAME,
                            "keys": ["standardisation.mean", "standardisation.std"],
                            "note": "embeddings are (x - mean) / std before the head"},
        "training": head.config.to_dict(),
        "metrics": head.metrics,
        "history": {"epochs": len(head.history),
                    "best_epoch": head.history[-1].best_epoch if head.history else None},
        "data_summary": data_summary if data_summary is not None else head.data_summary,
        "extractor": _extractor_for_card(extractor),
        "assessment": assessment,
    }
    text = to_json(card, indent=2)
    with atomic_folder(target) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={
            "format": HEAD_FORMAT, "format_version": str(HEAD_FORMAT_VERSION)})
        (tmp / CARD_NAME).write_text(text, encoding="utf-8")
    return target


# -- loading ---------------------------------------------------------------------------------
_CARD_SCHEMA: dict[str, Any] = {
    "format": str, "format_version": int, "package_version": str, "created": str,
    "architecture": {"head": str, "input_dim": int, "hidden": (int, type(None)),
                     "n_classes": int},
    "classes": list, "colors": dict, "training": dict, "metrics": (dict, type(None)),
    "extractor": {"backbone": {"name": str, "weights_sha256": str}, "composition": dict},
}


def _check_schema(data: Any, schema: dict, where: str) -> None:
    if not isinstance(data, dict):
        raise HeadFileError(f"model card: {where or 'the card'} must be an object.")
    for key, want in schema.items():
        name = f"{where}.{key}" if where else key
        if key not in data:
            raise HeadFileError(f"model card is missing {name!r}: the head folder is damaged "
                                "or was edited; save the head again.")
        if isinstance(want, dict):
            _check_schema(data[key], want, name)
            continue
        types = want if isinstance(want, tuple) else (want,)
        value = data[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise HeadFileError(f"model card field {name!r} must be {names}, got "
                                f"{type(value).__name__}: the card was edited or damaged.")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _read_card(folder: Path) -> dict:
    card_path = folder / CARD_NAME
    if not card_path.is_file():
        raise HeadFileError(f"{folder} has no {CARD_NAME}: it is not a napari-dfl head "
                            "folder (give the .dflhead folder that save_head wrote).")
    if card_path.stat().st_size > _MAX_CARD_BYTES:
        raise HeadFileError(f"{card_path} is larger than 16 MB: not a model card.")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"),
                          parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HeadFileError(f"{card_path} is not valid JSON ({exc}): the head is damaged; "
                            "save or train it again.") from None
    _check_schema(card, _CARD_SCHEMA, "")
    if card["format"] != HEAD_FORMAT:
        raise HeadFileError(f"{card_path} is not a napari-dfl head card "
                            f"(format {card['format']!r}).")
    if card["format_version"] > HEAD_FORMAT_VERSION:
        raise HeadFileError(f"head format version {card['format_version']} is newer than this "
                            f"napari-dfl understands ({HEAD_FORMAT_VERSION}): update napari-dfl.")
    arch, classes = card["architecture"], card["classes"]
    if arch["head"] not in ("linear", "mlp") or arch["input_dim"] < 1 or \
            arch["n_classes"] < 2 or (arch["head"] == "mlp") != (arch["hidden"] is not None):
        raise HeadFileError(f"model card architecture is invalid: {arch}.")
    if arch["hidden"] is not None and arch["hidden"] < 1:
        raise HeadFileError(f"model card architecture is invalid: {arch}.")
    dropout = arch.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, _NUMBER) or not 0 <= dropout < 1:
        raise HeadFileError(f"model card architecture dropout must be in [0, 1), got {dropout!r}.")
    if len(classes) != arch["n_classes"] or not all(isinstance(c, str) and c for c in classes) \
            or len(set(classes)) != len(classes):
        raise HeadFileError(f"model card classes {classes!r} must be {arch['n_classes']} "
                            "distinct non-empty names.")
    bad = {k: v for k, v in card["colors"].items()
           if k not in classes or not (isinstance(v, str) and _COLOR.match(v))}
    if bad:
        raise HeadFileError(f"model card colours {bad} are not '#rrggbb' colours of its classes.")
    return card


def _read_weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    if not path.is_file():
        raise HeadFileError(f"{path} is missing: the head folder is incomplete; save it again.")
    with open(path, "rb") as handle:
        head = handle.read(9)
    size = path.stat().st_size
    looks_safetensors = (len(head) == 9 and head[8:9] == b"{"
                         and struct.unpack("<Q", head[:8])[0] + 8 <= size)
    # A safetensors header length may well start with byte 0x80: test the layout first.
    if not looks_safetensors and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise HeadFileError(f"{path} is a pickle/torch.save file, not safetensors: napari-dfl "
                            "never unpickles files; re-save the head with napari-dfl.")
    if not looks_safetensors:
        raise HeadFileError(f"{path} is not a safetensors file (bad header): the head is "
                            "damaged; save or train it again.")
    try:
        return load_file(str(path))
    except (SafetensorError, ValueError, OSError) as exc:
        raise HeadFileError(f"{path} could not be read as safetensors ({exc}).") from None


def load_head(path: str | os.PathLike) -> tuple[TrainedHead, dict]:
    """Load a head folder written by :func:`save_head`.

    Args:
        path: the head folder (or its ``model_card.json`` / ``weights.safetensors``).

    Returns:
        ``(head, card)``; the head's ``history`` is empty (the card keeps its summary).

    Raises:
        HeadFileError: missing files, invalid card, not safetensors, unexpected tensor names,
            shapes or values; the message says what is off.

    """
    import torch  # only when a head is read, never when the panel opens

    from napari_dfl.core.heads.model import TrainedHead, build_model  # torch: see above

    folder = Path(path)
    if folder.is_file() and folder.name in (CARD_NAME, WEIGHTS_NAME):
        folder = folder.parent
    recover_folder(folder)  # a save interrupted while swapping folders: the old head is back
    if not folder.exists():
        raise HeadFileError(f"{folder} does not exist: give the path of a .dflhead folder.")
    if not folder.is_dir():
        raise HeadFileError(f"{folder} is a file, not a head folder: a napari-dfl head is a "
                            f"folder with {CARD_NAME} and {WEIGHTS_NAME}.")
    card = _read_card(folder)
    arch = card["architecture"]
    try:
        config = TrainConfig.from_dict(card["training"])
    except TrainingError as exc:
        raise HeadFileError(f"model card training configuration: {exc}") from None
    tensors = _read_weights(folder / WEIGHTS_NAME)
    # The card's shapes are checked against the file's tensors before anything is built: a
    # card claiming millions of inputs must not allocate them.
    expected = _expected_shapes(arch)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise HeadFileError(f"{WEIGHTS_NAME} does not match the card's architecture "
                            f"({arch['head']}): missing {missing}, unexpected {extra}.")
    for key, shape in expected.items():
        array = tensors[key]
        if tuple(array.shape) != shape or array.dtype != np.float32:
            raise HeadFileError(f"{WEIGHTS_NAME}: tensor {key!r} is {array.dtype} "
                                f"{tuple(array.shape)}, the card's architecture needs "
                                f"float32 {shape}.")
        if not np.isfinite(array).all():
            raise HeadFileError(f"{WEIGHTS_NAME}: tensor {key!r} holds NaN or inf.")
    model = build_model(arch["head"], arch["input_dim"], arch["n_classes"],
                        arch["hidden"] or 1, float(arch.get("dropout", 0.0)))
    std = tensors["standardisation.std"]
    if (std <= 0).any():
        raise HeadFileError(f"{WEIGHTS_NAME}: standardisation.std must be positive.")
    model.load_state_dict({k[len("model."):]: torch.from_numpy(v.copy())
                           for k, v in tensors.items() if k.startswith("model.")})
    model.eval()
    head = TrainedHead(model=model, classes=list(card["classes"]),
                       mean=tensors["standardisation.mean"].copy(), std=std.copy(),
                       config=config, metrics=card["metrics"], history=[])
    return head, card


def _expected_shapes(arch: dict) -> dict[str, tuple[int, ...]]:
    """The tensors a head of the card's architecture holds, and their shapes."""
    dim, classes, hidden = arch["input_dim"], arch["n_classes"], arch["hidden"]
    shapes: dict[str, tuple[int, ...]] = {}
    if arch["head"] == "mlp":
        shapes["model.hidden.weight"] = (hidden, dim)
        shapes["model.hidden.bias"] = (hidden,)
        shapes["model.out.weight"] = (classes, hidden)
    else:
        shapes["model.out.weight"] = (classes, dim)
    shapes["model.out.bias"] = (classes,)
    shapes["standardisation.mean"] = shapes["standardisation.std"] = (dim,)
    return shapes


# -- compatibility ---------------------------------------------------------------------------
def head_extractor(card: dict) -> Extractor:
    """The extractor a head was trained on, from its (validated) card."""
    try:
        return Extractor.from_dict(card.get("extractor"), "the head's model card")
    except ExtractorError as exc:
        raise HeadFileError(str(exc)) from None


def check_compatible(card: dict, extractor: Extractor) -> None:
    """Refuse embeddings of another extractor than the head's, naming every difference.

    Compares the backbone (name, weights, preprocessing, embedding size) where both sides
    give it, and the composition (patch size, zooms, colour variants).

    Raises:
        HeadMismatchError: what differs, and what to do.

    """
    trained = head_extractor(card)
    differences = trained.differences(extractor)
    if differences:
        raise HeadMismatchError(
            f"This head does not fit these embeddings: it was trained with "
            f"{', '.join(differences)}. Extract embeddings with the head's extractor "
            f"({trained.describe()}), or train a new head on these embeddings.",
            differences)
