"""Writing a fine-tuned backbone folder: ``model.safetensors`` and ``backbone_card.json``.

The folder is then a backbone like any other (read by :mod:`napari_dfl.core.backbones.finetuned`).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from dataclasses import asdict
from pathlib import Path

from napari_dfl._version import __version__
from napari_dfl.core.backbones.finetuned import CARD_FILE, CARD_FORMAT, WEIGHTS_FILE
from napari_dfl.core.finetune.training import FinetuneConfig, FinetuneError, FinetuneResult
from napari_dfl.core.util.atomic import atomic_folder, to_json
from napari_dfl.core.util.hashing import file_sha256

__all__ = ["save_finetuned"]


def save_finetuned(result: FinetuneResult, out: str | os.PathLike, *, name: str | None = None,
                   config: FinetuneConfig | None = None, dataset: dict | None = None) -> Path:
    """Write a fine-tuned backbone folder: ``model.safetensors`` and ``backbone_card.json``.

    The folder is written whole and swapped in (:func:`~napari_dfl.core.util.atomic.atomic_folder`).

    Args:
        result: the output of :func:`finetune`.
        out: the folder to write (created; a fine-tuned backbone already there is replaced).
        name: the name to load it by (``finetuned:<name>``); default: the folder's name.
        config: the settings used (recorded in the card).
        dataset: what it was tuned on (sources, patch size and mpp), for the card.

    Returns:
        The folder.

    Raises:
        FinetuneError: ``out`` is a file, or a non-empty folder that is not a fine-tuned
            backbone (never overwritten).

    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / CARD_FILE).exists())):
        raise FinetuneError(f"{out} exists and is not a fine-tuned backbone folder: choose "
                            "another --out.")
    name = name or out.name
    if not name or any(c in name for c in "/\\:") or name.startswith("."):
        raise FinetuneError(f"invalid backbone name {name!r}: use letters, digits, - and _.")
    model = result.backbone.model
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_folder(out) as tmp:
        save_file(state, str(tmp / WEIGHTS_FILE),
                  metadata={"format": "pt", "napari_dfl": CARD_FORMAT})
        card = _card(result, name, file_sha256(tmp / WEIGHTS_FILE), config, dataset)
        (tmp / CARD_FILE).write_text(to_json(card, indent=2), encoding="utf-8")
    return out


def _card(result: FinetuneResult, name: str, sha256: str, config: FinetuneConfig | None,
          dataset: dict | None) -> dict:
    """The backbone card of a fine-tuning result (read by ``core.backbones.finetuned``)."""
    backbone = result.backbone
    return {
        "format": CARD_FORMAT, "version": 1, "name": name,
        "weights_sha256": sha256,
        "base": {k: result.base[k] for k in ("name", "timm_name", "weights_sha256")},
        "preprocessing": {"input_size": int(backbone.input_size),
                          "mean": list(backbone.mean), "std": list(backbone.std),
                          "interpolation": backbone.interpolation},
        "classes": result.summary["classes"],
        "dataset": dataset or {},
        **{k: v for k, v in result.summary.items() if k != "classes"},
        "trainable_parameters": len(result.trainable),
        "config": asdict(config) if config is not None else None,
        "augmentation": "random flips and quarter turns; H&E stain jitter "
                        f"(strength {config.stain if config else FinetuneConfig().stain})",
        "history": [{k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                     for k, v in dataclasses.asdict(h).items()} for h in result.history],
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
