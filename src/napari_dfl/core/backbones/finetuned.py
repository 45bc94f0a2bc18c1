"""Fine-tuned backbones on disk: a folder with the weights and a card, usable as a backbone.

A fine-tuned backbone is a folder (``crc-lite0/``) holding ``model.safetensors`` (the whole
timm network, no classifier) and ``backbone_card.json`` (what it was tuned from and on:
base backbone and its weights hash, dataset, classes and counts, epochs, blocks unfrozen,
validation metrics, date). It is given wherever a backbone name is accepted:

- as a folder path: ``--backbone runs/crc-lite0`` (CLI) or
  ``load_backbone("runs/crc-lite0")``;
- as ``finetuned:<name>`` for a folder of that card name in the backbone folder
  (``$NAPARI_DFL_BACKBONES``, default ``~/.local/share/napari-dfl/backbones``), or one
  registered in this process with :func:`register_finetuned`.

Its identity is ``finetuned:<name>`` plus the sha256 of ``model.safetensors`` (checked
against the card on load), so its embeddings never mix with the base backbone's, and a head
trained on them records where to find it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from napari_dfl.core.backbones.registry import BackboneSpec, get_spec
from napari_dfl.core.errors import DFLError
from napari_dfl.core.util.hashing import file_sha256
from napari_dfl.core.util.paths import BACKBONES_ENV, default_backbone_dir

__all__ = [
    "CARD_FILE",
    "CARD_FORMAT",
    "PREFIX",
    "WEIGHTS_FILE",
    "FinetunedBackboneError",
    "backbone_folder",
    "is_finetuned",
    "list_finetuned",
    "read_card",
    "register_finetuned",
    "resolve",
]

CARD_FILE = "backbone_card.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FORMAT = "napari-dfl fine-tuned backbone"
PREFIX = "finetuned:"
#: Environment variable naming the folder searched for ``finetuned:<name>``.
FOLDER_ENV = BACKBONES_ENV
_REQUIRED = {"format": str, "version": int, "name": str, "weights_sha256": str, "base": dict,
             "classes": list, "created": str}
_REGISTERED: dict[str, Path] = {}


class FinetunedBackboneError(DFLError):
    """A fine-tuned backbone folder is missing, incomplete, modified or not one at all."""


def backbone_folder() -> Path:
    """Where ``finetuned:<name>`` is looked up: ``$NAPARI_DFL_BACKBONES`` or the user data."""
    return default_backbone_dir()


def read_card(folder: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a fine-tuned backbone's card.

    Raises:
        FinetunedBackboneError: no card or weights file, bad JSON, or missing fields.

    """
    folder = Path(folder)
    card_path, weights = folder / CARD_FILE, folder / WEIGHTS_FILE
    if not card_path.is_file() or not weights.is_file():
        raise FinetunedBackboneError(
            f"{folder} is not a fine-tuned backbone: it needs {CARD_FILE} and {WEIGHTS_FILE} "
            "(written by `napari-dfl finetune`).")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinetunedBackboneError(f"{card_path} is not valid JSON: {exc}.") from None
    if not isinstance(card, dict):
        raise FinetunedBackboneError(f"{card_path} must hold a JSON object.")
    bad = [key for key, kind in _REQUIRED.items() if not isinstance(card.get(key), kind)]
    if bad or card["format"] != CARD_FORMAT:
        raise FinetunedBackboneError(
            f"{card_path} is not a napari-dfl backbone card (missing or wrong: "
            f"{', '.join(bad) or 'format'}).")
    if not isinstance(card["base"].get("timm_name"), str):
        raise FinetunedBackboneError(f"{card_path}: the base backbone has no timm_name.")
    return card


def is_finetuned(name: str | os.PathLike | None) -> bool:
    """True when ``name`` is ``finetuned:<name>`` or a folder holding a backbone card."""
    if name is None:
        return False
    text = os.fspath(name)
    if text.startswith(PREFIX):
        return True
    path = Path(text).expanduser()
    return path.is_dir() and (path / CARD_FILE).is_file()


def register_finetuned(folder: str | os.PathLike) -> str:
    """Make a fine-tuned folder loadable as ``finetuned:<name>`` in this process.

    Returns:
        The name to load it by.

    """
    card = read_card(folder)
    _REGISTERED[card["name"]] = Path(folder).resolve()
    return PREFIX + card["name"]


