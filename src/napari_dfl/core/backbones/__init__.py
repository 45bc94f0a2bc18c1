"""Frozen pretrained backbones: presets, weight sources, safe loading, devices, fine-tuning.

Layers, leaves first: :mod:`.foundation` (the pathology foundation-model presets, plain
fields) <- :mod:`.registry` (names and specs) <- :mod:`.devices`,
:mod:`.state_dict`, :mod:`.weight_sources`, :mod:`.fusion`, :mod:`.finetuned` <-
:mod:`.builder` (a model with its weights) <- :mod:`.backbone` (the loaded backbone and
:func:`load_backbone`, the one entry point). Importing any of them loads neither torch nor
timm.
"""

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_dfl.core.backbones.backbone import Backbone, load_backbone
    from napari_dfl.core.backbones.registry import (
        DEFAULT_BACKBONE,
        BackboneSpec,
        BackboneUnavailableError,
        available_backbones,
        get_spec,
        register_backbone,
    )

#: Where each public name lives; imported on first use (``napari-dfl --help`` needs a name
#: from the registry, not numpy, which :mod:`.backbone` brings).
_HOMES = {"Backbone": "backbone", "load_backbone": "backbone",
          **dict.fromkeys(["DEFAULT_BACKBONE", "BackboneSpec", "BackboneUnavailableError",
                           "available_backbones", "get_spec", "register_backbone"],
                          "registry")}

__all__ = [
    "DEFAULT_BACKBONE",
    "Backbone",
    "BackboneSpec",
    "BackboneUnavailableError",
    "available_backbones",
    "get_spec",
    "load_backbone",
    "register_backbone",
]


def __getattr__(name: str):
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
