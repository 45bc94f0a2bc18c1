"""Frozen pretrained backbones: presets, weight sources, safe loading, devices, fine-tuning.

Layers, leaves first: :mod:`.registry` (names and specs) <- :mod:`.devices`,
:mod:`.state_dict`, :mod:`.weight_sources`, :mod:`.fusion`, :mod:`.finetuned` <-
:mod:`.builder` (a model with its weights) <- :mod:`.backbone` (the loaded backbone and
:func:`load_backbone`, the one entry point). Importing any of them loads neither torch nor
timm.
"""

from napari_dfl.core.backbones.backbone import Backbone, load_backbone
from napari_dfl.core.backbones.registry import (
    DEFAULT_BACKBONE,
    BackboneSpec,
    BackboneUnavailableError,
    available_backbones,
    get_spec,
    register_backbone,
)

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