def _find(name: str) -> Path:
    if name in _REGISTERED:
        return _REGISTERED[name]
    root = backbone_folder()
    for entry in list_finetuned(root):
        if entry["name"] == name:
            return Path(entry["path"])
    raise FinetunedBackboneError(
        f"No fine-tuned backbone named '{name}' in {root}: pass its folder instead "
        f"(--backbone FOLDER; for predict, --weights FOLDER), or move it there (or set "
        f"{FOLDER_ENV}).")


def resolve(name: str | os.PathLike, weights: str | os.PathLike | None = None):
    """Turn a fine-tuned backbone reference into ``(spec, weights file, card)``.

    Args:
        name: ``finetuned:<name>`` or a folder path; any other name returns None, unless
            ``weights`` is a fine-tuned folder (then that folder is loaded).
        weights: optionally the folder (or its ``model.safetensors``) to use instead of the
            lookup (e.g. ``predict --weights`` for a head trained on a moved backbone).

    Returns:
        None when ``name`` is not a fine-tuned backbone, else the spec to build, the weights
        file and the card.

    Raises:
        FinetunedBackboneError: not found, incomplete, or weights that no longer match the
            card's hash (modified after tuning).

    """
    if not is_finetuned(name):
        if weights is None or os.fspath(weights).startswith(PREFIX) or not is_finetuned(weights):
            return None
        name, weights = weights, None  # a preset name with a fine-tuned folder as weights
    text = os.fspath(name)
    if weights is not None:
        folder = Path(weights).expanduser()
        folder = folder.parent if folder.is_file() else folder
    elif text.startswith(PREFIX):
        folder = _find(text[len(PREFIX):])
    else:
        folder = Path(text).expanduser()
    card = read_card(folder)
    if text.startswith(PREFIX) and text[len(PREFIX):] != card["name"]:
        raise FinetunedBackboneError(
            f"{folder} holds the fine-tuned backbone '{card['name']}', not "
            f"'{text[len(PREFIX):]}'.")
    path = (folder / WEIGHTS_FILE).resolve()
    if file_sha256(path) != card["weights_sha256"]:
        raise FinetunedBackboneError(
            f"{path} does not match the sha256 recorded in its card: the weights were "
            "modified after fine-tuning. Fine-tune again or restore the file.")
    base = card["base"]
    known = None
    try:
        known = get_spec(base.get("name", ""))
    except DFLError:
        known = None
    pre = card.get("preprocessing", {})
    spec = BackboneSpec(
        name=PREFIX + card["name"], timm_name=base["timm_name"], weights="file",
        description=f"{base.get('name', base['timm_name'])} fine-tuned on "
                    f"{', '.join(card['classes'])} ({card['created'][:10]})",
        mean=tuple(pre["mean"]) if pre.get("mean") else (known.mean if known else None),
        std=tuple(pre["std"]) if pre.get("std") else (known.std if known else None),
        input_size=pre.get("input_size") or (known.input_size if known else None),
        interpolation=pre.get("interpolation") or (known.interpolation if known else None),
        timm_kwargs=known.kwargs if known else {},
        pooling=known.pooling if known else "default",
        embed_dim=known.embed_dim if known else None,
    )
    return spec, path, card


def list_finetuned(folder: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Fine-tuned backbones in ``folder`` (default :func:`backbone_folder`) and its subfolders.

    Returns:
        One entry per valid folder, sorted by name: ``name`` (load it as
        ``finetuned:<name>``), ``path``, ``base``, ``classes``, ``created`` and the
        validation ``metrics``. Folders with an invalid card are skipped.

    """
    root = Path(folder) if folder is not None else backbone_folder()
    if not root.is_dir():
        return []
    found = []
    for card_path in sorted(root.rglob(CARD_FILE)):
        try:
            card = read_card(card_path.parent)
        except FinetunedBackboneError:
            continue
        found.append({"name": card["name"], "path": str(card_path.parent.resolve()),
                      "base": card["base"].get("name", card["base"]["timm_name"]),
                      "classes": card["classes"], "created": card["created"],
                      "metrics": card.get("validation", {})})
    return sorted(found, key=lambda entry: entry["name"])
